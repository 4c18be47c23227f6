"""Atomic file writing: a leaf module (standard library only).

Writers write to a hidden temporary file beside the target (created with mode 0o666, less the process umask,
like any new file), which is flushed to disk and then renamed onto the target: an interrupted or killed run leaves
the old file or none, never half a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text"]


def _create_temp(target: Path) -> Path:
    """Create an empty hidden file ``.NAME.tmp-XXXXXXXX.SUFFIX`` beside ``target`` (0666 minus umask)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}{target.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"Cannot create a temporary file beside {target}.")


def _fsync(path: Path) -> None:
    """Flush a written file to disk before it is renamed into place (a crash then leaves old or new, whole)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, remove it on any error.

    The temporary file is created empty, hidden (``.NAME.tmp-XXXXXXXX.SUFFIX``) and keeps the suffix, so
    writers that look at it (tifffile, matplotlib) behave. Any exception, KeyboardInterrupt included, removes
    it and leaves ``path`` untouched; a killed process leaves ``path`` untouched and a stray hidden file.

    Parameters
    ----------
    path : str or path
        The final file; its directory must exist.

    Yields
    ------
    Path
        Where to write.

    Examples
    --------
    >>> with atomic_path(tmp_dir / "out.json") as tmp:     # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    target = Path(path)
    tmp = _create_temp(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
