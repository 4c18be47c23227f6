"""Batch registration: many moving scans against one reference, the first scan, or each predecessor.

Work runs on local processes (``concurrent.futures``) or on an existing Dask distributed cluster; no scheduler
is written here. Each item's result is written atomically as ``<NNNN>_<name>.json`` in the output directory with
its *resume key*: a hash of both inputs' identity (resolved path, size, modification time and a SHA-256 of what
is read: the file, or the HDF5 dataset with its position ancillaries), the model, the seed and every other
option, the whole :class:`~autoreg.config.RegistrationConfig` and the autoreg version. A re-run skips an item
only when its JSON holds the same key, is not an ``error`` row, and the side outputs asked for (warped image,
report) exist; anything else is recomputed (``force`` redoes everything). One bad item never stops the batch:
its row says ``error`` with the message. Every item uses the same seed, so the matrices do not depend on the
number of workers.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import io as stdio
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .vocabulary import EXIT_CODES
from .errors import InputError

__all__ = ["BatchItem", "expand_inputs", "plan", "prior_options", "register_item", "run_batch", "summary_row",
           "SUMMARY_FIELDS", "worst_exit_code", "default_workers", "input_identity", "resume_key"]

SUMMARY_FIELDS = ("index", "moving", "fixed", "verdict", "reasons", "model", "source", "matrix", "n_inliers",
                  "rmse_px", "pearson", "pearson_before", "overlap_fraction", "uncertainty_px", "seconds", "peak_rss_mib",
                  "output", "warped", "report", "resumed")
_EXIT = {**EXIT_CODES, "error": EXIT_CODES["failed"]}


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One registration of the batch: ``moving`` onto ``fixed`` (both input specs)."""

    index: int
    moving: str
    fixed: str
    output: str
    key: str = ""
    warped: str | None = None
    report: str | None = None


def _match_path(name: str, pattern: str) -> bool:
    """Shell-style match of an HDF5 path, one level per ``/`` as in a file glob (``*`` never crosses a ``/``).

    Examples
    --------
    >>> _match_path("M/C/Image", "/M/C/*"), _match_path("M/C/Image-Registration_000/Registered_Image", "/M/C/*")
    (True, False)
    """
    names, patterns = name.strip("/").split("/"), pattern.strip("/").split("/")
    return len(names) == len(patterns) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, patterns))


def _expand_hdf5(path: str, pattern: str) -> list[str]:
    """Every 2-D image dataset of an HDF5 file whose path matches ``pattern`` (shell-style, level by level)."""
    import h5py

    from .usid import ANCILLARIES, open_hdf5

    found: list[str] = []
    with open_hdf5(Path(path)) as f:
        def visit(name: str, obj: Any) -> None:
            ancillary = name.rsplit("/", 1)[-1] in ANCILLARIES
            if isinstance(obj, h5py.Dataset) and not ancillary and _match_path(name, pattern) and obj.ndim == 2:
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


_HASH_CHUNK = 1 << 22


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_dataset(path: Path, dataset: str) -> str:
    """SHA-256 of what registration reads from an HDF5 dataset: its values, shape and dtype, and for a USID main
    dataset its position indices and values (the grid and the calibration)."""
    import h5py
    import numpy as np

    from .usid import get_dataset, open_hdf5

    digest = hashlib.sha256()
    with open_hdf5(path) as f:
        dset = get_dataset(f, path, dataset)
        parts = [dset]
        for key in ("Position_Indices", "Position_Values"):
            ref = dset.attrs.get(key)
            if isinstance(ref, h5py.Reference) and ref:
                parts.append(f[ref])
        for part in parts:
            digest.update(f"{part.shape}{part.dtype}".encode())
            if part.shape:
                digest.update(np.ascontiguousarray(part[()]).tobytes())
    return digest.hexdigest()


def input_identity(spec: str) -> dict[str, Any]:
    """What identifies an input for resuming: resolved path, size, modification time, and a SHA-256 of what is
    read (the whole file; for ``FILE.h5::/dataset`` the dataset and its position ancillaries).

    Never raises: an input that cannot be read is identified by its error, so its item is run (and errs).
    """
    path_text, _, dataset = spec.partition("::")
    path = Path(path_text)
    try:
        stat = path.stat()
        content = _hash_dataset(path, dataset) if dataset else _hash_file(path)
    except (OSError, InputError, KeyError, ValueError, TypeError) as err:
        return {"spec": spec, "unreadable": f"{type(err).__name__}: {err}"}
    return {"spec": spec, "path": str(path.resolve()), "dataset": dataset or None, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "sha256": content}


def resume_key(moving: dict[str, Any], fixed: dict[str, Any], options: dict[str, Any]) -> str:
    """SHA-256 of both inputs' identities, every option, the whole configuration and the autoreg version."""
    from ._version import __version__
    from .config import RegistrationConfig

    config = options.get("config") or RegistrationConfig()
    result_options = {k: v for k, v in options.items() if k not in ("config", "single_thread", "warped_dir",
                                                                    "report_dir")}
    record = {"moving": moving, "fixed": fixed, "options": result_options, "config": asdict(config),
              "autoreg": __version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def with_keys(items: list[BatchItem], options: dict[str, Any]) -> list[BatchItem]:
    """The items with their resume keys (each input hashed once) and their side-output paths."""
    identities: dict[str, dict[str, Any]] = {}

    def identity(spec: str) -> dict[str, Any]:
        if spec not in identities:
            identities[spec] = input_identity(spec)
        return identities[spec]

    out = []
    for item in items:
        stem = Path(item.output).stem
        warped = str(Path(options["warped_dir"]) / f"{stem}.tif") if options.get("warped_dir") else None
        report = str(Path(options["report_dir"]) / f"{stem}.png") if options.get("report_dir") else None
        out.append(replace(item, key=resume_key(identity(item.moving), identity(item.fixed), options), warped=warped,
                           report=report))
    return out


def _side_outputs(item: BatchItem, result: Any, fixed: Any, moving: Any) -> dict[str, Any]:
    """Write the item's warped image and report when asked; return their paths for the row."""
    from .io import write_image
    from .report import save_report_png

    written: dict[str, Any] = {"warped": None, "report": None}
    if item.warped and result.verdict.level != "failed" and result.warped is not None:
        fixed_cal = result.fixed_calibration
        written["warped"] = str(write_image(item.warped, result.warped, pixel_size_xy=fixed_cal.pixel_size_xy,
                                            units=fixed_cal.units))
    if item.report:
        written["report"] = str(save_report_png(result, fixed.data, moving.data, item.report))
    return written


def prior_options(*, scale: float | None = None, pixel_size: tuple[Any, Any] | None = None,
                  mirrored: bool | None = None) -> dict[str, Any]:
    """What the user knows about every pair, as batch options: only what was given, so that a batch run without
    them keeps the resume keys it had before they existed.

    Parameters
    ----------
    scale, pixel_size, mirrored
        As :func:`autoreg.pipeline.register` takes them.

    Examples
    --------
    >>> prior_options(pixel_size=(0.5, (4.0, 8.0)), mirrored=None)
    {'pixel_size': [0.5, [4.0, 8.0]]}
    """
    from .pipeline import user_pixel_sizes

    sizes = user_pixel_sizes(pixel_size)  # checked; kept as given (a number stays a number: the same resume key)
    kept = None if sizes is None else [[float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)
                                       for v in pixel_size]
    given = {"scale": scale, "pixel_size": kept, "mirrored": mirrored}
    return {key: value for key, value in given.items() if value is not None}


def register_item(item: BatchItem, options: dict[str, Any]) -> dict[str, Any]:
    """Register one item and write its JSON (and side outputs) atomically; never raises (errors become an
    ``error`` row)."""
    import cv2

    from .io import load_image, write_json
    from .pipeline import register

    if options.get("single_thread", False):
        cv2.setNumThreads(1)
    started = time.perf_counter()
    try:
        config = options.get("config")
        fixed = load_image(item.fixed, max_pixels=config.max_pixels if config else None)
        moving = load_image(item.moving, max_pixels=config.max_pixels if config else None)
        result = register(fixed, moving, model=options.get("model", "auto"), rng=options.get("seed", 0),
                          config=config, cube_step=None, scale=options.get("scale"),
                          pixel_size=options.get("pixel_size"),
                          mirrored=options.get("mirrored"))
        payload = result.to_dict()
        payload.update(_side_outputs(item, result, fixed, moving))
    except InputError as err:
        payload = {"verdict": "error", "reasons": [f"input_error: {err}"], "model": None, "matrix": None}
    except Exception as err:  # noqa: BLE001 - one bad item must never stop the batch; the row says what it was
        payload = {"verdict": "error", "reasons": [f"unexpected_error: {type(err).__name__}: {err}"],
                   "model": None, "matrix": None}
    import resource

    payload.update(moving=item.moving, fixed=item.fixed, index=item.index, resume_key=item.key,
                   seconds=round(time.perf_counter() - started, 4),
                   peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    write_json(item.output, payload)
    return payload


def summary_row(item: BatchItem, payload: dict[str, Any]) -> dict[str, Any]:
    """One row of the summary table (CSV and JSON lines)."""
    row = {key: payload.get(key) for key in SUMMARY_FIELDS}
    row.update(index=item.index, moving=item.moving, fixed=item.fixed, output=item.output,
               resumed=bool(payload.get("resumed", False)))
    return row


def worst_exit_code(rows: Iterable[dict[str, Any]]) -> int:
    """0 when every row is ok, 3 when the worst is low_confidence, 4 when any failed or errored."""
    return max((_EXIT.get(str(r.get("verdict")), 4) for r in rows), default=0)


def _load_done(item: BatchItem) -> dict[str, Any] | None:
    """The stored payload when it is this item's current result, complete; None when it must be (re)computed."""
    try:
        payload = json.loads(Path(item.output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or not item.key or payload.get("resume_key") != item.key:
        return None  # other inputs, options, configuration or version: recompute
    if payload.get("verdict") not in ("ok", "low_confidence", "failed"):
        return None  # an error row is retried
    if item.warped and payload["verdict"] != "failed" and not (payload.get("warped") and Path(item.warped).exists()):
        return None
    if item.report and not Path(item.report).exists():
        return None
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
        ``model``, ``seed`` and ``config`` (a :class:`~autoreg.config.RegistrationConfig`) for every item, and what
        the user knows about every pair (:func:`prior_options`: ``scale`` or ``pixel_size``, ``mirrored``);
        ``warped_dir`` and ``report_dir`` to write each item's warped image (TIFF with the fixed pixel size) and
        report there.
    progress : callable, optional
        Called with (done, total, payload) as items finish.
    pool : bool
        Use a process pool even for one worker (benchmarks compare like with like).
    """
    options = dict(options or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("warped_dir", "report_dir"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    items = with_keys(items, options)
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

