"""SIGINT and SIGTERM: stop the compile at any stage, with exit code 130 and nothing written.

While :func:`handled` is active (the command's whole run), both signals raise
:class:`KeyboardInterrupt` in the main thread, so every stage unwinds through its ``finally``
blocks: the staging folder is removed, the TensorFlow worker is killed by ``subprocess.run``, and
nothing reaches the output folder. SIGTERM is treated like SIGINT because CI systems and
``timeout`` send it, and the default action (die at once) would leave the staging folder behind.

TensorRT calls Python back (its logger, the build's progress monitor) from native code that catches
and prints any exception, ``KeyboardInterrupt`` included, and then goes on building. So during a
build (:func:`deferred`) a signal only *records* itself; the progress monitor sees
:func:`pending` and cancels the build (``step_complete`` returns False), and the block raises
:class:`~trtcompile.errors.Interrupted` when it ends. A signal that arrives while the TensorRT
module is being imported is likewise recorded, not misread as an import failure.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from trtcompile.errors import Interrupted

#: The signals that stop a compile.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[str] = []  # names of the signals received, oldest first
_defer_depth = [0]


def _handler(signum: int, frame) -> None:
    _received.append(signal.Signals(signum).name)
    if _defer_depth[0] == 0:
        raise KeyboardInterrupt


def received() -> str | None:
    """Name of the first signal received (``SIGINT``, ``SIGTERM``) or None."""
    return _received[0] if _received else None


def pending() -> bool:
    """True once SIGINT or SIGTERM has arrived while :func:`handled` is active."""
    return bool(_received)


def check() -> None:
    """Raise :class:`Interrupted` if a signal has arrived."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Route SIGINT and SIGTERM to this module for the duration of a block (main thread only;
    elsewhere, e.g. in a thread of a host application, the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {number: signal.signal(number, _handler) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block during which a signal is recorded rather than raised (native code that would
    swallow the exception runs in it); raises :class:`Interrupted` at its end if one arrived."""
    _defer_depth[0] += 1
    try:
        yield
    except Exception:
        if _received:  # e.g. the build the monitor cancelled fails: the signal is the cause
            raise Interrupted(_received[0]) from None
        raise
    finally:
        _defer_depth[0] -= 1
    check()
