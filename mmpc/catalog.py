"""Rakuten-layout catalog reader: validation, stable productid-hash splits, content fingerprints.

Layout (the SIGIR eCom 2020 challenge's own)::

    <root>/X_train_update.csv     unnamed index, designation, description, productid, imageid
    <root>/Y_train_CVw08PX.csv    unnamed index, prdtypecode        (joined to X on the index)
    <root>/images/image_train/image_<imageid>_product_<productid>.jpg   (or <root>/image_train/)
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from mmpc import images as imaging
from mmpc import photo_checks
from mmpc.labels import LabelMap
from mmpc.text import CONTROL, clean, join

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "stack", "test")
IMAGE_MODES = ("required", "optional")
X_COLUMNS = ("designation", "description", "productid", "imageid")
Y_COLUMNS = ("prdtypecode",)
FRAME_COLUMNS = (
    "productid",
    "imageid",
    "designation",
    "description",
    "text",
    "prdtypecode",
    "label",
    "image_path",
    "has_image",
    "split",
)
_SHOWN = 5  # offending rows quoted per problem
_LOGGED = 20  # dropped rows named in the log line (all of them go to dropped_rows.csv)
# Each photo is decoded at a reduced scale to check it: a JPEG decodes straight to 1/8 of its size,
# reading its whole compressed stream (a file cut short fails) at about half a full decode's cost.
# Photos that decoded are remembered (mmpc/photo_checks.py): a catalog read again decodes only what changed.
_CHECK_SIDE = 32


class CatalogError(ValueError):
    """A catalog that cannot be used as is; the message lists every problem found.

    ``problems`` maps each problem kind to its count of offending rows (0 for file-level problems).
    """

    def __init__(self, message: str, problems: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of the four splits and the salt of the productid hash."""

    train: float = 0.75
    valid: float = 0.05
    stack: float = 0.10
    test: float = 0.10
    salt: str = "mmpc"

    def __post_init__(self) -> None:
        fractions = self.fractions
        if any(not np.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            named = ", ".join(f"{s}={f}" for s, f in zip(SPLITS, fractions, strict=True))
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {named} (sum {sum(fractions)})")

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, s)) for s in SPLITS)

    def assign(self, productids: pd.Series) -> pd.Series:
        """The split of each productid: a pure function of (salt, productid), so it never depends
        on the other rows and a growing catalog never moves a product from one split to another."""
        u = (
            np.array(
                [int(hashlib.sha256(f"{self.salt}:{p}".encode()).hexdigest()[:16], 16) for p in productids],
                dtype=np.float64,
            )
            / 2.0**64
        )
        edges = np.cumsum(self.fractions)
        # First split whose cumulative edge exceeds u; zero-width splits are never picked. When the
        # fractions sum to just under 1, u above the last edge falls to the last non-empty split.
        last = max(i for i, f in enumerate(self.fractions) if f > 0)
        index = np.minimum(np.searchsorted(edges, u, side="right"), last)
        return pd.Series(np.asarray(SPLITS, dtype=object)[index], index=productids.index, name="split")

    def to_dict(self) -> dict:
        return asdict(self)


def _empty_dropped() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c == "row" else str) for c in ("row", "productid", "reason", "detail")}
    )


@dataclass(eq=False)  # identity equality: comparing DataFrames field by field is ambiguous
class Catalog:
    """A validated catalog: one row per product (see ``FRAME_COLUMNS``), with its split."""

    name: str
    root: Path
    frame: pd.DataFrame = field(repr=False)
    labels: LabelMap
    splits: SplitSpec
    # Rows left out by read_catalog(drop_invalid=True): row (CSV index), productid (raw), reason and
    # the offending value or detail.
    dropped: pd.DataFrame = field(default_factory=_empty_dropped, repr=False)
    _row_digests: pd.Series | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.frame)

    def split(self, *names: str) -> pd.DataFrame:
        """Rows of the named splits, as a copy with a fresh index."""
        mask = self.frame["split"].isin(_check_splits(names))
        return self.frame.loc[mask].reset_index(drop=True)

    def row_digests(self) -> pd.Series:
        """sha256 per row over its content and its image bytes; computed once, then cached."""
        if self._row_digests is None:
            f = self.frame
            image_digests = [_file_sha256(p) if p else "" for p in f["image_path"]]
            parts = zip(
                f["productid"].astype(str),
                f["imageid"].astype(str),
                f["designation"],
                f["description"],
                f["prdtypecode"].astype(str),
                image_digests,
                strict=True,
            )
            self._row_digests = pd.Series(
                [hashlib.sha256("\x1f".join(p).encode()).hexdigest() for p in parts],
                index=f.index,
            )
        return self._row_digests

    def fingerprint(self, splits: Iterable[str] | None = None) -> str:
        """Hex sha256 of the sorted row digests of the given splits (all rows when None): it depends
        on content only, never on row order."""
        digests = self.row_digests()
        if splits is not None:
            names = (splits,) if isinstance(splits, str) else tuple(splits)
            digests = digests[self.frame["split"].isin(_check_splits(names)).to_numpy()]
        return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()

    def class_counts(self) -> pd.DataFrame:
        """Products per code (every code of the label set, in its order) and split, plus a total."""
        counts = pd.crosstab(self.frame["prdtypecode"], self.frame["split"])
        counts = counts.reindex(index=list(self.labels.codes), columns=list(SPLITS), fill_value=0)
        counts = counts.astype("int64")
        counts["total"] = counts.sum(axis=1)
        counts.index.name, counts.columns.name = "prdtypecode", None
        return counts

    def write_manifest(self, out_dir: str | Path) -> dict[str, Path]:
        """Write split_manifest.csv, class_counts.csv and fingerprint.json into out_dir, and
        dropped_rows.csv when rows were left out."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "manifest": out / "split_manifest.csv",
            "class_counts": out / "class_counts.csv",
            "fingerprint": out / "fingerprint.json",
        }
        self.frame[["productid", "imageid", "prdtypecode", "split"]].to_csv(paths["manifest"], index=False)
        self.class_counts().to_csv(paths["class_counts"])
        if len(self.dropped):
            paths["dropped"] = out / "dropped_rows.csv"
            self.dropped.to_csv(paths["dropped"], index=False)
        sizes = self.frame["split"].value_counts()
        summary = {
            "catalog": self.name,
            "rows": len(self.frame),
            "dropped_rows": len(self.dropped),
            "fingerprint": self.fingerprint(),
            "splits": {
                s: {"rows": int(sizes.get(s, 0)), "fingerprint": self.fingerprint([s])} for s in SPLITS
            },
            "split_spec": self.splits.to_dict(),
        }
        paths["fingerprint"].write_text(json.dumps(summary, indent=1))
        return paths


def _check_splits(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in SPLITS]
    if unknown or not names:
        raise ValueError(f"unknown split name(s) {unknown or names}; choose from {list(SPLITS)}")
    return names


def _file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def find_image_dir(root: Path) -> Path | None:
    """root/images/image_train (the challenge's layout), else root/image_train, else None."""
    for candidate in (Path(root) / "images" / "image_train", Path(root) / "image_train"):
        if candidate.is_dir():
            return candidate
    return None


def image_filename(imageid: int, productid: int) -> str:
    return f"image_{imageid}_product_{productid}.jpg"


@dataclass
class _Problem:
    kind: str  # short name, also the drop reason
    rows: pd.DataFrame | None = None  # row, productid, value; None for file-level problems
    detail: str = ""

    def format(self) -> str:
        if self.rows is None:
            return f"- {self.kind}{self.detail}"
        lines = [f"- {self.kind}: {len(self.rows)} row(s){self.detail}"]
        for row, pid, value in self.rows.head(_SHOWN).itertuples(index=False):
            shown = str(value) if len(str(value)) <= 80 else str(value)[:77] + "..."
            lines.append(f"    row {row}: productid {pid!r}, value {shown!r}")
        if len(self.rows) > _SHOWN:
            lines.append(f"    ... and {len(self.rows) - _SHOWN} more")
        return "\n".join(lines)


def _offending(df: pd.DataFrame, mask, values: pd.Series | None = None) -> pd.DataFrame:
    """row (CSV index), productid and the offending value of the rows under a positional mask."""
    mask = np.asarray(mask, dtype=bool)
    values = df["productid"] if values is None else values
    return pd.DataFrame(
        {
            "row": df.index[mask],
            "productid": df["productid"].to_numpy()[mask],
            "value": np.asarray(values, dtype=object)[mask],
        }
    )


def _raise(root: Path, problems: list[_Problem]) -> NoReturn:
    header = f"invalid catalog {root}: {len(problems)} problem(s)"
    if all(p.rows is not None for p in problems):
        header += " (set catalog.drop_invalid=true to leave these rows out instead)"
    message = "\n".join([header] + [p.format() for p in problems])
    raise CatalogError(message, {p.kind: 0 if p.rows is None else len(p.rows) for p in problems})


def _looks_like_record(line: str, width: int) -> str | None:
    """The row index of a physical line that parses on its own as a full record, else None."""
    fields = next(csv.reader([line]), [])
    return fields[0].strip() if len(fields) == width and fields[0].strip().isdigit() else None


def _recording(lines: Iterable[str], raw: list[str]) -> Iterator[str]:
    """The lines, each also kept in ``raw``: the physical lines of the record being read."""
    for line in lines:
        raw.append(line)
        yield line


def _record_problems(
    record: list[str], lines: list[str], where: str, width: int, pid_at: int | None
) -> list[tuple[str, str, str]]:
    """(row, productid, what is wrong) for a record that swallowed others or has the wrong width."""
    row = record[0].strip()
    swallowed = [r for line in lines[1:] if (r := _looks_like_record(line, width)) is not None]
    if swallowed:
        opened = (row, "", f"{where}: a quote left open swallows rows {swallowed}")
        return [opened] + [(r, "", f"swallowed by the open quote of row {row}") for r in swallowed]
    if len(record) != width:
        pid = record[pid_at] if pid_at is not None and pid_at < len(record) else ""
        pid = pid if pid.strip().isdigit() else ""
        return [(row, pid, f"{where}: {len(record)} field(s), expected {width}")]
    return []


def _split_records(
    reader, raw: list[str], header: list[str]
) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
    """The records after the header: (well-formed ones, problems of the broken ones)."""
    width = len(header)
    pid_at = header.index("productid") if "productid" in header else None
    records: list[list[str]] = []
    broken: list[tuple[str, str, str]] = []
    last = reader.line_num
    for record in reader:
        first, last = last + 1, reader.line_num
        lines = raw[:]
        raw.clear()
        if not record:  # a blank line
            continue
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        problems = _record_problems(record, lines, where, width, pid_at)
        if problems:
            broken += problems
        else:
            records.append(record)
    return records, broken


def _scan_csv(path: Path) -> tuple[list[str], list[list[str]], list[tuple[str, str, str]]]:
    """(header, well-formed records, broken records as (row, productid, what is wrong)).

    The csv module (not pandas) so that a record with the wrong number of fields, or one that
    swallowed the lines of the next records through a quote left open, is reported as that record's
    problem with its lines, instead of failing the whole file, being padded with empty fields or
    being read as one long title.
    """
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long descriptions are fine here
    raw: list[str] = []  # the physical lines of the record being read
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(_recording(fh, raw))
        header = next(reader, None)
        if header is None:
            raise csv.Error("the file is empty")
        raw.clear()
        records, broken = _split_records(reader, raw, header)
    return header, records, broken


def _read_csv(path: Path, columns: tuple[str, ...], problems: list[_Problem]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(_Problem(f"file missing: {path}"))
        return None
    try:
        # Everything stays text: an empty description stays "" (never "nan"), and ids are validated
        # here rather than silently turned into floats.
        header, records, broken = _scan_csv(path)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(_Problem(f"malformed CSV {path}", detail=f": {exc}".rstrip()))
        return None
    missing = [c for c in columns if c not in header[1:]]
    if missing:
        problems.append(_Problem(f"missing column(s) {missing} in {path}", detail=f" (found {header[1:]})"))
        return None
    df = pd.DataFrame(records, columns=header, dtype=object)
    # Object labels: hashing them is far faster than pyarrow's isin for the index matching below.
    df.index = pd.Index(df.iloc[:, 0].str.strip(), dtype=object)
    df = df[list(columns)]
    if broken:
        rows = pd.DataFrame(broken, columns=["row", "productid", "value"])
        problems.append(
            _Problem(
                "malformed CSV record",
                rows,
                detail=f" in {path.name} (a quote left open or an unquoted comma?)",
            )
        )
        df.attrs["broken"] = set(rows["row"])  # _pair does not report these rows a second time
    return df


def _pair(
    x: pd.DataFrame, y: pd.DataFrame, x_name: str, y_name: str, problems: list[_Problem]
) -> pd.DataFrame:
    """Join X and Y on their index column; an ambiguous or unpaired index leaves a row unusable."""
    x_broken, y_broken = x.attrs.get("broken", set()), y.attrs.get("broken", set())
    y = y.assign(productid="")  # Y knows no productid: blank in reports
    x_dup, y_dup = x.index.duplicated(keep=False), y.index.duplicated(keep=False)
    if x_dup.any():
        problems.append(_Problem(f"duplicate row index in {x_name}", _offending(x, x_dup)))
    if y_dup.any():
        problems.append(_Problem(f"duplicate row index in {y_name}", _offending(y, y_dup, y["prdtypecode"])))
    x, y = x[~x_dup], y[~y_dup]
    # A row whose record in the other file is malformed is reported once, as malformed.
    x_only = ~x.index.isin(y.index) & ~x.index.isin(list(y_broken))
    y_only = ~y.index.isin(x.index) & ~y.index.isin(list(x_broken))
    if x_only.any():
        problems.append(_Problem(f"row index in {x_name} but not in {y_name}", _offending(x, x_only)))
    if y_only.any():
        problems.append(
            _Problem(f"row index in {y_name} but not in {x_name}", _offending(y, y_only, y["prdtypecode"]))
        )
    return x.join(y.drop(columns="productid"), how="inner")


@dataclass
class _Parsed:
    """Each row's validated values, aligned on the catalog's row index."""

    pid: pd.Series  # int64, -1 where not an integer
    iid: pd.Series
    code: pd.Series
    names: pd.Series  # the image file name the row should have
    has_image: pd.Series

    def subset(self, keep: np.ndarray) -> _Parsed:
        return _Parsed(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})


def _check_ids(
    df: pd.DataFrame, problems: list[_Problem]
) -> tuple[pd.Series, pd.Series, dict[str, pd.Series]]:
    """productid and imageid as int64 (-1 where not an integer), and which rows hold an integer."""
    digits: dict[str, pd.Series] = {}
    for col in ("productid", "imageid"):
        value = df[col].str.strip()
        digits[col] = value.str.fullmatch(r"\d{1,18}")  # fits int64
        if not digits[col].all():
            problems.append(_Problem(f"{col} not an integer", _offending(df, ~digits[col], df[col])))
    pid = df["productid"].str.strip().where(digits["productid"], "-1").astype("int64")
    iid = df["imageid"].str.strip().where(digits["imageid"], "-1").astype("int64")
    return pid, iid, digits


def _check_repeats(df: pd.DataFrame, pid: pd.Series, pid_ok: pd.Series, problems: list[_Problem]) -> None:
    """Repeats of a productid (first occurrence kept): the split and the manifest key on productid."""
    valid_pid = pid[pid_ok]
    repeat = pd.Series(False, index=df.index)
    repeat[pid_ok] = valid_pid.duplicated(keep="first").to_numpy()
    if repeat.any():
        first_row = pd.Series(valid_pid.index, index=valid_pid.to_numpy())
        first_row = first_row[~first_row.index.duplicated()]
        where = "first at row " + pid.map(first_row).astype(str)
        problems.append(_Problem("duplicate productid", _offending(df, repeat, where)))


def _check_titles(df: pd.DataFrame, problems: list[_Problem]) -> None:
    # Only a designation that is blank or holds tags, entities or control characters can clean to
    # nothing; cleaning just those keeps 85k rows fast.
    title = df["designation"]
    suspect = title.str.contains(r"[<&]") | title.str.contains(CONTROL) | (title.str.strip() == "")
    no_title = pd.Series(
        [bad and not clean(t) for t, bad in zip(title, suspect, strict=True)], index=df.index
    )
    if no_title.any():
        problems.append(_Problem("empty or missing designation", _offending(df, no_title, df["designation"])))


def _check_labels(df: pd.DataFrame, labels: LabelMap, problems: list[_Problem]) -> pd.Series:
    """Each row's code as int64 (-1 where not an integer)."""
    code_text = df["prdtypecode"].str.strip()
    code_ok = code_text.str.fullmatch(r"\d{1,18}")
    code = code_text.where(code_ok, "-1").astype("int64")
    label_ok = code_ok & code.isin(list(labels.codes))
    if not label_ok.all():
        problems.append(
            _Problem(
                "label missing or not in the label set",
                _offending(df, ~label_ok, df["prdtypecode"]),
                detail=f" (label set: {list(labels.codes)})",
            )
        )
    return code


def _check_images(
    df: pd.DataFrame,
    root: Path,
    pid: pd.Series,
    iid: pd.Series,
    ids_ok: pd.Series,
    images: str,
    problems: list[_Problem],
) -> tuple[Path | None, pd.Series, pd.Series]:
    """(image folder, each row's image file name, whether that file is there)."""
    # One directory listing instead of a stat per product keeps 85k rows fast.
    image_dir = find_image_dir(root)
    present = {e.name for e in os.scandir(image_dir) if e.is_file()} if image_dir else set()
    names = "image_" + iid.astype(str) + "_product_" + pid.astype(str) + ".jpg"
    has_image = ids_ok & names.isin(present)
    no_image = ids_ok & ~has_image
    if images == "required" and no_image.any():
        looked = image_dir or root / "images" / "image_train"
        problems.append(
            _Problem(
                "image file missing",
                _offending(df, no_image, names),
                detail=f" of {len(df)} have no image file in {looked} ("
                f'pass images="optional" to allow products without an image)',
            )
        )
    return image_dir, names, has_image


def _unreadable(path: str) -> str:
    """Why a photo cannot be used for training ('' when it decodes as training decodes it)."""
    try:
        imaging.load_file(path, max_side=_CHECK_SIDE)
    except (OSError, imaging.ImageDecodeError) as exc:
        return str(exc) or type(exc).__name__
    return ""


def _check_decodes(
    df: pd.DataFrame, root: Path, image_dir: Path, names: pd.Series, has_image: pd.Series, problems: list
) -> None:
    """Every present photo decodes; one that does not is a row problem, and when none decodes the
    catalog is refused outright (a folder of empty or foreign files, which drop_invalid must not hide)."""
    present = np.flatnonzero(has_image.to_numpy(dtype=bool))
    files = [str(image_dir / n) for n in names.iloc[present]]
    why = np.asarray(
        photo_checks.unreadable(image_dir, names.iloc[present].tolist(), _unreadable), dtype=object
    )
    bad = why != ""
    if not bad.any():
        return
    mask = np.zeros(len(df), dtype=bool)
    mask[present[bad]] = True
    reasons = np.full(len(df), "", dtype=object)
    reasons[present[bad]] = [
        f"{Path(f).name}: {w}" for f, w in zip(np.asarray(files)[bad], why[bad], strict=True)
    ]
    if bad.all():
        first = int(present[0])
        raise CatalogError(
            f"invalid catalog {root}: none of its {len(files)} image files decodes, e.g. {files[0]}: "
            f"{why[0]} (row {df.index[first]}, productid {df['productid'].iloc[first]!r})",
            {"image file unreadable": len(files)},
        )
    problems.append(_Problem("image file unreadable", _offending(df, mask, reasons)))


def _validate(
    df: pd.DataFrame, root: Path, labels: LabelMap, images: str, problems: list[_Problem]
) -> tuple[_Parsed, Path | None]:
    """Every row-level check, in the order the report lists them; returns the parsed values."""
    pid, iid, digits = _check_ids(df, problems)
    _check_repeats(df, pid, digits["productid"], problems)
    _check_titles(df, problems)
    code = _check_labels(df, labels, problems)
    ids_ok = digits["productid"] & digits["imageid"]
    image_dir, names, has_image = _check_images(df, root, pid, iid, ids_ok, images, problems)
    if image_dir is not None:
        _check_decodes(df, root, image_dir, names, has_image, problems)
    return _Parsed(pid, iid, code, names, has_image), image_dir


def _dropped_rows(problems: list[_Problem]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every offending row with its reason, one line per row: row, productid, reason, detail)."""
    records = pd.concat([p.rows.assign(reason=p.kind) for p in problems if p.rows is not None])
    records["value"] = records["value"].astype(str)
    dropped = (
        records.groupby(["row", "productid"], sort=False)[["reason", "value"]]
        .agg("; ".join)
        .reset_index()
        .rename(columns={"value": "detail"})
    )
    if dropped["row"].str.fullmatch(r"\d+").all():
        dropped["row"] = dropped["row"].astype("int64")
    return records, dropped


def _leave_out(
    root: Path, df: pd.DataFrame, parsed: _Parsed, problems: list[_Problem]
) -> tuple[pd.DataFrame, _Parsed, pd.DataFrame]:
    """The rows without the offending ones, and the list of those (logged, then kept by the catalog)."""
    records, dropped = _dropped_rows(problems)
    keep = ~df.index.isin(records["row"])
    _log_dropped(root, dropped)
    return df[keep], parsed.subset(keep), dropped


def _log_dropped(root: Path, dropped: pd.DataFrame) -> None:
    listed = "; ".join(
        f"row {r} (productid {p!r}): {why} ({detail})"
        for r, p, why, detail in dropped.head(_LOGGED).itertuples(index=False)
    )
    more = f"; ... and {len(dropped) - _LOGGED} more" if len(dropped) > _LOGGED else ""
    logger.warning(
        "dropped %d invalid row(s) from %s (%s): %s%s",
        len(dropped),
        root,
        dropped["reason"].value_counts().to_dict(),
        listed,
        more,
    )


def _frame(
    df: pd.DataFrame, parsed: _Parsed, image_dir: Path | None, labels: LabelMap, splits: SplitSpec
) -> pd.DataFrame:
    """The catalog's frame (FRAME_COLUMNS), one row per valid product, with its split."""
    index = {c: i for i, c in enumerate(labels.codes)}
    rows = df.reset_index(drop=True)
    paths = np.where(parsed.has_image, f"{image_dir}{os.sep}" + parsed.names, "")
    frame = pd.DataFrame(
        {
            "productid": parsed.pid.to_numpy(),
            "imageid": parsed.iid.to_numpy(),
            "designation": rows["designation"],
            "description": rows["description"],
            "text": pd.Series(
                [join(d, s) for d, s in zip(rows["designation"], rows["description"], strict=True)], dtype=str
            ),
            "prdtypecode": parsed.code.to_numpy(),
            "label": parsed.code.map(index).to_numpy(dtype="int64"),
            "image_path": pd.Series(paths, dtype=str),
            "has_image": parsed.has_image.to_numpy(dtype=bool),
        }
    )
    frame["split"] = splits.assign(frame["productid"]).astype(str)
    return frame


def read_catalog(
    root: str | Path,
    *,
    labels: LabelMap = LabelMap(),
    splits: SplitSpec = SplitSpec(),
    images: str = "required",
    x_name: str = "X_train_update.csv",
    y_name: str = "Y_train_CVw08PX.csv",
    drop_invalid: bool = False,
) -> Catalog:
    """Read and validate a Rakuten-layout catalog.

    Every problem is collected and reported in one CatalogError; with ``drop_invalid`` the offending
    rows are dropped instead and recorded in ``Catalog.dropped`` (file-level problems still raise).
    ``images="optional"`` allows products without an image file (``has_image`` False).
    """
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
    root = Path(root).resolve()
    problems: list[_Problem] = []
    x = _read_csv(root / x_name, X_COLUMNS, problems)
    y = _read_csv(root / y_name, Y_COLUMNS, problems)
    if x is None or y is None:
        _raise(root, problems)

    df = _pair(x, y, x_name, y_name, problems)
    parsed, image_dir = _validate(df, root, labels, images, problems)
    dropped = _empty_dropped()
    if problems and not drop_invalid:
        _raise(root, problems)
    if problems:
        df, parsed, dropped = _leave_out(root, df, parsed, problems)
    if df.empty:
        raise CatalogError(f"invalid catalog {root}: no valid products")

    frame = _frame(df, parsed, image_dir, labels, splits)
    logger.info(
        "read catalog %s: %d products (%d with an image), splits %s",
        root.name,
        len(frame),
        int(frame["has_image"].sum()),
        frame["split"].value_counts().to_dict(),
    )
    return Catalog(name=root.name, root=root, frame=frame, labels=labels, splits=splits, dropped=dropped)
