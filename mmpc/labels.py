"""Product type codes <-> class indices; saved as JSON beside every model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# The 27 product type codes of the Rakuten France catalog (SIGIR eCom 2020 challenge).
RAKUTEN_CODES: tuple[int, ...] = (
    10,
    40,
    50,
    60,
    1140,
    1160,
    1180,
    1280,
    1281,
    1300,
    1301,
    1302,
    1320,
    1560,
    1920,
    1940,
    2060,
    2220,
    2280,
    2403,
    2462,
    2522,
    2582,
    2583,
    2585,
    2705,
    2905,
)

# The challenge publishes codes only. These short names describe what the products under each code
# are (read off the catalog's own titles); figures and reports show them beside the codes.
RAKUTEN_NAMES: dict[int, str] = {
    10: "used books",
    40: "video games, imports",
    50: "gaming accessories",
    60: "game consoles",
    1140: "figurines, pop culture",
    1160: "trading cards",
    1180: "miniatures, role-play",
    1280: "children's toys",
    1281: "board games",
    1300: "RC models, drones",
    1301: "baby socks, slippers",
    1302: "outdoor toys",
    1320: "childcare",
    1560: "furniture",
    1920: "cushions, home linen",
    1940: "grocery",
    2060: "decoration, lighting",
    2220: "pet supplies",
    2280: "magazines",
    2403: "book and comic lots",
    2462: "used games, consoles",
    2522: "stationery",
    2582: "garden furniture",
    2583: "pool and spa",
    2585: "garden tools",
    2705: "new books",
    2905: "PC games, download",
}


def describe(code: int) -> str:
    """``"2583 pool and spa"``; the bare code for a code without a known name."""
    name = RAKUTEN_NAMES.get(int(code))
    return f"{code} {name}" if name else str(code)


@dataclass(frozen=True)
class LabelMap:
    """An ordered set of product type codes; index i is the model's output i."""

    codes: tuple[int, ...] = RAKUTEN_CODES

    def __post_init__(self) -> None:
        if len(set(self.codes)) != len(self.codes):
            raise ValueError(f"duplicate product type codes in label map: {self.codes}")

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    def index(self, code: int) -> int:
        try:
            return self._lookup[int(code)]
        except KeyError:
            raise KeyError(f"product type code {code} is not in the label set {list(self.codes)}") from None

    def indices(self, codes) -> list[int]:
        return [self.index(c) for c in codes]

    def code(self, index: int) -> int:
        return self.codes[int(index)]

    def __contains__(self, code: object) -> bool:
        try:
            return int(code) in self._lookup  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    @cached_property
    def _lookup(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.codes)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"codes": list(self.codes)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        return cls(tuple(int(c) for c in json.loads(Path(path).read_text())["codes"]))
