"""The command line: parse, call the domain, print, map to an exit code. No numpy at import time.

Exit codes: 0 ok; 3 low_confidence (outputs written, flagged); 4 failed; 2 bad input or usage (one line on
stderr, nothing written); 130 interrupted; 1 only for an unexpected bug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import typer

from ._version import __version__
from .errors import InputError
from .picker.command import pick_command
from .vocabulary import EXIT_BAD_INPUT, EXIT_CLOSED_OUTPUT, EXIT_CODES, EXIT_INTERRUPTED, MODELS

__all__ = ["app", "main", "EXIT_CODES"]

MODEL_CHOICES = ("auto", *MODELS, "all")
IMAGE_OUTPUTS = {".tif", ".tiff", ".npy", ".png", ".h5", ".hdf5"}
IMAGE_INPUTS = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy"}
TOLERANCE_HELP = ("The error ok promises not to exceed, in fixed px (default: the larger of 2 fixed px and half a "
                  "moving pixel).")
PIXEL_SIZE_HELP = ("The two pixel sizes in one unit, when the files do not say (the scale is then known); WxH for a "
                   "pixel that is not square (1 6x12: a 64×32 grid over a square area).")
SCALE_HELP = "Fixed pixels per moving pixel, when you know it (the same as --pixel-size 1 S)."
MIRRORED_HELP = ("MOVING is (or is not) the mirror image of FIXED: one scan stored with its y axis up, the other down "
                 "(default: from the signs of the files' pixel sizes, else not).")
TIME_BUDGET_HELP = ("Stop trying strategies after SECONDS (default: no limit); a running search stops too and the "
                    "reasons say what was not tried. Results then depend on the machine's speed.")

# Plain help (click's formatter): flags render as flags, not "<bool>", and text wraps instead of being cut.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Hands-off registration of scientific images, with a verdict you can trust.")

#: What each pipeline stage is, for the log (stage names come from :func:`autoreg.pipeline.register`).
_STAGES = {
    "features": "trying ORB features",
    "features-gradient": "trying ORB features on the gradient magnitude",
    "features-sift": "trying SIFT features",
    "features-sift-mutual": "trying SIFT features' mutual matches (a small overlap?)",
    "search": "searching rotation and translation by masked correlation",
    "features-same-pixel-size": "trying ORB features at the same pixel size (a crop?)",
    "features-gradient-same-pixel-size": "trying ORB features on the gradient magnitude at the same pixel size",
    "features-sift-same-pixel-size": "trying SIFT features at the same pixel size",
    "features-sift-mutual-same-pixel-size": "trying SIFT features' mutual matches at the same pixel size",
    "search-part-of-field": "searching a map over part of the fixed field",
    "search-same-pixel-size": "searching at the same pixel size (a crop?)",
    "points": "fitting your control points",
    "cube": "warping the cube onto the fixed grid",
    "done": "registration finished",
}


def _console() -> Any:
    """Logs and progress for people, on stderr; log lines carry the time, not the source line that logged."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, log_path=False)


def _stage_message(stage: str) -> str:
    return _STAGES.get(stage, stage)


def merge_reasons(reasons: list[str]) -> list[str]:
    """Each reason once, in order, with how often it was given: ``"few_inliers: 5 < 15 (×3)"``."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return [f"{r} (×{n})" if n > 1 else r for r, n in counts.items()]


def _fail(message: str) -> typer.Exit:
    """Print one line on stderr and return the exit for bad input (raise it ``from None``)."""
    sys.stderr.write(f"error: {message}\n")
    return typer.Exit(EXIT_BAD_INPUT)


def _print_table(table: Any, *, stderr: bool) -> None:
    """Print a :class:`autoreg.demo.ModelTable` for people: on stdout, or stderr when stdout carries JSON."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=stderr, highlight=False, width=max(Console().width, 160))
    rich_table = Table(title=table.title)
    for column in table.columns:
        text = column in ("model", "chosen", "verdict")
        rich_table.add_column(column, justify="left" if text else "right", no_wrap=text, min_width=16 if text else None)
    for row in table.rows:
        rich_table.add_row(*row)
    console.print(rich_table)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"autoreg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Hands-off registration of scientific images, with a verdict you can trust."""


def _input_files(*specs: str) -> list[Path]:
    from .io import parse_spec

    return [parse_spec(spec)[0] for spec in specs]


def _check_outputs(outputs: list[tuple[Path | None, set[str]]], inputs: list[Path], overwrite: bool) -> None:
    from .io import check_output_path

    chosen = [p for p, _ in outputs if p is not None]
    if len({p.resolve() for p in chosen}) < len(chosen):
        raise InputError("Two outputs have the same path; give each output its own file.")
    for path, suffixes in outputs:
        if path is not None:
            check_output_path(path, inputs=inputs, overwrite=overwrite, suffixes=suffixes)


@app.command()
def register(
    fixed: str = typer.Argument(..., metavar="FIXED",
                                help="Fixed image: FILE.h5::/dataset (USID main or plain 2-D), TIFF, PNG, JPEG or NPY."),
    moving: str = typer.Argument(..., metavar="MOVING", help="Moving image, same formats."),
    model: str = typer.Option("auto", "--model", "-m", metavar="MODEL",
                              help="auto | " + " | ".join(MODEL_CHOICES[1:]) + " (all: print every model's table, "
                              "return auto's result)."),
    points: Path | None = typer.Option(None, "--points", metavar="CSV",
                                          help="Control points CSV with the header fixed_x,fixed_y,moving_x,moving_y "
                                          "(pixels), used when the automatic result is not ok."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="PATH",
                                       help="The warped moving image on the fixed grid: .tif (float32, with the "
                                       "fixed pixel size), .npy, .png (an 8-bit preview, not the data), or .h5 (a "
                                       "USID results file: warped image and cube, matrices, inliers, verdict, "
                                       "provenance)."),
    report: Path | None = typer.Option(None, "--report", metavar="PNG",
                                          help="PNG report: images, overlay, checkerboard, matches or difference."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout (the table goes "
                                 "nowhere; logs stay on stderr)."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of every random choice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=64, metavar="N",
                                             help="Refuse inputs with more pixels than this (default 64 million)."),
    cube: str | None = typer.Option(None, "--cube", metavar="FILE.h5::/CUBE",
                                       help="A USID cube on the moving grid to warp along, e.g. the STS spectra."),
    cube_step: float = typer.Option(1.0, "--cube-step", min=0.01, metavar="STEP",
                                    help="Warp the cube onto the fixed area every STEP fixed pixels (1 = the fixed "
                                    "grid)."),
    in_place: bool = typer.Option(False, "--in-place", help="Append a <Moving>-Registration_NNN group next to the "
                                  "moving USID dataset (existing datasets are never touched)."),
    tolerance_px: float | None = typer.Option(None, "--tolerance-px", metavar="PX", help=TOLERANCE_HELP),
    pixel_size: tuple[str, str] | None = typer.Option(None, "--pixel-size", metavar="FIXED MOVING",
                                                             help=PIXEL_SIZE_HELP),
    scale: float | None = typer.Option(None, "--scale", metavar="S", help=SCALE_HELP),
    save_points: Path | None = typer.Option(None, "--save-points", metavar="CSV",
                                               help="Write the automatic inlier pairs as a control-point CSV (the "
                                               "format --points and autoreg pick read)."),
    time_budget: float | None = typer.Option(None, "--time-budget", metavar="SECONDS", help=TIME_BUDGET_HELP),
    mirrored: bool | None = typer.Option(None, "--mirrored/--not-mirrored",
                                            help=MIRRORED_HELP + " --points stay in MOVING's pixels."),
) -> None:
    """Register MOVING onto FIXED hands-off; fall back to --points when the automatic result is not ok.

    Prints a summary table on stdout (or one JSON object with --json). Exit code 0 ok, 3 low_confidence (outputs
    written, flagged), 4 failed (nothing warped written), 2 bad input (one line on stderr, nothing written).
    Sizes are written W×H px (columns × rows).
    """
    try:
        _register(fixed, moving, model, points, out, report, as_json, seed, overwrite, max_pixels, cube, cube_step,
                  in_place, _Prior(tolerance_px=tolerance_px, pixel_size=pixel_size, scale=scale, mirrored=mirrored),
                  save_points, time_budget)
    except KeyboardInterrupt:  # temporaries are removed by the atomic writers on the way out
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None


class _Prior(NamedTuple):
    """What the user knows about the pair: the tolerance to promise, the scale, and whether one is mirrored."""

    tolerance_px: float | None
    pixel_size: tuple[Any, Any] | None
    scale: float | None
    mirrored: bool | None = None

    def checked(self, time_budget: float | None) -> tuple[_Prior, Any]:
        """These priors with ``--pixel-size``'s text read as sizes, and the
        :class:`~autoreg.config.RegistrationConfig` for them, after checking every one of them.

        Raises
        ------
        InputError
            A tolerance that is not a positive number, or a scale or pixel sizes that are not (or both given).
        """
        from .config import RegistrationConfig
        from .pipeline import given_scale

        if self.tolerance_px is not None and not self.tolerance_px > 0:
            raise InputError(f"--tolerance-px must be a positive number of fixed pixels, not {self.tolerance_px}.")
        sizes = None if self.pixel_size is None else tuple(_pixel_size(text) for text in self.pixel_size)
        given_scale(self.scale, sizes)
        return self._replace(pixel_size=sizes), RegistrationConfig(tolerance_px=self.tolerance_px,
                                                                   time_budget_s=time_budget)


def _pixel_size(text: Any) -> Any:
    """One ``--pixel-size`` value: ``"0.5"`` (a square pixel) or ``"6x12"`` (6 wide, 12 high); numbers pass through.

    Examples
    --------
    >>> _pixel_size("0.5"), _pixel_size("6x12"), _pixel_size("6×12")
    (0.5, (6.0, 12.0), (6.0, 12.0))
    """
    if not isinstance(text, str):
        return text
    parts = text.strip().lower().replace("×", "x").split("x")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2):
        raise InputError(f"--pixel-size takes a number or WIDTHxHEIGHT per image (0.5, or 6x12), not {text!r}.")
    return values[0] if len(values) == 1 else values


def _register(fixed: str, moving: str, model: str, points: Path | None, out: Path | None,
              report: Path | None, as_json: bool, seed: int, overwrite: bool, max_pixels: int | None,
              cube: str | None, cube_step: float, in_place: bool, prior: _Prior,
              save_points: Path | None, time_budget: float | None) -> None:
    console = _console()
    try:
        if model not in MODEL_CHOICES:
            raise InputError(f"Unknown model {model!r}; choose one of: {', '.join(MODEL_CHOICES)}.")
        inputs = _input_files(fixed, moving) + ([points] if points is not None else [])
        _check_outputs([(out, IMAGE_OUTPUTS), (report, {".png"}), (save_points, {".csv"})], inputs, overwrite)
        from .io import load_image
        from .pipeline import register as run

        prior, config = prior.checked(time_budget)
        if max_pixels is not None:
            config = config.with_(max_pixels=max_pixels)
        fixed_img = load_image(fixed, max_pixels=config.max_pixels)
        moving_img = load_image(moving, max_pixels=config.max_pixels)
        if in_place and "::" not in moving:
            raise InputError("--in-place needs a moving image read from FILE.h5::/dataset.")
        cube_meta = None
        if cube is not None:
            from dataclasses import replace

            from .io import load_cube

            cube_data, cube_meta = load_cube(cube, max_pixels=config.max_pixels)
            if cube_data.shape[:2] != moving_img.shape:
                raise InputError(f"The cube's {cube_data.shape[1]}×{cube_data.shape[0]} positions do not match the "
                                 f"moving image's {moving_img.shape[1]}×{moving_img.shape[0]} px.")
            moving_img = replace(moving_img, cube=cube_data)
        compared = None
        if model == "all":  # the tutorial's table for this pair; the auto result is the one written and returned
            from .demo import compare_models

            compared, table = compare_models(fixed_img, moving_img, title=f"autoreg: every model, {moving} onto {fixed}",
                                             points=points, seed=seed, scale=prior.scale, pixel_size=prior.pixel_size,
                                             mirrored=prior.mirrored)
            _print_table(table, stderr=as_json)
        result = run(fixed_img, moving_img, model="auto" if model == "all" else model, points=points, rng=seed,
                     config=config, cube_step=cube_step, progress=lambda stage: console.log(_stage_message(stage)),
                     scale=prior.scale, pixel_size=prior.pixel_size, mirrored=prior.mirrored)
        written = _write_results(result, fixed_img, moving_img, out, in_place, cube_meta,
                                 {"model": model, "seed": seed, "cube_step": cube_step, "points": str(points or "")})
    except InputError as err:
        raise _fail(str(err)) from None
    _write_outputs(result, fixed_img, moving_img, out, report, console)
    if save_points is not None:
        _save_points(result, save_points, console)
    payload = result.to_dict()
    if written:
        payload["results_group"] = written
        console.log(f"wrote the results group {written}")
    if compared is not None:
        payload["compare"] = [{"model": name, "chosen": r.model, "verdict": r.verdict.level,
                               "pearson": r.to_dict()["pearson"], "n_inliers": r.scores.n_inliers,
                               "rmse_px": r.to_dict()["rmse_px"], "matrix": r.to_dict()["matrix"]}
                              for name, r in compared.items()]
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        _print_summary(payload)
    raise typer.Exit(EXIT_CODES[result.verdict.level])


def _write_results(result: Any, fixed: Any, moving: Any, out: Path | None, in_place: bool,
                   cube_meta: Any, parameters: dict[str, Any]) -> str | None:
    """USID results: a new .h5 file given as --out, and/or a group next to the moving dataset (--in-place)."""
    from .results_h5 import write_results

    if result.verdict.level == "failed":
        return None
    written = None
    if out is not None and out.suffix.lower() in {".h5", ".hdf5"}:
        written = write_results(result, fixed=fixed, moving=moving, path=out, warped_cube=result.warped_cube,
                                cube_meta=cube_meta, parameters=parameters)
    if in_place:
        written = write_results(result, fixed=fixed, moving=moving, in_place=True, warped_cube=result.warped_cube,
                                cube_meta=cube_meta, parameters=parameters)
    return written


def _write_outputs(result: Any, fixed: Any, moving: Any, out: Path | None, report: Path | None,
                   console: Any) -> None:
    from .io import write_image
    from .report import save_report_png

    if (out is not None and out.suffix.lower() not in {".h5", ".hdf5"} and result.verdict.level != "failed"
            and result.warped is not None):
        write_image(out, result.warped, pixel_size_xy=fixed.pixel_size_xy, units=fixed.units)
        kind = "an 8-bit preview of the warped moving image" if out.suffix.lower() == ".png" else "the warped image"
        console.log(f"wrote {kind} to {out}")
    elif out is not None and result.verdict.level == "failed":
        console.log(f"did not write {out}: the registration failed")
    if report is not None:
        save_report_png(result, fixed.data, moving.data, report)
        console.log(f"wrote the report {report}")


def _save_points(result: Any, path: Path, console: Any) -> None:
    from .io import save_inlier_pairs

    if save_inlier_pairs(result, path):
        console.log(f"wrote the {result.scores.n_inliers} inlier pairs to {path}")
    else:
        console.log(f"did not write {path}: the result has no point pairs ({result.source or 'no fit'})")


def _print_summary(payload: dict[str, Any]) -> None:
    """The human summary of ``register``, on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"autoreg: {payload['verdict']}", show_header=False)
    for key in ("verdict", "model", "source", "n_inliers", "n_matches", "rmse_px", "pearson_before", "pearson",
                "overlap_fraction", "seconds"):
        value = payload.get(key)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("reasons", "\n".join(merge_reasons(payload["reasons"])) or "-")
    if payload.get("mirrored"):
        table.add_row("mirrored", f"yes (said by the {payload.get('mirror_source')}): the matrix holds the reflection")
    table.add_row("matrix", json.dumps(payload["matrix"]))
    Console(highlight=False).print(table)


BATCH_MODELS = ("auto", *MODELS)


@app.command()
def batch(
    scans: list[str] = typer.Argument(..., metavar="SCANS",
                                      help="Moving scans: paths, globs, or FILE.h5::/pattern/* (quote globs)."),
    reference: str | None = typer.Option(None, "--reference", "-r", metavar="FIXED",
                                            help="Fixed image for --against reference."),
    against: str = typer.Option("", "--against", metavar="MODE",
                                help="reference (default with --reference) | first | predecessor (drift series)."),
    model: str = typer.Option("auto", "--model", "-m", metavar="MODEL", help=" | ".join(BATCH_MODELS) + "."),
    out_dir: Path = typer.Option(Path("autoreg-batch"), "--out-dir", metavar="DIR",
                                 help="Per-item result JSON (each a reusable transform) and the summary tables."),
    workers: int | None = typer.Option(None, "--workers", min=1, metavar="N",
                                          help="Local worker processes (default: the cores)."),
    scheduler: str | None = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="Address of a running Dask scheduler."),
    force: bool = typer.Option(False, "--force", help="Redo every item, even those already done with the same "
                               "inputs, options and autoreg version."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of every random choice (same for every item)."),
    write_warped: Path | None = typer.Option(None, "--write-warped", metavar="DIR",
                                                help="Write each aligned scan (TIFF on the fixed grid, with its "
                                                "pixel size) into DIR."),
    stack: Path | None = typer.Option(None, "--stack", metavar="OUT",
                                         help="Write the aligned stack (.tif ImageJ stack or .h5 USID), frame k = "
                                         "scan k; a drift series is chained back to the first scan."),
    report_dir: Path | None = typer.Option(None, "--report-dir", metavar="DIR",
                                              help="Write a PNG report per item into DIR."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --stack file."),
    time_budget: float | None = typer.Option(None, "--time-budget", metavar="SECONDS", help=TIME_BUDGET_HELP),
    tolerance_px: float | None = typer.Option(None, "--tolerance-px", metavar="PX", help=TOLERANCE_HELP),
    pixel_size: tuple[str, str] | None = typer.Option(None, "--pixel-size", metavar="FIXED MOVING",
                                                             help=PIXEL_SIZE_HELP + " Every item alike."),
    scale: float | None = typer.Option(None, "--scale", metavar="S", help=SCALE_HELP + " Every item alike."),
    mirrored: bool | None = typer.Option(None, "--mirrored/--not-mirrored",
                                            help="Each scan is (or is not) the mirror image of its fixed image "
                                            "(default: from the signs of the files' pixel sizes, else not)."),
) -> None:
    """Register many scans hands-off; write summary.csv and summary.jsonl; exit with the worst verdict's code.

    A re-run skips items already done with the same inputs (path, size, time and content), options, configuration
    and autoreg version, and says how many on stderr; error rows are retried. stdout gets one JSON line per item.
    What you know about the pairs (--pixel-size or --scale, --mirrored, --tolerance-px) holds for every item.
    """
    from .batch import default_workers, expand_inputs, plan, prior_options, run_batch, worst_exit_code

    try:
        prior, config = _Prior(tolerance_px=tolerance_px, pixel_size=pixel_size, scale=scale,
                               mirrored=mirrored).checked(time_budget)  # before anything is planned or written
        if model not in BATCH_MODELS:
            hint = (" (--model all compares models on one pair: autoreg register FIXED MOVING --model all)"
                    if model == "all" else "")
            raise InputError(f"Unknown batch model {model!r}; choose one of: {', '.join(BATCH_MODELS)}{hint}.")
        for folder, flag in ((out_dir, "--out-dir"), (write_warped, "--write-warped"), (report_dir, "--report-dir")):
            if folder is not None and folder.exists() and not folder.is_dir():
                raise InputError(f"{flag} {folder} is not a directory.")
        mode = against or ("reference" if reference is not None else "first")
        items = plan(expand_inputs(scans), reference=reference, against=mode, out_dir=out_dir)
        if stack is not None:
            from .io import check_output_path
            from .stack import STACK_SUFFIXES

            check_output_path(stack, inputs=[i.moving for i in items] + [i.fixed for i in items],
                              overwrite=overwrite, suffixes=STACK_SUFFIXES)
        options = {"model": model, "seed": seed, "config": config,
                   "warped_dir": str(write_warped) if write_warped else None,
                   "report_dir": str(report_dir) if report_dir else None,
                   **prior_options(scale=prior.scale, pixel_size=prior.pixel_size, mirrored=prior.mirrored)}
        with _progress_bar(len(items)) as advance:
            rows = run_batch(items, out_dir=out_dir, workers=workers or default_workers(), scheduler=scheduler,
                             force=force, options=options, progress=advance)
        skipped = sum(1 for r in rows if r.get("resumed"))
        if skipped:
            sys.stderr.write(f"skipped {skipped} already done (same inputs, options, configuration and autoreg "
                             "version; --force redoes them)\n")
        if stack is not None:
            from .stack import write_stack

            console = _console()
            write_stack(items, mode, stack, log=console.log)
            console.log(f"wrote the aligned stack {stack}")
    except InputError as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    raise typer.Exit(worst_exit_code(rows))


def progress_description(counts: dict[str, int]) -> str:
    """``"ok 3 · low_confidence 1 · failed 0 · error 1"``: what the progress bar shows, counts per verdict."""
    return " · ".join(f"{level} {counts.get(level, 0)}" for level in ("ok", "low_confidence", "failed", "error"))


class _progress_bar:  # noqa: N801 - used as a context manager, named like one
    """A rich progress bar on stderr with counts per verdict; yields the callback the batch calls."""

    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self.total = total
        self.counts: dict[str, int] = {}
        self.bar = Progress(console=_console(), transient=False)

    def __enter__(self) -> Any:
        self.bar.start()
        task = self.bar.add_task(progress_description(self.counts), total=self.total)

        def advance(done: int, total: int, payload: dict[str, Any]) -> None:
            verdict = str(payload.get("verdict", "error"))
            self.counts[verdict] = self.counts.get(verdict, 0) + 1
            self.bar.update(task, completed=done, description=progress_description(self.counts))

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@app.command()
def inspect(path: Path = typer.Argument(..., metavar="FILE", help="An HDF5 file, or an image file (TIFF, PNG, "
                                        "JPEG, NPY).")) -> None:
    """List an HDF5 file's groups, USID main datasets (grid, steps, quantity, units, pixel size), plain 2-D datasets
    that register reads (W×H px), and registration groups with their verdicts; or say an image file's size and the
    pixel size register reads from it."""
    try:
        if path.suffix.lower() in IMAGE_INPUTS:
            from .io import describe_image

            lines = [f"  {describe_image(path)}"]
        else:
            from .results_h5 import describe_file

            lines = describe_file(path)
    except InputError as err:
        raise _fail(str(err)) from None
    typer.echo(f"{path}")
    for line in lines:
        typer.echo(line)


@app.command()
def apply(
    transform: str = typer.Argument(..., metavar="TRANSFORM",
                                    help="A saved transform: a result JSON (register --json, a batch item, the "
                                    "demo's auto.json) or FILE.h5::/...-Registration_NNN."),
    targets: list[str] | None = typer.Argument(None, metavar="TARGET",
                                                  help="Images on the moving grid (any input format; globs and "
                                                  "FILE.h5::/pattern/* expand), or CSVs of points with columns x,y."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="PATH",
                                       help="The output of a single target: .tif/.npy/.png (image; .png is an 8-bit "
                                       "preview), .csv (points), .npy/.h5 (cube)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", metavar="DIR",
                                           help="Outputs of any number of targets: DIR/<name>.tif, .csv or .npy."),
    cube: list[str] | None = typer.Option(None, "--cube", metavar="FILE.h5::/CUBE",
                                             help="A USID spectral cube on the moving grid to warp (repeatable)."),
    cube_step: float = typer.Option(1.0, "--cube-step", min=0.01, metavar="STEP",
                                    help="Warp cubes onto the fixed area every STEP fixed pixels."),
    inverse: bool = typer.Option(False, "--inverse", help="Map the other way: fixed points to moving points "
                                 "(x,y,moving_x,moving_y), fixed-grid images onto the moving grid."),
    force: bool = typer.Option(False, "--force", help="Apply to targets whose shape or physical extent differs "
                               "from the registered image's."),
    allow_low_confidence: bool = typer.Option(False, "--allow-low-confidence",
                                              help="Apply a low_confidence transform (a failed one never applies)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Re-apply a saved transform to images of the moving grid, spectral cubes, or lists of points.

    Every target is checked before anything is written: a failed transform never applies, a low_confidence one
    only with --allow-low-confidence, and a target whose W×H px (or physical extent) differs from the registered
    image's is refused unless --force. Points CSVs get x,y,fixed_x,fixed_y.
    """
    from .apply import apply_saved

    console = _console()
    try:
        expanded: list[str] = []
        if targets:
            from .batch import expand_inputs

            expanded = expand_inputs(targets)
        written = apply_saved(transform, expanded, out=out, out_dir=out_dir, cubes=list(cube or []),
                              overwrite=overwrite, force=force, allow_low_confidence=allow_low_confidence,
                              inverse=inverse, cube_step=cube_step)
    except InputError as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for path in written:
        console.log(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("autoreg-demo"), "--out", metavar="DIR",
                             help="Directory for the report, JSON and warped cube."),
) -> None:
    """Register the bundled 40×40 px STS map onto the 1024×1024 px STM topography with every model; compare to
    the known truth."""
    from .demo import run_demo

    console = _console()
    try:
        outcome = run_demo(out, log=console.log)
    except InputError as err:
        raise _fail(str(err)) from None
    _print_table(outcome.table, stderr=False)
    raise typer.Exit(EXIT_CODES[outcome.level])


app.command(name="pick")(pick_command)


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr and exit 2, like bad input."""
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover - older typer runs on click itself
        from click import exceptions as click_exceptions
    abort = getattr(click_exceptions, "Abort", None)
    if abort is None:  # typer's copy keeps it in typer.exceptions
        from typer.exceptions import Abort as abort

    try:
        code = app(standalone_mode=False)
    except SystemExit as err:
        # click and typer end a run whose stdout reader went away (`autoreg inspect scan.h5 | head`) with exit 1
        # once they have silenced the stream; 1 is kept for bugs, so a closed pipe exits as a shell would say it
        if err.code != 1 or type(sys.stdout).__name__ != "PacifyFlushWrapper":
            raise
        code = EXIT_CLOSED_OUTPUT
    except click_exceptions.NoArgsIsHelpError as err:  # bare `autoreg` or `autoreg register`: the help
        typer.echo(err.ctx.get_help() if err.ctx is not None else str(err))
        code = 0
    except click_exceptions.UsageError as err:
        where = f"autoreg {err.ctx.info_name} --help" if err.ctx is not None and err.ctx.parent else "autoreg --help"
        sys.stderr.write(f"error: {' '.join(err.format_message().split())} (see {where})\n")
        code = EXIT_BAD_INPUT
    except abort:  # Ctrl-C while click itself was prompting or parsing
        sys.stderr.write("interrupted\n")
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
