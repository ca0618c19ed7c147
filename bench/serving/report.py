"""The serving benchmark's report: the summary table, the stage timings, and the last-line JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


@dataclass
class Results:
    inproc: dict
    http: dict[str, dict]
    paper: dict
    stages: dict[str, float]
    profile: str
    built: float  # seconds to build the store (0 when reused)
    total: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at the start and the end
    labels: dict[str, object] = field(default_factory=dict)  # the settings the rows name


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("measure", "ensemble", "naive", "ensemble/naive")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "| " + " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in rows)])


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _row(measure: str, ens: float | None, nai: float | None, digits: int = 1, inverse: bool = False) -> tuple:
    better = ratio(nai, ens) if inverse else ratio(ens, nai)
    return (measure, num(ens, digits), num(nai, digits), num(better, 2))


def http_rows(r: Results) -> list[tuple]:
    ens, nai, t1 = r.http.get("ensemble", {}), r.http.get("naive", {}), r.http.get("ensemble-t1", {})
    rows = []
    if ens:
        clients, batch = r.labels["clients"], r.labels["http_batch"]
        rows.append(
            _row(
                f"HTTP, products/s ({clients} clients, batches of {batch})",
                ens["products_s"],
                nai.get("products_s"),
            )
        )
        rows.append(
            _row(
                "HTTP, CPU ms per product (servers + client)",
                ens["cpu_ms_per_product"],
                nai.get("cpu_ms_per_product"),
                2,
                inverse=True,
            )
        )
        rows += [
            _row(f"HTTP, 1 product, {q} ms", ens[q], nai.get(q), inverse=True) for q in ("p50", "p90", "p99")
        ]
    if t1:
        rows += [
            ("HTTP, MMPC_TORCH_THREADS=1: products/s", num(t1["products_s"]), "-", "-"),
            (
                "HTTP, MMPC_TORCH_THREADS=1: 1 product p50 / p99 ms",
                f"{t1['p50']:.1f} / {t1['p99']:.1f}",
                "-",
                "-",
            ),
        ]
    return rows


def speed_rows(r: Results) -> list[tuple]:
    """(measure, ensemble, naive, ensemble's advantage) rows of the summary table."""
    rows = [
        _row(
            f"in process, products/s (batches of {r.labels['batch']})",
            r.inproc["ensemble"],
            r.inproc["naive"],
        )
    ]
    rows += http_rows(r)
    if r.paper:
        measure = f"paper size, in process, products/s (batches of {r.labels['paper_batch']})"
        rows.append(_row(measure, r.paper["ensemble"], r.paper["naive"], 2))
    return rows


def figures(r: Results) -> dict:
    ens, nai, t1 = r.http.get("ensemble", {}), r.http.get("naive", {}), r.http.get("ensemble-t1", {})
    out = {
        "inprocess_ensemble_products_s": r.inproc["ensemble"],
        "inprocess_naive_products_s": r.inproc["naive"],
        "ratio": ratio(r.inproc["ensemble"], r.inproc["naive"]),
        "http_ensemble_products_s": ens.get("products_s"),
        "http_naive_products_s": nai.get("products_s"),
        "http_ratio": ratio(ens.get("products_s"), nai.get("products_s")),
        "p50_ms": ens.get("p50"),
        "p99_ms": ens.get("p99"),
        "http_ensemble_cpu_ms_per_product": ens.get("cpu_ms_per_product"),
        "http_naive_cpu_ms_per_product": nai.get("cpu_ms_per_product"),
        "naive_p50_ms": nai.get("p50"),
        "naive_p99_ms": nai.get("p99"),
        "threads1_http_products_s": t1.get("products_s"),
        "threads1_p50_ms": t1.get("p50"),
        "threads1_p99_ms": t1.get("p99"),
        "paper_size_ensemble_products_s": r.paper.get("ensemble"),
        "paper_size_naive_products_s": r.paper.get("naive"),
        "paper_size_ratio": ratio(r.paper.get("ensemble"), r.paper.get("naive")),
        "agreement": r.inproc["agreement"],
        "torch_threads": r.inproc["threads"],
        "build_s": r.built,
        "total_s": r.total,
    }
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
    return out | {"load_avg": [round(x, 2) for x in r.load]}


def notes(r: Results) -> list[str]:
    lines = [
        "(last column: how many times better the ensemble is; CPU and latency: naive / ensemble)",
        f"\nensemble and naive agree on {r.inproc['agreement']:.1%} of a batch's predicted codes",
        f"torch intra-op threads in process: {r.inproc['threads']:.0f} (MMPC_TORCH_THREADS, default 1)",
        f"models built in {r.built:.0f} s; whole run {r.total:.0f} s; 1-min load average "
        f"{r.load[0]:.1f} at the start, {r.load[1]:.1f} at the end, on {os.cpu_count()} CPU(s) "
        "(this run counts, far above: others)",
    ]
    if r.http and "naive" not in r.http:
        lines.append("naive over HTTP skipped (--no-naive-http)")
    if "naive" in r.http:
        lines.append(
            "naive over HTTP: one server per level-1 model, called in turn; the booster runs in the client"
        )
    if r.paper:
        p = r.paper
        lines.append(
            f"paper size: {p['products']:.0f} timed products per side (a short run on 2 CPU cores), "
            f"models built in {p['build_s']:.0f} s, parameters (millions) {p['params_m']}, "
            f"median {p['median_tokens']:.0f} tokens per product, torch threads {p['threads']:.0f}"
        )
    return lines


def report(r: Results) -> None:
    print(table(speed_rows(r)))
    print("\n".join(notes(r)))
    print("\nsingle-product request in process, median ms per stage:")
    width = max((len(k) for k in r.stages), default=0)
    for name, ms in r.stages.items():
        print(f"  {name.ljust(width)}  {ms:8.2f}")
    print("\ncProfile, single-product pyfunc predict (top by own time):")
    print(r.profile)
    print(json.dumps(figures(r)))
