"""The ``autoreg pick`` command: parse, start the session, print the URL, wait, map to an exit code.

Exit codes: 0 saved and finished; 2 bad input (one line on stderr, before the server starts); 130 Ctrl-C (the
CSV is only ever written whole, and the session file keeps the work for the next run).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import typer

from ..errors import InputError
from ..vocabulary import EXIT_BAD_INPUT, EXIT_INTERRUPTED, MODELS

__all__ = ["pick_command"]


def pick_command(
    fixed: str = typer.Argument(..., help="Fixed image: FILE.h5::/dataset, TIFF, PNG, JPEG or NPY."),
    moving: str = typer.Argument(..., help="Moving image, same formats."),
    out: Path = typer.Option(..., "--out", "-o", help="Points CSV to write (fixed_x,fixed_y,moving_x,moving_y); "
                             "the session is autosaved next to it (OUT.pick.json) and resumed from there."),
    points: Path | None = typer.Option(None, "--points", help="Start from these points instead of the "
                                       "automatic attempt's suggestions."),
    model: str = typer.Option("auto", "--model", "-m", help="auto | " + " | ".join(MODELS)),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL only; do not open a browser."),
) -> None:
    """Pick control points in the browser, seeded by the automatic attempt and checked live; save them to --out."""
    from .api import instructions, start

    done = threading.Event()
    try:
        handle = start(fixed, moving, out=out, points=points, model=model, port=port, on_finish=done.set)
    except InputError as err:
        sys.stderr.write(f"error: {err}\n")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    for line in handle.notes:
        sys.stderr.write(line + "\n")
    for line in instructions(handle.url, handle.port):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if not no_browser:
        import webbrowser

        webbrowser.open(handle.url, new=2)
    try:
        while not done.wait(0.2):  # short waits keep Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        handle.stop()
        sys.stderr.write(f"interrupted; the session is kept in {handle.autosave} (run the same command to resume)\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    handle.stop()
    sys.stderr.write(f"wrote {handle.server.app.saved} pairs to {out}\n")
    raise typer.Exit(0)
