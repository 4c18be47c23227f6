"""The command line: parse, call the domain, print, map to an exit code. No numpy at import time.

Exit codes: 0 ok; 3 low_confidence (outputs written, flagged); 4 failed; 2 bad input or usage (one line on
stderr, nothing written); 130 interrupted; 1 only for an unexpected bug.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ._version import __version__
from .errors import InputError
from .picker.command import pick_command
from .vocabulary import EXIT_BAD_INPUT, EXIT_CODES, EXIT_INTERRUPTED, MODELS

__all__ = ["app", "main", "EXIT_CODES"]

MODEL_CHOICES = ("auto", *MODELS, "all")
IMAGE_OUTPUTS = {".tif", ".tiff", ".npy", ".h5", ".hdf5"}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hands-off registration of scientific images, with a verdict you can trust.")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


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


def _check_outputs(outputs: list[tuple[Optional[Path], set[str]]], inputs: list[Path], overwrite: bool) -> None:
    from .io import check_output_path

    chosen = [p for p, _ in outputs if p is not None]
    if len({p.resolve() for p in chosen}) < len(chosen):
        raise InputError("Two outputs have the same path; give each output its own file.")
    for path, suffixes in outputs:
        if path is not None:
            check_output_path(path, inputs=inputs, overwrite=overwrite, suffixes=suffixes)


@app.command()
def register(
    fixed: str = typer.Argument(..., help="Fixed image: FILE.h5::/dataset, TIFF, PNG, JPEG or NPY."),
    moving: str = typer.Argument(..., help="Moving image, same formats."),
    model: str = typer.Option("auto", "--model", "-m", help="auto | " + " | ".join(MODEL_CHOICES[1:]) +
                              " (all: print every model's table, return auto's result)"),
    points: Optional[Path] = typer.Option(None, "--points", help="Control points CSV: fixed_x,fixed_y,moving_x,moving_y."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Warped moving image on the fixed grid (.tif or .npy)."),
    report: Optional[Path] = typer.Option(None, "--report", help="PNG report: images, overlay, checkerboard, matches."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=64,
                                             help="Refuse inputs with more pixels than this (default 64 million)."),
    cube: Optional[str] = typer.Option(None, "--cube", help="A USID cube (FILE.h5::/dataset) on the moving grid to "
                                       "warp along, e.g. the STS spectra."),
    cube_step: float = typer.Option(1.0, "--cube-step", min=0.01, help="Warp the cube onto the fixed area every "
                                    "STEP fixed pixels (1 = the fixed grid)."),
    in_place: bool = typer.Option(False, "--in-place", help="Append a <Moving>-Registration_NNN group next to the "
                                  "moving USID dataset (existing datasets are never touched)."),
) -> None:
    """Register MOVING onto FIXED hands-off; fall back to --points when the automatic result is not ok.

    --out takes .tif/.npy (the warped moving image) or .h5 (a USID results file with the warped cube, matrices,
    inliers, scores, verdict and provenance).
    """
    try:
        _register(fixed, moving, model, points, out, report, as_json, seed, overwrite, max_pixels, cube, cube_step,
                  in_place)
    except KeyboardInterrupt:  # temporaries are removed by the atomic writers on the way out
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _register(fixed: str, moving: str, model: str, points: Optional[Path], out: Optional[Path],
              report: Optional[Path], as_json: bool, seed: int, overwrite: bool, max_pixels: Optional[int],
              cube: Optional[str], cube_step: float, in_place: bool) -> None:
    console = _console()
    try:
        if model not in MODEL_CHOICES:
            raise InputError(f"Unknown model {model!r}; choose one of: {', '.join(MODEL_CHOICES)}.")
        inputs = _input_files(fixed, moving) + ([points] if points is not None else [])
        _check_outputs([(out, IMAGE_OUTPUTS), (report, {".png"})], inputs, overwrite)
        from .config import RegistrationConfig
        from .io import load_image
        from .pipeline import register as run

        config = RegistrationConfig() if max_pixels is None else RegistrationConfig(max_pixels=max_pixels)
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
                raise InputError(f"The cube's {cube_data.shape[1]} x {cube_data.shape[0]} positions do not match the "
                                 f"moving image's {moving_img.shape[1]} x {moving_img.shape[0]} pixels.")
            moving_img = replace(moving_img, cube=cube_data)
        compared = None
        if model == "all":  # the tutorial's table for this pair; the auto result is the one written and returned
            from .demo import compare_models

            compared, table = compare_models(fixed_img, moving_img, title=f"autoreg: every model, {moving} onto {fixed}",
                                             points=points, seed=seed)
            _print_table(table, stderr=as_json)
        result = run(fixed_img, moving_img, model="auto" if model == "all" else model, points=points, rng=seed,
                     config=config, cube_step=cube_step, progress=lambda stage: console.log(f"[dim]{stage}[/dim]"))
        written = _write_results(result, fixed_img, moving_img, out, in_place, cube_meta,
                                 {"model": model, "seed": seed, "cube_step": cube_step, "points": str(points or "")})
    except InputError as err:
        raise _fail(str(err)) from None
    _write_outputs(result, fixed_img.data, moving_img.data, out, report, console)
    payload = result.to_dict()
    if written:
        payload["results_group"] = written
        console.log(f"wrote {written}")
    if compared is not None:
        payload["compare"] = [{"model": name, "chosen": r.model, "verdict": r.verdict.level,
                               "pearson": r.to_dict()["pearson"], "n_inliers": r.scores.n_inliers,
                               "rmse_px": r.to_dict()["rmse_px"], "matrix": r.to_dict()["matrix"]}
                              for name, r in compared.items()]
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        _print_summary(payload, console)
    raise typer.Exit(EXIT_CODES[result.verdict.level])


def _write_results(result: Any, fixed: Any, moving: Any, out: Optional[Path], in_place: bool,
                   cube_meta: Any, parameters: dict[str, Any]) -> Optional[str]:
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


def _write_outputs(result: Any, fixed: Any, moving: Any, out: Optional[Path], report: Optional[Path],
                   console: Any) -> None:
    from .io import write_image
    from .report import save_report_png

    if (out is not None and out.suffix.lower() not in {".h5", ".hdf5"} and result.verdict.level != "failed"
            and result.warped is not None):
        write_image(out, result.warped)
        console.log(f"wrote {out}")
    if report is not None:
        save_report_png(result, fixed, moving, report)
        console.log(f"wrote {report}")


def _print_summary(payload: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"autoreg: {payload['verdict']}", show_header=False)
    for key in ("verdict", "model", "source", "n_inliers", "n_matches", "rmse_px", "pearson_before", "pearson",
                "overlap_fraction", "seconds"):
        value = payload.get(key)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("reasons", "; ".join(payload["reasons"]) or "-")
    table.add_row("matrix", json.dumps(payload["matrix"]))
    console.print(table)


@app.command()
def batch(
    scans: list[str] = typer.Argument(..., help="Moving scans: paths, globs, or FILE.h5::/pattern/* (quote globs)."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Fixed image for --against reference."),
    against: str = typer.Option("", "--against",
                                help="reference (default with --reference) | first | predecessor (drift series)."),
    model: str = typer.Option("auto", "--model", "-m", help="auto | " + " | ".join(MODEL_CHOICES[1:])),
    out_dir: Path = typer.Option(Path("autoreg-batch"), "--out-dir", help="Per-item JSON and the summary tables."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Local worker processes (default: cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler."),
    force: bool = typer.Option(False, "--force", help="Redo items whose outputs already exist."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice (same for every item)."),
) -> None:
    """Register many scans hands-off; write summary.csv and summary.jsonl; exit with the worst verdict's code."""
    from .batch import default_workers, expand_inputs, plan, run_batch, worst_exit_code

    try:
        if model not in MODEL_CHOICES:
            raise InputError(f"Unknown model {model!r}; choose one of: {', '.join(MODEL_CHOICES)}.")
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"Output directory {out_dir} is not a directory.")
        mode = against or ("reference" if reference is not None else "first")
        items = plan(expand_inputs(scans), reference=reference, against=mode, out_dir=out_dir)
        with _progress_bar(len(items)) as advance:
            rows = run_batch(items, out_dir=out_dir, workers=workers or default_workers(), scheduler=scheduler,
                             force=force, options={"model": model, "seed": seed}, progress=advance)
    except InputError as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    raise typer.Exit(worst_exit_code(rows))


class _progress_bar:  # noqa: N801 - used as a context manager, named like one
    """A rich progress bar on stderr; yields the callback the batch calls as items finish."""

    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self.total = total
        self.bar = Progress(console=_console(), transient=False)

    def __enter__(self) -> Any:
        self.bar.start()
        task = self.bar.add_task("registering", total=self.total)

        def advance(done: int, total: int, payload: dict[str, Any]) -> None:
            self.bar.update(task, completed=done, description=f"{payload.get('verdict', '?'):>14}")

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@app.command()
def inspect(path: Path = typer.Argument(..., help="An HDF5 file.")) -> None:
    """List USID main datasets (shape, quantity, units) and registration groups with their verdicts."""
    from .results_h5 import describe_file

    try:
        lines = describe_file(path)
    except InputError as err:
        raise _fail(str(err)) from None
    typer.echo(f"{path}")
    for line in lines:
        typer.echo(line)


@app.command()
def apply(
    transform: str = typer.Argument(..., help="A saved transform: result JSON, or FILE.h5::/...-Registration_NNN."),
    target: str = typer.Argument(..., help="An image on the moving grid (any input format), or a CSV of moving "
                                 "points with columns x,y."),
    out: Path = typer.Option(..., "--out", "-o", help="Warped image (.tif/.npy) or mapped points (.csv)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Re-apply a saved transform to another image of the moving grid, or to a list of moving points."""
    from .apply import apply_saved

    try:
        apply_saved(transform, target, out, overwrite=overwrite)
    except InputError as err:
        raise _fail(str(err)) from None


@app.command()
def demo(
    out: Path = typer.Option(Path("autoreg-demo"), "--out", help="Directory for the report, JSON and warped cube."),
) -> None:
    """Register the bundled 40×40 STS map onto the 1024² STM topography with every model; compare to the truth."""
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
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
