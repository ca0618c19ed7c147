"""A work folder's own MLflow store, and moving or copying the folder.

A work folder keeps its SQLite store in ``<workdir>/mlflow.db`` and its artifacts under
``<workdir>/mlartifacts``. MLflow records artifact locations as absolute paths (the experiment's
location, each run's, each logged model's, each model version's), so a store carried to another
folder still points at the folder it came from: it would read, and write, that folder's artifacts.

Where a folder's store lives is read from the store itself: the folder above the ``mlartifacts`` of
its mmpc experiments. ``check`` refuses a store recorded for another folder; ``relocate`` rewrites
every path under the recorded folder, in every table, to the folder the store is in now, in one
transaction. No marker file: the store is the one record, so it cannot disagree with itself.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

STORE_FILE = "mlflow.db"
ARTIFACTS = "mlartifacts"
FIX = "mmpc relocate --workdir {workdir}"
_EXPERIMENTS = "SELECT artifact_location FROM experiments WHERE name LIKE 'mmpc/%'"
_BUSY_SECONDS = 5.0  # SQLite's wait for another writer, as MLflow's own connections wait


class WorkFolderError(ValueError):
    """A work folder whose store belongs elsewhere, or that cannot be relocated; bad input (exit 2)."""


def store_path(workdir: Path) -> Path:
    return workdir / STORE_FILE


def artifact_uri(workdir: Path) -> str:
    """Where the mmpc experiments of a work folder's store keep their artifacts."""
    return (workdir.resolve() / ARTIFACTS).as_uri()


def _home(location: str | None) -> Path | None:
    """The work folder an experiment's ``file:`` artifact location belongs to, if it is one."""
    parsed = urlparse(location or "")
    if parsed.scheme not in ("file", ""):
        return None
    path = Path(url2pathname(parsed.path))
    return path.parent if path.name == ARTIFACTS and path.is_absolute() else None


def recorded_homes(db: Path) -> set[Path]:
    """The folders the store's mmpc experiments keep their artifacts in; empty for a new store."""
    with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=_BUSY_SECONDS)) as con:
        try:
            rows = con.execute(_EXPERIMENTS).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a store MLflow has not set up yet
                return set()
            raise
    return {home for (location,) in rows if (home := _home(location)) is not None}


def check(workdir: str | Path) -> None:
    """Refuses a work folder whose store records its artifacts in another folder (a copy or a
    move): any command would read and write that other folder's artifacts."""
    workdir = Path(workdir).resolve()
    db = store_path(workdir)
    if not db.is_file():
        return
    elsewhere = sorted(home for home in recorded_homes(db) if home != workdir)
    if elsewhere:
        raise WorkFolderError(
            f"the MLflow store {db} is the work folder {elsewhere[0]}'s (its artifact paths point "
            f"there): {workdir} was copied or moved from it, and using it as it is would read and "
            f"write the artifacts of {elsewhere[0]}. Run `{FIX.format(workdir=workdir)}` once to "
            "point the store at this folder."
        )


def relocate(workdir: str | Path) -> str:
    """Rewrites every path of the store under the folder it was recorded in to ``workdir``, in one
    transaction; returns what was done. Running it again changes nothing."""
    workdir = Path(workdir).resolve()
    db = store_path(workdir)
    if not db.is_file():
        raise WorkFolderError(f"{workdir} holds no MLflow store ({STORE_FILE}): nothing to relocate")
    old = sorted(home for home in recorded_homes(db) if home != workdir)
    if not old:
        return f"{db}: its artifact paths already point into {workdir}; nothing to change"
    if len(old) > 1:
        raise WorkFolderError(
            f"the MLflow store {db} records artifacts in several folders ({', '.join(map(str, old))}); "
            "relocate moves one folder's paths, so this store is not one work folder's"
        )
    counts = _rewrite(db, old[0], workdir)
    where = ", ".join(f"{table} {n}" for table, n in sorted(counts.items()))
    return f"{db}: {sum(counts.values())} stored path(s) moved from {old[0]} to {workdir} ({where})"


def _forms(folder: Path) -> list[str]:
    """How a folder appears in the store: as a path, and percent-encoded inside a ``file:`` URI."""
    encoded = folder.as_uri().removeprefix("file://")
    return [str(folder)] if encoded == str(folder) else [str(folder), encoded]


def _text_columns(con: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if not table.startswith("sqlite_"):
            for column in con.execute(f'PRAGMA table_info("{table}")'):
                yield table, column[1]


def _rewrite(db: Path, old: Path, new: Path) -> dict[str, int]:
    """Every text value of every table holding ``old`` as a whole path component gets ``new``."""
    pairs = dict(zip(_forms(old), _forms(new), strict=True))
    # a path ends where a separator, quote, space or the value does: /work/a is not /work/ab
    pattern = re.compile("(" + "|".join(map(re.escape, pairs)) + r")(?=$|[/\"'\s?#])")
    counts: dict[str, int] = {}
    with closing(sqlite3.connect(db, timeout=_BUSY_SECONDS, isolation_level=None)) as con:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise WorkFolderError(
                f"the MLflow store {db} is in use by another process ({exc}); nothing was changed: run "
                "the same command again once that process is done"
            ) from exc
        try:
            for table, column in list(_text_columns(con)):
                counts[table] = counts.get(table, 0) + _rewrite_column(con, table, column, pattern, pairs)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return {table: n for table, n in counts.items() if n}


def _rewrite_column(
    con: sqlite3.Connection, table: str, column: str, pattern: re.Pattern[str], pairs: dict[str, str]
) -> int:
    where = " OR ".join(f'instr("{column}", ?) > 0' for _ in pairs)
    rows = con.execute(
        f'SELECT rowid, "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\' AND ({where})',
        list(pairs),
    ).fetchall()
    changed = 0
    for rowid, value in rows:
        new_value = pattern.sub(lambda m: pairs[m.group(1)], value)
        if new_value != value:
            con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?', (new_value, rowid))
            changed += 1
    return changed
