"""TensorRT's log, captured per build.

The layer report is one VERBOSE message of the builder, so each build records every message.
TensorRT documents one process-wide logger (a second builder's logger "is ignored", it warns); the
backend therefore keeps one router ``ILogger`` per TensorRT module for all its builders and
runtimes, points it at a capture for the duration of a build, and serializes builds with a lock.
(The Python bindings of TensorRT-RTX 1.7 do deliver messages to the logger a builder was created
with even when another library's builder is alive; should a TensorRT version not, the build still
succeeds and carries no layer report, with a log line saying why.)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

_SEVERITY_TAGS = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}  # INTERNAL_ERROR ... VERBOSE
_FOREIGN_LOGGER = "differs from one already registered"


class LogCapture:
    """The messages TensorRT logged while a capture was active, as ``(tag, text)`` pairs.

    Tags: ``F`` internal error, ``E`` error, ``W`` warning, ``I`` info, ``V`` verbose. With ``echo``,
    warnings and errors are also written to stderr as they arrive; with ``echo="all"``, every
    message (``--verbose``).
    """

    def __init__(self, echo: bool | str = False):
        self.echo = echo
        self._echo_tags = "FEWIV" if echo == "all" else "FEW" if echo else ""
        self.messages: list[tuple[str, str]] = []
        self.foreign_logger = False

    def record(self, tag: str, text: str) -> None:
        self.messages.append((tag, text))
        if _FOREIGN_LOGGER in text:
            self.foreign_logger = True
        if tag in self._echo_tags:
            from tqdm import tqdm

            label = {"F": "internal error", "E": "error", "W": "warning", "I": "info",
                     "V": "verbose"}[tag]
            tqdm.write(f"TensorRT {label}: {text}", file=sys.stderr)

    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    def lines(self) -> list[str]:
        """Every message as ``[tag] text``."""
        return [f"[{tag}] {text}" for tag, text in self.messages]

    def errors(self) -> list[str]:
        """Error messages, each flattened to one line."""
        return [" ".join(text.split()) for tag, text in self.messages if tag in "FE"]


_ROUTERS: dict[str, Any] = {}
_ROUTERS_LOCK = threading.Lock()
_CAPTURE_LOCK = threading.Lock()


def log_router(trt: types.ModuleType) -> Any:
    """The backend's process-wide ``ILogger`` for module ``trt`` (created on first use).

    While a capture is active it receives every message; otherwise it writes warnings and errors
    to stderr, like TensorRT's default logger.
    """
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(trt.__name__)
        if router is None:
            router = _make_router(trt)
            _ROUTERS[trt.__name__] = router
        return router


def _make_router(trt: types.ModuleType) -> Any:
    class LogRouter(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.capture: LogCapture | None = None

        def log(self, severity: Any, msg: str) -> None:
            # TensorRT calls this from native code, which must not see Python exceptions.
            try:
                tag = _SEVERITY_TAGS.get(int(severity), "V")
                capture = self.capture
                if capture is not None:
                    capture.record(tag, msg)
                elif tag in "FEW":
                    print(f"TensorRT: {msg}", file=sys.stderr)
            except Exception:  # noqa: BLE001
                pass

    return LogRouter()


@contextlib.contextmanager
def capture_log(trt: types.ModuleType, *, echo: bool | str = False) -> Iterator[LogCapture]:
    """Record TensorRT's messages for the duration of a block (one block at a time per process)."""
    router = log_router(trt)
    with _CAPTURE_LOCK:
        capture = LogCapture(echo=echo)
        router.capture = capture
        try:
            yield capture
        finally:
            router.capture = None
