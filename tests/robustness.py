"""The robustness table of ``docs/robustness.md``, produced by the tests that exercise each case.

A test declares its case with ``case(area, name, expected, *values)`` (a ``pytest.param`` carrying a
``robustness`` mark) or with ``@pytest.mark.robustness(area, name, expected)``, and reports what it
saw through the ``observed`` fixture: a short status (``400``, ``exit 2``, ``pipeline FAILED``) and
the detail behind it. Only passing tests count. Each row is kept as fields (area, case, expected,
status, detail) in ``docs/robustness.json``; the page's table is rendered from that record.
``tests/test_robustness_docs.py``, run last, checks field by field that every observed row is in the
record as observed, that the record holds no row for a case that no longer exists, and that the page
is the record's rendering; ``MMPC_WRITE_DOCS=1`` rewrites the record and the page instead. The
serving limits table of the same page comes from ``mmpc.serving_input.Limits``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC = DOCS / "robustness.md"
RECORD = DOCS / "robustness.json"
WRITE_ENV = "MMPC_WRITE_DOCS"
# Areas in the order the page lists them; an area not named here comes after, alphabetically.
AREAS = ("serving", "training", "catalog", "security")
TABLE = ("robustness-table", ("area", "case", "expected", "result"))
LIMITS = ("serving-limits", ("limit", "default", "environment variable"))
CELL_LIMIT = 200  # characters shown in one cell of the page
_RESULT = pytest.StashKey[tuple[str, str]]()
_OBSERVED = pytest.StashKey[dict[tuple[str, str], "Row"]]()
_DECLARED = pytest.StashKey[dict[tuple[str, str], int]]()


@dataclass(frozen=True)
class Row:
    """One case of the table: what it is, what it should do, and what it did (status and detail)."""

    area: str
    case: str
    expected: str
    status: str
    detail: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.area, self.case)

    @property
    def result(self) -> str:
        """The page's result cell: the status, then the detail."""
        return f"{self.status}: {self.detail}" if self.detail else self.status

    def cells(self) -> tuple[str, ...]:
        return (self.area, self.case, self.expected, self.result)

    def differences(self, other: Row) -> list[str]:
        """``field: documented ..., observed ...`` for each field that differs from ``other``."""
        return [
            f"{f.name}: documented {getattr(self, f.name)!r}, observed {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def case(area: str, name: str, expected: str, *values, id: str | None = None):
    """A parametrised robustness case: ``values`` are the test's parameters."""
    slug = id or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return pytest.param(*values, id=slug, marks=pytest.mark.robustness(area, name, expected))


def one_line(text: str, limit: int = CELL_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@pytest.fixture
def observed(request) -> Callable[..., None]:
    """Report what the case did: a short status, and the message or the answer behind it."""
    if request.node.get_closest_marker("robustness") is None:
        raise RuntimeError(f"{request.node.nodeid}: `observed` needs a robustness mark")

    def record(status: str, detail: str = "") -> None:
        status = one_line(status)
        # The detail is cut so that the whole result cell fits the page's limit.
        room = CELL_LIMIT - len(status) - len(": ")
        request.node.stash[_RESULT] = (status, one_line(detail, max(room, 1)) if detail else "")

    return record


def _declared_row(item: pytest.Item) -> tuple[str, str, str] | None:
    mark = item.get_closest_marker("robustness")
    return tuple(mark.args) if mark is not None else None  # type: ignore[return-value]


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection: a deselected case still exists
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    declared = config.stash.setdefault(_DECLARED, {})
    for item in items:
        row = _declared_row(item)
        if row is not None:
            declared.setdefault((row[0], row[1]), len(declared))
    # The table check runs after every case it checks.
    items.sort(key=lambda item: item.get_closest_marker("robustness_docs") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    row = _declared_row(item)
    if report.when == "call" and report.passed and row is not None and _RESULT in item.stash:
        area, name, expected = row
        status, detail = item.stash[_RESULT]
        item.config.stash.setdefault(_OBSERVED, {})[(area, name)] = Row(area, name, expected, status, detail)


# --- the record -------------------------------------------------------------------------------------


def read_record(path: Path = RECORD) -> list[Row]:
    """The rows kept in ``docs/robustness.json``, in the page's order."""
    return [Row(**entry) for entry in json.loads(path.read_text(encoding="utf-8"))]


def write_record(rows: list[Row], path: Path = RECORD) -> None:
    text = json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def area_rank(area: str) -> tuple[int, str]:
    return (AREAS.index(area), "") if area in AREAS else (len(AREAS), area)


def merged(
    documented: list[Row], observed: dict[tuple[str, str], Row], declared: dict[tuple[str, str], int]
) -> list[Row]:
    """The table after this run: observed rows replace theirs, rows of cases that no longer exist
    (their area ran, they did not) go, rows of areas that did not run stay."""
    areas = {area for area, _ in declared}
    kept = {r.key: r for r in documented if r.key in declared or r.area not in areas}
    kept.update(observed)
    position = {r.key: i for i, r in enumerate(documented)}

    def order(row: Row) -> tuple:
        return (area_rank(row.area), declared.get(row.key, len(declared) + position.get(row.key, 0)))

    return sorted(kept.values(), key=order)


def session_state(config: pytest.Config) -> tuple[dict, dict]:
    return config.stash.get(_OBSERVED, {}), config.stash.get(_DECLARED, {})


def write_requested() -> bool:
    return os.environ.get(WRITE_ENV, "") not in ("", "0")


# --- the page ---------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return one_line(text).replace("|", "\\|")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: generated by the tests, see tests/robustness.py -->", f"<!-- {name}: end -->"


def _section(page: str, name: str) -> tuple[int, int]:
    start, end = _markers(name)
    if start not in page or end not in page:
        raise ValueError(f"{DOC}: the markers of the {name!r} table are missing")
    return page.index(start) + len(start), page.index(end)


def render(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def replace(page: str, name: str, body: str) -> str:
    start, end = _section(page, name)
    return page[:start] + body + page[end:]


def render_page(page: str, rows: list[Row], limits: list[tuple[str, ...]]) -> str:
    """``page`` with both generated tables written from ``rows`` and the serving ``limits``."""
    page = replace(page, LIMITS[0], render(LIMITS[1], limits))
    return replace(page, TABLE[0], render(TABLE[1], [r.cells() for r in rows]))
