"""What the benchmark scripts that register drawn pairs share: one pair's outcome, and running many on workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def registered(case: Any, config: Any, **register_kwargs: Any) -> dict[str, Any]:
    """Register ``case`` (a :class:`bench._cases.Case`) with ``config`` (and ``register_kwargs``, what a user would
    say: ``pixel_size``, ``mirrored``) on one thread, and judge it.

    Returns
    -------
    dict
        ``verdict``; ``error`` (mean grid error in fixed px, None when ``failed``); ``solved`` (within the case's
        tolerance); ``wrong_ok`` (``ok`` and not solved); ``cpu`` (process seconds); ``mirror_checked`` and
        ``mirror_doubt`` (whether the mirror check ran, and doubted the result).
    """
    import warnings

    import cv2

    import autoreg

    from ._cases import grid_error

    cv2.setNumThreads(1)
    warnings.simplefilter("ignore")
    started = time.process_time()
    result = autoreg.register(case.fixed, case.moving, config=config, rng=0, cube_step=None, **register_kwargs)
    cpu = time.process_time() - started
    error = None
    if result.verdict.level != "failed" and result.fit is not None:
        error = grid_error(case, result.fit.to_fixed)
    solved = error is not None and error <= case.tolerance_px
    return {"verdict": result.verdict.level, "error": error, "solved": solved,
            "wrong_ok": result.verdict.level == "ok" and not solved, "cpu": cpu,
            "mirror_checked": bool(result.extra.get("mirror_check", {}).get("ran")),
            "mirror_doubt": any(reason.startswith("mirror_doubt:") for reason in result.verdict.reasons)}


def run_all(job: Callable[[Any], dict[str, Any]], specs: Sequence[Any], workers: int) -> list[dict[str, Any]]:
    """``job`` of every spec, in order, on ``workers`` processes (1: in this one)."""
    if workers <= 1:
        return [job(spec) for spec in specs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(job, specs))
