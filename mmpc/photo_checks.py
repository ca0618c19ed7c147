"""Which catalog photos decode, remembered per file so a catalog read again decodes only what changed.

A retrain reads its catalog at every step (the check, each model's training, the stack, the
evaluation), and every read checks that each photo decodes: on a full catalog of 85,000 photos that is
about a minute of decoding per read on two cores. A photo that decoded is remembered by its name, size
and modification time (nanoseconds) in one small JSON file per image folder under the cache folder
(``MMPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmpc``, else ``~/.cache/mmpc``); a photo rewritten,
truncated or replaced changes its size or time and is decoded again. Photos that failed are never
remembered, so they are checked at every read. The cache is only an accelerator: an unreadable or
unwritable cache folder means every photo is decoded, as without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)
CACHE_ENV = "MMPC_CACHE_DIR"
THREADS = min(8, os.cpu_count() or 1)  # Pillow decodes without the GIL


def cache_dir() -> Path:
    if explicit := os.environ.get(CACHE_ENV):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmpc"


def _cache_file(image_dir: Path) -> Path:
    key = hashlib.sha256(str(image_dir.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "photo-checks" / f"{key}.json"


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load(file: Path, image_dir: Path) -> dict[str, list[int]]:
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(record, dict) and record.get("folder") == str(image_dir.resolve())
    return record.get("decoded", {}) if ok else {}


def _save(file: Path, image_dir: Path, decoded: dict[str, list[int]]) -> None:
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"folder": str(image_dir.resolve()), "decoded": decoded}))
        os.replace(tmp, file)  # whole or not at all: a concurrent reader sees the old or the new
    except OSError as exc:
        log.debug("photo check cache %s not written: %s", file, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def unreadable(image_dir: Path, names: list[str], why: Callable[[str], str]) -> list[str]:
    """For each photo name under ``image_dir``: why it cannot be used ('' when it decodes).
    ``why(path)`` decodes one photo; only photos new or changed since they last decoded are passed."""
    file = _cache_file(image_dir)
    decoded = _load(file, image_dir)
    stamps = [_stamp(image_dir / n) for n in names]
    todo = [i for i, (n, s) in enumerate(zip(names, stamps, strict=True)) if s is None or decoded.get(n) != s]
    with ThreadPoolExecutor(THREADS) as pool:
        found = list(pool.map(why, [str(image_dir / names[i]) for i in todo], chunksize=64))
    out = [""] * len(names)
    for i, reason in zip(todo, found, strict=True):
        out[i] = reason
        if not reason and stamps[i] is not None:
            decoded[names[i]] = stamps[i]
        else:
            decoded.pop(names[i], None)
    if todo:
        _save(file, image_dir, decoded)
    return out
