"""Errors a user can act on, and the exit codes the CLI maps them to.

Every error here prints as one line (``trtcompile: error: <message>``) without a traceback. Any other
exception is a bug: the command writes its traceback to a file and prints one line saying where
(exit code 70).
"""

from __future__ import annotations

#: Exit codes of the ``trtcompile`` command.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # parity failed, a golden expectation regressed
EXIT_BAD_INPUT = 2  # the model, a flag, a manifest or calibration data is unusable
EXIT_BACKEND = 3  # TensorRT rejected the optimized model or failed to build it
EXIT_PASS_FAILED = 4  # a pass raised or produced an invalid graph (a compiler bug)
EXIT_NOTHING_FAILS = 5  # trtcompile bisect: the model passes every check, there is nothing to find
EXIT_UNSUPPORTED = 6  # the precision asked for cannot be built here (TensorRT or the model's opset)
EXIT_INTERNAL = 70  # a bug outside the passes: the traceback is written to a file (sysexits' EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM stopped the command; nothing was written


class TrtcompileError(Exception):
    """Base of errors reported to users as one line with a distinct exit code."""

    exit_code = EXIT_BAD_INPUT


class InputError(TrtcompileError):
    """The input (model file, flag value, data file, manifest) is unusable as given."""

    exit_code = EXIT_BAD_INPUT


class PipelineError(InputError):
    """Pipeline text does not parse, or names an unknown pass or option."""


class UnsupportedPrecision(TrtcompileError):
    """The precision asked for cannot be built with the installed TensorRT or for this model
    (``--precision bf16`` where TensorRT has no BF16, or the model's opset predates bfloat16)."""

    exit_code = EXIT_UNSUPPORTED


class CheckFailed(TrtcompileError):
    """A numerical or structural check failed (parity, golden expectations)."""

    exit_code = EXIT_CHECK_FAILED


class BackendError(TrtcompileError):
    """TensorRT could not parse or build the model."""

    exit_code = EXIT_BACKEND


class PassFailed(TrtcompileError):
    """A pass raised or produced an invalid graph. Names the pass and the passes before it."""

    exit_code = EXIT_PASS_FAILED

    def __init__(self, pass_text: str, previous: list[str], reason: str):
        self.pass_text = pass_text
        self.previous = list(previous)
        self.reason = reason
        before = ", ".join(previous) if previous else "none"
        super().__init__(f"pass '{pass_text}' failed: {reason} (passes run before it: {before})")

    def __reduce__(self):
        # Rebuilt from its parts, so the error crosses process boundaries (worker processes, Ray).
        return type(self), (self.pass_text, self.previous, self.reason)


class WorkerCrashed(TrtcompileError):
    """The process compiling a model died before reporting (killed, out of memory, a crash in
    native code). Reported as that model's error; the other models of the run go on."""

    exit_code = EXIT_CHECK_FAILED


class Interrupted(TrtcompileError):
    """SIGINT or SIGTERM arrived; the command stopped and left no output behind."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str = "SIGINT"):
        self.signal_name = signal_name
        super().__init__(f"interrupted ({signal_name}); nothing was written")
