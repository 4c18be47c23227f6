"""A time budget for one registration: the moment after which no strategy starts and a running search stops."""

from __future__ import annotations

import math
from time import perf_counter

from .errors import InputError, TimeBudgetExceeded

__all__ = ["Deadline", "check_budget"]


def check_budget(seconds: float | None) -> float | None:
    """``seconds`` as a float, or None (no budget); InputError unless a positive, finite number."""
    if seconds is None:
        return None
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise InputError(f"The time budget must be a number of seconds, not {seconds!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"The time budget must be a positive, finite number of seconds, not {seconds!r}.")
    return value


class Deadline:
    """``seconds`` from now on the monotonic clock (``time.perf_counter``); ``None`` never expires.

    Parameters
    ----------
    seconds : float or None
        The budget; None: no limit.

    Examples
    --------
    >>> Deadline(None).expired()
    False
    >>> Deadline(3600.0).expired()
    False
    """

    __slots__ = ("_start", "seconds")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = check_budget(seconds)
        self._start = perf_counter()

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return perf_counter() - self._start

    def expired(self) -> bool:
        """True once the budget is spent (never without one)."""
        return self.seconds is not None and self.elapsed() >= self.seconds

    def check(self, what: str) -> None:
        """Raise :class:`~autoreg.errors.TimeBudgetExceeded` naming ``what`` when the budget is spent."""
        if self.expired():
            raise TimeBudgetExceeded(f"time_budget: {what} stopped at {self.elapsed():.2f} s, the budget of "
                                     f"{self.seconds:g} s being spent")
