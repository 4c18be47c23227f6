"""Batch registration: many moving scans against one reference, the first scan, or each predecessor.

Work runs on local processes (``concurrent.futures``) or on an existing Dask distributed cluster; no scheduler
is written here. Each item's result is written atomically as ``<NNN>_<name>.json`` in the output directory —
its presence marks the item complete, so a re-run skips it (``force`` redoes it). One bad item never stops the
batch: its row says ``error`` with the message. Every item uses the same seed, so the matrices do not depend on
the number of workers.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io as stdio
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .vocabulary import EXIT_CODES
from .errors import InputError

__all__ = ["BatchItem", "expand_inputs", "plan", "register_item", "run_batch", "summary_row", "SUMMARY_FIELDS",
           "worst_exit_code", "default_workers"]

SUMMARY_FIELDS = ("index", "moving", "fixed", "verdict", "reasons", "model", "source", "matrix", "n_inliers",
                  "rmse_px", "pearson", "pearson_before", "overlap_fraction", "uncertainty_px", "seconds", "peak_rss_mib",
                  "output")
_EXIT = {**EXIT_CODES, "error": EXIT_CODES["failed"]}


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One registration of the batch: ``moving`` onto ``fixed`` (both input specs)."""

    index: int
    moving: str
    fixed: str
    output: str


def _expand_hdf5(path: str, pattern: str) -> list[str]:
    """Every 2-D image dataset of an HDF5 file whose path matches ``pattern`` (shell-style)."""
    import h5py

    from .usid import ANCILLARIES, open_hdf5

    found: list[str] = []
    with open_hdf5(Path(path)) as f:
        def visit(name: str, obj: Any) -> None:
            ancillary = name.rsplit("/", 1)[-1] in ANCILLARIES
            if isinstance(obj, h5py.Dataset) and not ancillary and fnmatch.fnmatch("/" + name, pattern) and obj.ndim == 2:
                is_usid = "Position_Indices" in obj.attrs
                if (is_usid and obj.shape[1] == 1) or (not is_usid and min(obj.shape) > 1):
                    found.append(f"{path}::/{name}")

        f.visititems(visit)
    return sorted(found)


def expand_inputs(specs: Iterable[str]) -> list[str]:
    """Expand globs (``scans/*.tif``) and HDF5 dataset patterns (``file.h5::/Measurement_*/Channel_000/*``).

    Raises
    ------
    InputError
        A pattern that matches nothing.
    """
    out: list[str] = []
    for spec in specs:
        path, sep, dataset = spec.partition("::")
        paths = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        if not paths:
            raise InputError(f"No file matches {path!r}.")
        for p in paths:
            if sep and glob.has_magic(dataset):
                matched = _expand_hdf5(p, dataset)
                if not matched:
                    raise InputError(f"No 2-D dataset of {p} matches {dataset!r}.")
                out.extend(matched)
            else:
                out.append(f"{p}{sep}{dataset}")
    return out


def _safe_name(spec: str) -> str:
    stem = spec.replace("::", "_")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")
    return stem[-80:] or "item"


def plan(movings: list[str], *, reference: str | None, against: str, out_dir: Path) -> list[BatchItem]:
    """The registrations to run.

    Parameters
    ----------
    movings : list of str
        Expanded input specs, in order.
    reference : str or None
        The fixed image for ``against="reference"``.
    against : {"reference", "first", "predecessor"}
        Register every scan onto ``reference``, onto the first scan, or onto the scan before it (drift series;
        the first scan is then the reference and is not registered).
    out_dir : Path
        Where each item's JSON goes.
    """
    if against == "reference":
        if reference is None:
            raise InputError("--against reference needs --reference FIXED.")
        pairs = [(m, reference) for m in movings]
    elif against == "first":
        if len(movings) < 2:
            raise InputError("--against first needs at least two scans.")
        pairs = [(m, movings[0]) for m in movings[1:]]
    elif against == "predecessor":
        if len(movings) < 2:
            raise InputError("--against predecessor needs at least two scans.")
        pairs = list(zip(movings[1:], movings[:-1]))
    else:
        raise InputError(f"Unknown --against {against!r}; use reference, first or predecessor.")
    return [BatchItem(index=i, moving=m, fixed=f, output=str(out_dir / f"{i:04d}_{_safe_name(m)}.json"))
            for i, (m, f) in enumerate(pairs)]


def register_item(item: BatchItem, options: dict[str, Any]) -> dict[str, Any]:
    """Register one item and write its JSON atomically; never raises (errors become an ``error`` row)."""
    import cv2

    from .io import write_json
    from .pipeline import register

    if options.get("single_thread", False):
        cv2.setNumThreads(1)
    started = time.perf_counter()
    try:
        result = register(item.fixed, item.moving, model=options.get("model", "auto"), rng=options.get("seed", 0),
                          cube_step=None)
        payload = result.to_dict()
    except InputError as err:
        payload = {"verdict": "error", "reasons": [f"input_error: {err}"], "model": None, "matrix": None}
    except Exception as err:  # noqa: BLE001 - one bad item must never stop the batch; the row says what it was
        payload = {"verdict": "error", "reasons": [f"unexpected_error: {type(err).__name__}: {err}"],
                   "model": None, "matrix": None}
    import resource

    payload.update(moving=item.moving, fixed=item.fixed, index=item.index,
                   seconds=round(time.perf_counter() - started, 4),
                   peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    write_json(item.output, payload)
    return payload


def summary_row(item: BatchItem, payload: dict[str, Any]) -> dict[str, Any]:
    """One row of the summary table (CSV and JSON lines)."""
    row = {key: payload.get(key) for key in SUMMARY_FIELDS}
    row.update(index=item.index, moving=item.moving, fixed=item.fixed, output=item.output)
    return row


def worst_exit_code(rows: Iterable[dict[str, Any]]) -> int:
    """0 when every row is ok, 3 when the worst is low_confidence, 4 when any failed or errored."""
    return max((_EXIT.get(str(r.get("verdict")), 4) for r in rows), default=0)


def _load_done(item: BatchItem) -> dict[str, Any] | None:
    try:
        payload = json.loads(Path(item.output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if payload.get("moving") != item.moving or payload.get("fixed") != item.fixed:
        return None  # a different pair wrote this name: redo
    return payload


def _write_summaries(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    from ._atomic import atomic_path

    buffer = stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    with atomic_path(out_dir / "summary.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    with atomic_path(out_dir / "summary.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _single_threaded_worker() -> None:
    """One item per core: pin OpenCV and the BLAS/OpenMP pools of a worker process to one thread."""
    import cv2

    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        pass


def _submitter(workers: int, scheduler: str | None) -> tuple[Callable[..., Future], Callable[[], None]]:
    if scheduler is not None:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise InputError(f"Cannot reach the Dask scheduler at {scheduler}: {err}.") from err
        return (lambda fn, *args: client.submit(fn, *args, pure=False)), client.close
    import multiprocessing

    # Forking a process whose OpenCV thread pool is running can deadlock: workers fork from a clean server
    # process that has imported the pipeline once (fast start-up, no inherited threads).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["autoreg.pipeline", "autoreg.io", "cv2", "skimage.transform"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_threaded_worker)
    return pool.submit, lambda: pool.shutdown(wait=True, cancel_futures=True)


def run_batch(items: list[BatchItem], *, out_dir: Path, workers: int = 1, scheduler: str | None = None,
              force: bool = False, options: dict[str, Any] | None = None,
              progress: Callable[[int, int, dict[str, Any]], None] | None = None,
              pool: bool = False) -> list[dict[str, Any]]:
    """Run (or resume) a batch; write ``summary.csv`` and ``summary.jsonl``; return the rows in item order.

    Parameters
    ----------
    items : list of BatchItem
    out_dir : Path
    workers : int
        Local worker processes (1 runs in this process). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask distributed scheduler.
    force : bool
        Redo items whose outputs exist.
    options : dict
        ``model`` and ``seed`` for every item.
    progress : callable, optional
        Called with (done, total, payload) as items finish.
    pool : bool
        Use a process pool even for one worker (benchmarks compare like with like).
    """
    options = dict(options or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    payloads: dict[int, dict[str, Any]] = {}
    todo = []
    for item in items:
        done = None if force else _load_done(item)
        if done is not None:
            payloads[item.index] = {**done, "resumed": True}
        else:
            todo.append(item)
    total, finished = len(items), len(payloads)
    if progress:
        for payload in payloads.values():
            progress(finished, total, payload)

    def finish(item: BatchItem, payload: dict[str, Any]) -> None:
        nonlocal finished
        payloads[item.index] = payload
        finished += 1
        if progress:
            progress(finished, total, payload)

    if todo and (workers > 1 or pool or scheduler is not None):
        submit, close = _submitter(workers, scheduler)
        try:
            futures = {submit(register_item, item, options): item for item in todo}
            from concurrent.futures import as_completed as local_completed

            completed: Iterable[Any]
            if scheduler is not None:
                from distributed import as_completed as dask_completed

                completed = dask_completed(list(futures))
            else:
                completed = local_completed(futures)
            for future in completed:
                item = futures[future]
                try:
                    payload = future.result()
                except Exception as err:  # noqa: BLE001 - a worker died: that item errs, the batch goes on
                    payload = {"verdict": "error", "reasons": [f"worker_error: {type(err).__name__}: {err}"],
                               "moving": item.moving, "fixed": item.fixed, "index": item.index}
                finish(item, payload)
        finally:
            close()
    else:
        for item in todo:
            finish(item, register_item(item, options))
    rows = [summary_row(item, payloads[item.index]) for item in items]
    _write_summaries(out_dir, rows)
    return rows


def default_workers() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)

