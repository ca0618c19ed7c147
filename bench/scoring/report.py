"""The scoring benchmark's report: a table per part, the targets, and the last-line JSON."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

KEEP = ("rows", "wall_s", "products_s", "engine_s", "engine_products_s", "maxrss_mb", "tree_peak_mb",
        "tree_processes", "process_wall_s")  # fmt: skip


def _pick(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: figures[k] for k in KEEP if k in figures}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _row(label: str, f: dict[str, Any]) -> str:
    tree = f"{f['tree_peak_mb']:.0f} ({f['tree_processes']})"
    return (
        f"| {label:<30} | {f['rows']:>9,} | {f['products_s']:>10.1f} | {f['wall_s']:>8.1f} | "
        f"{f['maxrss_mb']:>11.0f} | {tree:>24} |"
    )


def tables(results: dict[str, Any]) -> str:
    head = (
        "| run                            |      rows | products/s |   wall s | peak RSS MB "
        "| tree peak MB (processes) |"
    )
    lines = [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]
    for size, parts in results["engines"].items():
        lines.append(_row(f"local engine, {size:,} photos", parts["local"]))
        if "spark" in parts:
            lines.append(_row(f"Spark engine, {size:,} photos", parts["spark"]))
    for size, f in results["tfidf"].items():
        lines.append(_row(f"TF-IDF alone, {size:,} texts", f))
    for clients, f in results.get("http", {}).items():
        lines.append(f"| HTTP, 1 product/request, {clients} client(s): {f['products_s']:.1f} products/s "
                     f"({f['products']} products in {f['seconds']:.1f} s)")  # fmt: skip
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets compare: the largest catalog, the best HTTP client count."""
    largest = results["engines"][max(results["engines"])]
    local = largest["local"]["products_s"]
    spark = largest.get("spark", {}).get("products_s")
    http = max((f["products_s"] for f in results.get("http", {}).values()), default=None)
    small, large = min(results["tfidf"]), max(results["tfidf"])
    mem_small, mem_large = results["tfidf"][small]["maxrss_mb"], results["tfidf"][large]["maxrss_mb"]
    compares = [p["compare"] for p in results["engines"].values() if "compare" in p]
    identical = all(c["identical"] for c in compares) if compares else None
    growth = mem_large / mem_small - 1
    return {
        "local_products_s": local,
        "spark_products_s": spark,
        "http_products_s": http,
        "local_over_http": _ratio(local, http),
        "spark_over_local": _ratio(spark, local),
        "tfidf_peak_rss_mb": {str(small): mem_small, str(large): mem_large},
        "tfidf_memory_growth": growth,
        "spark_identical": identical,
        "spark_max_probability_diff": max(
            (c.get("max_probability_diff", 0.0) for c in compares), default=None
        ),
        "targets": {
            "local_at_least_3x_http": None if http is None else local >= 3 * http,
            "tfidf_memory_within_10pct": growth <= 0.10,
            "spark_within_2x_local": None if spark is None else spark * 2 >= local,
            "spark_identical": identical,
        },
    }


def figures(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    engines = {
        str(n): {k: (_pick(v) if k != "compare" else v) for k, v in parts.items()}
        for n, parts in results["engines"].items()
    }
    return {
        **headline(results),
        "sizes": args.sizes,
        "tfidf_sizes": args.tfidf_sizes,
        "http_sample": args.http_sample,
        "http_clients": args.http_clients,
        "spark_master": None if args.no_spark else args.spark_master,
        "image_size": args.image_size,
        "engines": engines,
        "http": {str(k): v for k, v in results.get("http", {}).items()},
        "tfidf": {str(n): _pick(f) for n, f in results["tfidf"].items()},
        "catalog_disk_mb": {str(n): mb for n, mb in results["inputs"].items()},
        "ensemble_version": results["ensemble_version"],
        "build_s": results["build_s"],
        "total_s": results["total_s"],
        "load": results["load"],
        "cpus": os.cpu_count(),
    }


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    out = figures(args, results)
    print(tables(results))
    print()
    for name, met in out["targets"].items():
        print(f"target {name}: {'-' if met is None else 'met' if met else 'NOT met'}")
    print(
        f"local/HTTP {out['local_over_http'] or 0:.2f}x, Spark/local {out['spark_over_local'] or 0:.2f}x, "
        f"TF-IDF peak RSS growth {out['tfidf_memory_growth'] * 100:+.1f} % "
        f"({args.tfidf_sizes[0]:,} -> {args.tfidf_sizes[-1]:,}), total {out['total_s']:.0f} s"
    )
    print(json.dumps(out))
