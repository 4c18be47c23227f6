"""``autoreg.pick``: start a picking session and its page, from Python or the command line.

Everything that can go wrong with the input (an unreadable image, a points file that does not parse, a port
in use, a session file for other images) raises :class:`~autoreg.errors.InputError` *before* the server starts.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["PickHandle", "instructions", "pick", "start"]


class PickHandle:
    """A running picking session: its URL, the points so far, and how to wait for or stop it."""

    def __init__(self, server: Any, session: Any, out: Path | None, autosave: Path | None, notes: list[str]) -> None:
        self.server = server
        self.session = session
        self.out = out
        self.autosave = autosave
        self.notes = notes

    @property
    def url(self) -> str:
        """The page's address (with its token)."""
        return str(self.server.url)

    @property
    def port(self) -> int:
        """The port served on 127.0.0.1."""
        return int(self.server.port)

    @property
    def finished(self) -> bool:
        """True once the user pressed "Save and finish"."""
        return bool(self.server.app.finished.is_set())

    def points(self) -> tuple[Any, Any]:
        """The accepted pairs now: ``(fixed_xy, moving_xy)``, arrays of shape (N, 2) (what saving writes)."""
        with self.server.app.lock:
            return self.session.points()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the user finishes (True) or ``timeout`` seconds pass (False)."""
        return bool(self.server.app.finished.wait(timeout))

    def stop(self) -> None:
        """Stop the server (the session file keeps the work)."""
        self.server.stop()


def _check_out(out: Path, inputs: list[Any]) -> Path:
    from ..io import check_output_path

    specs = [s for s in inputs if isinstance(s, (str, os.PathLike))]
    return check_output_path(out, inputs=specs, overwrite=True, suffixes={".csv"})


def _load_seed_points(points: Any, fixed: Any, moving: Any, config: Any) -> Any:
    from ..control_points import validate_points
    from ..io import load_points

    if isinstance(points, tuple) and len(points) == 2:
        fixed_xy, moving_xy = points
    else:
        fixed_xy, moving_xy = load_points(points)
    return validate_points(fixed_xy, moving_xy, fixed_shape=fixed.shape, moving_shape=moving.shape,
                           model="translation", polynomial_order=config.polynomial_order)


def start(fixed: Any, moving: Any, *, out: str | os.PathLike[str] | None = None, points: Any = None,
          model: str = "auto", port: int = 0, config: Any = None, automatic: bool = True,
          on_finish: Callable[[], None] | None = None) -> PickHandle:
    """Load, check, seed and serve a picking session in a background thread; return its handle.

    Parameters are those of :func:`pick`. ``automatic=False`` skips the automatic attempt (no suggestions).

    Raises
    ------
    InputError
        Unknown model, unreadable image, a points or session file that does not parse or does not fit the
        images, an output path that cannot be written, or a port that cannot be bound.
    """
    from ..config import RegistrationConfig
    from ..io import load_image
    from ..vocabulary import MODELS
    from .pairs import autosave_path, read_autosave, seeds_from_points, seeds_from_result
    from .server import PickApp, PickServer
    from .session import Session

    cfg = config or RegistrationConfig()
    if model != "auto" and model not in MODELS:
        raise InputError(f"Unknown model {model!r}; choose auto or one of: {', '.join(MODELS)}.")
    out_path = None if out is None else _check_out(Path(out), [fixed, moving, points])
    fixed_img = load_image(fixed, name="fixed" if not isinstance(fixed, (str, os.PathLike)) else None,
                           max_pixels=cfg.max_pixels)
    moving_img = load_image(moving, name="moving" if not isinstance(moving, (str, os.PathLike)) else None,
                            max_pixels=cfg.max_pixels)
    seed_points = None if points is None else _load_seed_points(points, fixed_img, moving_img, cfg)
    notes: list[str] = []
    autosave = None if out_path is None else autosave_path(out_path)
    resume = None
    if autosave is not None and autosave.exists():
        resume = read_autosave(autosave, fixed_img.shape, moving_img.shape)
        notes.append(f"resuming the session saved in {autosave} (delete it to start over)")
    server = PickServer(lambda p: PickApp(None, port=p, out=out_path, on_finish=on_finish), port)
    try:
        result = None
        if automatic:
            from ..pipeline import register

            result = register(fixed_img, moving_img, model=model, config=cfg, cube_step=None)
            notes.append(f"automatic attempt: {result.verdict.level}"
                         + (f" ({'; '.join(result.verdict.reasons)})" if result.verdict.reasons else ""))
        if seed_points is not None:
            seeds = seeds_from_points(*seed_points)
        else:
            seeds = seeds_from_result(result) if result is not None else []
        session = Session(fixed_img, moving_img, model=model, config=cfg, seeds=seeds, autosave=autosave,
                          automatic=result, resume=resume)
    except BaseException:
        server.stop()
        raise
    server.app.session = session
    server.start()
    return PickHandle(server, session, out_path, autosave, notes)


def instructions(url: str, port: int) -> list[str]:
    """The lines to print: the URL, and the ``ssh -L`` line for a session on a remote machine."""
    user, host = getpass.getuser(), socket.gethostname()
    return [f"autoreg pick: open {url}",
            f"on another computer: ssh -N -L {port}:127.0.0.1:{port} {user}@{host}   then open the same URL there",
            "keys: ? for help; 'Save and finish' (Shift+S) writes the points and ends"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _show(url: str, show: str) -> None:
    if show == "auto":
        show = "iframe" if _in_notebook() else "tab"
    if show == "iframe":
        from IPython.display import IFrame, display  # only ever reached inside a notebook

        display(IFrame(url, width="100%", height=760))
    elif show == "tab":
        import webbrowser

        webbrowser.open(url, new=2)
    elif show != "none":
        raise InputError(f"show must be auto, tab, iframe or none, not {show!r}.")


def pick(fixed: Any, moving: Any, *, out: str | os.PathLike[str] | None = None, points: Any = None,
         model: str = "auto", port: int = 0, show: str = "auto", block: bool = True, config: Any = None,
         automatic: bool = True) -> Any:
    """Pick control points in the browser, seeded by the automatic attempt, checked live.

    Serves a page on 127.0.0.1 (a random token in its URL) showing both images with the automatic attempt's
    inlier pairs as suggestions (or ``points``). Each placed point is refined by :func:`autoreg.cpcorr.refine_point`,
    every pair shows its leave-one-out residual, and the verdict is ``register(..., automatic=False)``'s.

    Parameters
    ----------
    fixed, moving : str, path, ndarray or Image
        As for :func:`autoreg.register`.
    out : path, optional
        CSV written on save (``fixed_x,fixed_y,moving_x,moving_y``, what ``register --points`` reads); the
        session is autosaved next to it (``OUT.pick.json``) on every change and resumed from there.
    points : path or tuple of arrays, optional
        Start from these pairs (accepted) instead of the automatic suggestions.
    model : str
        ``auto`` or a model name: the model the verdict judges.
    port : int
        Port on 127.0.0.1; 0 picks a free one.
    show : str
        ``auto`` (an IFrame in a notebook, else a browser tab), ``tab``, ``iframe`` or ``none``.
    block : bool
        Wait until the user presses "Save and finish" and return the points (default); False returns a
        :class:`PickHandle` at once (``handle.points()``, ``handle.wait()``, ``handle.stop()``).
    config : RegistrationConfig, optional
    automatic : bool
        Run the automatic attempt for suggestions and the overlay (default).

    Returns
    -------
    (fixed_xy, moving_xy) : tuple of ndarray of shape (N, 2), or PickHandle when ``block`` is False

    Raises
    ------
    InputError
        Bad input (see :func:`start`), before the server starts.
    KeyboardInterrupt
        Interrupted while waiting; the server is stopped, the session file keeps the work.
    """
    handle = start(fixed, moving, out=out, points=points, model=model, port=port, config=config,
                   automatic=automatic)
    for line in [*handle.notes, *instructions(handle.url, handle.port)]:
        print(line, file=sys.stderr)
    _show(handle.url, show)
    if not block:
        return handle
    try:
        handle.wait()
    finally:
        handle.stop()
    return handle.points()
