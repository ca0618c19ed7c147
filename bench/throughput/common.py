"""The report's lines: printed as they come, with rates to three significant digits."""

from __future__ import annotations

import math


def say(line: str = "") -> None:
    print(line, flush=True)


def rate(value: float, width: int = 8) -> str:
    """Three significant digits, no exponent: 0.0712, 4.59, 1234."""
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:{width}.{digits}f}"
