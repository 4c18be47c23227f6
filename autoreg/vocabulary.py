"""The words autoreg's results are made of: model names, verdict levels and their exit codes.

A leaf module with no imports, so the command line can use it without loading numpy.
"""

from __future__ import annotations

__all__ = ["MODELS", "GLOBAL_MODELS", "VERDICT_LEVELS", "EXIT_CODES", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED",
           "EXIT_CLOSED_OUTPUT"]

#: Every transform model, simplest first.
MODELS: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "projective", "polynomial",
                           "piecewise-affine")
#: The models that are one 3×3 matrix.
GLOBAL_MODELS: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "projective")
#: Verdict levels, best first.
VERDICT_LEVELS: tuple[str, ...] = ("ok", "low_confidence", "failed")
#: Exit code of the command line for each verdict.
EXIT_CODES: dict[str, int] = {"ok": 0, "low_confidence": 3, "failed": 4}
#: Exit code for input or usage the command cannot use (one line on stderr, nothing written).
EXIT_BAD_INPUT = 2
#: Exit code after Ctrl-C (temporaries removed).
EXIT_INTERRUPTED = 130
#: Exit code when stdout's reader went away (``autoreg inspect scan.h5 | head``): 128 + SIGPIPE, what a shell
#: reports for a writer ended by a closed pipe. Nothing more is printed.
EXIT_CLOSED_OUTPUT = 141
