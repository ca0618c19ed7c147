"""Level-1 model folders: weights in safetensors, configs and metadata in JSON, no pickles.

Every folder has ``meta.json`` (kind, class codes, architecture, weights digest) and
``model.safetensors``; a text model adds ``backbone/config.json`` and ``tokenizer/``; a fusion
model keeps its head at the top and the frozen level-1 folders it was built on under ``inputs/``;
a TF-IDF model keeps plain arrays (idf, coefficients, calibration) in ``model.safetensors`` and its
vocabularies in JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_model, save_model
from torch import nn

FORMAT_VERSION = 1
META = "meta.json"
WEIGHTS = "model.safetensors"


class ModelFolderError(ValueError):
    """A model folder is missing a file or was written by an incompatible version."""


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_digest(path: Path, recorded: str | None) -> None:
    """Refuses a file whose SHA-256 is not the one recorded when it was written (changed, cut short)."""
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing")
    if not recorded:
        raise ModelFolderError(f"{path}: no SHA-256 is recorded for it, so it cannot be verified")
    actual = file_digest(path)
    if actual != recorded:
        raise ModelFolderError(
            f"{path}: SHA-256 {actual} does not match the recorded {recorded} "
            "(the file was changed or cut short since it was written)"
        )


def _write_meta(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    # Written last, with the weights' digest: a folder with a meta is whole.
    meta = {**meta, "format_version": FORMAT_VERSION, "weights_sha256": file_digest(folder / WEIGHTS)}
    (folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta


def save_weights(folder: Path, module: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the weights, then meta.json with their digest."""
    folder.mkdir(parents=True, exist_ok=True)
    # save_model (not save_file) de-duplicates tied tensors such as shared embeddings.
    save_model(module, str(folder / WEIGHTS))
    return _write_meta(folder, meta)


def save_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """Plain named arrays (a scikit-learn model's fitted state) instead of a module's weights."""
    folder.mkdir(parents=True, exist_ok=True)
    save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / WEIGHTS))
    return _write_meta(folder, meta)


def _checked_weights(folder: Path, sha256: str | None) -> Path:
    """``folder``'s weights file, verified against ``sha256`` (default: meta.json's weights_sha256)."""
    path = Path(folder) / WEIGHTS
    check_digest(path, read_meta(folder).get("weights_sha256") if sha256 is None else sha256)
    return path


def load_arrays(folder: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``folder``, once their file matches its recorded digest."""
    path = _checked_weights(folder, sha256)
    try:
        return load_numpy(str(path))
    except SafetensorError as exc:
        raise ModelFolderError(f"{path}: not a readable safetensors file: {exc}") from exc


def read_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON record; one cut short or garbled is an error naming it."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path}: not readable JSON (cut short or garbled?): {exc}") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: a JSON object was expected, found {type(data).__name__}")
    return data


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not an mmpc model folder: {META} is missing")
    meta = read_json(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{path}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return meta


def load_weights(folder: Path, module: nn.Module, sha256: str | None = None) -> None:
    """Loads ``folder``'s weights into ``module``, once their file matches its recorded digest."""
    path = _checked_weights(folder, sha256)
    try:
        load_model(module, str(path), strict=True)
    except SafetensorError as exc:
        raise ModelFolderError(f"{path}: not a readable safetensors file: {exc}") from exc
    except RuntimeError as exc:
        raise ModelFolderError(f"{path}: weights do not fit the architecture: {exc}") from exc
