"""The markdown a person reads in the Prefect UI after a ``retrain``: scores, decision, links."""

from __future__ import annotations

from typing import Any

from mmpc import tracking


def summary_markdown(
    catalog: dict[str, Any], results: dict[str, dict], published: dict[str, Any], parent_run_id: str
) -> str:
    champion = published.get("champion_version")
    lines = [
        f"# mmpc retrain: {catalog['name']}",
        "",
        f"{catalog['rows']} products, fingerprint `{catalog['fingerprint'][:12]}`, "
        f"splits {catalog['splits']}."
        + (
            f" {catalog['dropped_rows']} invalid row(s) left out (see the runs' `data/dropped_rows.csv`)."
            if catalog.get("dropped_rows")
            else ""
        ),
        "",
        "| model | version | test macro-F1 | this run | MLflow run |",
        "|---|---|---|---|---|",
    ]
    for name, res in results.items():
        score = res["metrics"].get("test_macro_f1", float("nan"))
        done = "reused (inputs unchanged)" if res.get("reused") else "trained"
        lines.append(
            f"| {name} | {tracking.version_link(name, res['version'])} | {score:.4f} | {done} "
            f"| {tracking.run_link(res['run_id'])} |"
        )
    stack_done = "reused (inputs unchanged)" if published.get("reused") else "published"
    lines.append(
        f"| **stack** | {tracking.version_link('ensemble', published['version'])} "
        f"| **{published['scores']['stack']:.4f}** | {stack_done} "
        f"| {tracking.run_link(published['run_id'])} |"
    )
    decision = "promoted to @champion" if published["promoted"] else "not promoted"
    if ev := published.get("evaluation"):
        lines += [
            "",
            f"**Evaluation** of v{published['version']} on test ({tracking.run_link(ev['run_id'])}): "
            f"macro-F1 {ev['macro_f1']:.4f}, weighted-F1 {ev['weighted_f1']:.4f}; worst confusions: "
            + ("; ".join(ev["worst"]) or "none")
            + ".",
        ]
    lines += [
        "",
        f"**Decision:** mmpc-ensemble v{published['version']} {decision}: {published['reason']}.",
        "",
        f"**Current champion:** {tracking.version_link('ensemble', champion) if champion else 'none'}.",
        "",
        f"Pipeline {tracking.run_link(parent_run_id)} in `{tracking.mlflow.get_tracking_uri()}`."
        + (f" Earlier retrains beside it: {md}." if (md := tracking.runs_list_md(parent_run_id)) else ""),
    ]
    return "\n".join(lines)
