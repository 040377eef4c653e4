"""The ``trtcompile`` command.

::

    trtcompile compile [MODEL] [-o OUT] [flags]   optimize, check parity, build and check the engine
    trtcompile golden MANIFEST [flags]            run a golden-test manifest
    trtcompile bisect MODEL [-o OUT] [--engine]   find the rewrite (or graph segment) that breaks it
    trtcompile passes [--markdown]                the pass reference
    trtcompile run OUT --inputs X.npz [-o Y.npz]  run a compiled model
    trtcompile export OUT --triton REPO           write it into a Triton model repository
    trtcompile --version

Exit codes mean one thing each (:mod:`trtcompile.errors`): 0 ok, 1 a check failed, 2 unusable
input (a flag, the model, a file), 3 TensorRT could not build, 4 a pass failed, 5 bisect found
nothing failing, 130 interrupted (SIGINT or SIGTERM; nothing is written), 70 an internal error.
Errors the user can act on print one line, ``trtcompile: error: ...``; an internal error (a bug) prints one line saying where its
traceback was written.

Only the standard library is imported at module level: ``--help`` and ``--version`` must be
instant, so every stage imports what it needs when it runs.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from collections.abc import Sequence

from trtcompile import interrupts
from trtcompile.version import __version__
from trtcompile.cli.commands import (
    _stderr,
    compile_options,
    model_argument,
    parse_input_shapes,
    parse_names,
    quiet_libraries,
)
from trtcompile.cli.parser import build_parser
from trtcompile.cli.pass_listing import pass_options
from trtcompile.errors import EXIT_INTERNAL, InputError, Interrupted, TrtcompileError


def write_traceback(exc: BaseException) -> str | None:
    """Write the traceback of an internal error to a new file in the system's temporary folder
    (never into the output folder, which must not hold partial results); its path, or None."""
    try:
        with tempfile.NamedTemporaryFile("w", prefix="trtcompile-traceback-", suffix=".txt",
                                         delete=False, encoding="utf-8") as file:
            file.write(f"trtcompile {__version__}\nargv: {sys.argv!r}\n\n")
            file.write("".join(traceback.format_exception(exc)))
            return file.name
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trtcompile`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    with interrupts.handled():
        try:
            return args.handler(args)
        except Interrupted as exc:  # not an error of the user's or ours: said as what happened
            _stderr(f"trtcompile: {exc}")
            return exc.exit_code
        except TrtcompileError as exc:
            _stderr(f"trtcompile: error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            error = Interrupted(interrupts.received() or "SIGINT")
            _stderr(f"trtcompile: {error}")
            return error.exit_code
        except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
            where = write_traceback(exc)
            summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            if where is None:
                traceback.print_exception(exc, file=sys.stderr)
                where = "stderr (no temporary file could be written)"
            _stderr(f"trtcompile: internal error (a bug, please report it): {summary}; "
                    f"traceback written to {where}")
            return EXIT_INTERNAL


__all__ = ["InputError", "build_parser", "compile_options", "main", "model_argument", "parse_input_shapes",
           "parse_names", "pass_options", "quiet_libraries"]

