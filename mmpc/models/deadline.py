"""The per-request deadline that inference checks between batches (and the serving input between
image decodes).

The scoring server answers 504 when a request runs past its timeout, but the thread doing the work is
not stopped by that answer, so the work itself looks at the clock. The deadline lives in a context
variable: it belongs to the request's thread (``asyncio.to_thread`` copies the context), and code run
outside a server (batch scoring, training) has none, where ``check_deadline`` does nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Monotonic seconds at which the current request's work must stop; None outside a request.
_END: ContextVar[float | None] = ContextVar("mmpc_deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The request ran past its deadline; its work stops here."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Work inside the block has ``seconds`` from now (None: no deadline)."""
    token = _END.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _END.reset(token)


def deadline_left() -> float | None:
    """Seconds left (negative once past); None without a deadline."""
    end = _END.get()
    return None if end is None else end - time.monotonic()


def deadline_passed() -> bool:
    left = deadline_left()
    return left is not None and left <= 0


def check_deadline(where: str) -> None:
    """Raise DeadlineExceeded when the deadline has passed; ``where`` says what was stopped."""
    if deadline_passed():
        raise DeadlineExceeded(f"the request ran past its deadline: stopped {where}")
