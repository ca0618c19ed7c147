"""The output folder of a scoring job: Parquet parts written atomically, resumable, with a manifest
written last. A reader trusts the folder only once ``_manifest.json`` is there.

    <out>/_job.json            the job: model version, input fingerprint, chunk size, MLflow run
    <out>/part-00000.parquet   one chunk of the input each, in input order
    <out>/_manifest.json       written when every part is: parts, rows, counts
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmpc.scoring.errors import ScoringError

JOB = "_job.json"
MANIFEST = "_manifest.json"


class OutputError(ScoringError):
    """The output folder holds another job's scores; the message says which and what to do."""


@dataclass(frozen=True)
class Job:
    model: str  # registered model name
    version: str  # the version the alias or number resolved to
    input: str  # the location as given
    fingerprint: str  # content digest of the input
    chunk_rows: int
    top_k: int
    engine: str = "local"

    def same_work(self, other: dict[str, Any]) -> bool:
        return all(other.get(k) == v for k, v in asdict(self).items())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Parts:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:05d}.parquet"

    def manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def start(self, job: Job, run_id: str | None) -> str | None:
        """Claim the folder for ``job``; returns the MLflow run of an interrupted run of the same job.

        A folder holding another job's parts is refused rather than mixed: parts of two inputs or two
        model versions must never be read as one result."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOB
        if path.is_file():
            previous = json.loads(path.read_text())
            if not job.same_work(previous):
                raise OutputError(
                    f"{self.folder} holds the scores of another job ({previous.get('model')} "
                    f"v{previous.get('version')} on {previous.get('input')}); write to another folder"
                )
            return previous.get("run_id")
        _write_json(path, {**asdict(job), "run_id": run_id})
        return None

    def set_run(self, job: Job, run_id: str) -> None:
        _write_json(self.folder / JOB, {**asdict(job), "run_id": run_id})

    def done(self, index: int) -> bool:
        return self.part(index).is_file()

    def write(self, index: int, frame: pd.DataFrame) -> None:
        """Written under a hidden name and renamed: a part is whole or absent."""
        final = self.part(index)
        tmp = final.with_name(f".{final.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, final)

    def adopt(self, files: list[Path]) -> None:
        """Another writer's Parquet files (Spark's), moved in as this folder's parts, in order."""
        for index, path in enumerate(files):
            os.replace(path, self.part(index))

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        parts = sorted(p.name for p in self.folder.glob("part-*.parquet"))
        manifest = {**summary, "parts": parts}
        _write_json(self.folder / MANIFEST, manifest)
        return manifest

    def read(self) -> pd.DataFrame:
        """Every part, in input order (for tests and small outputs)."""
        return pd.concat(
            [pd.read_parquet(self.folder / n) for n in self.manifest()["parts"]], ignore_index=True
        )
