"""Progress on stderr for the stages that take more than a second.

Every stage that can take long shows something while it runs: the pass bar, the calibration bar,
TensorRT's build phases, and for stages that report no steps of their own (lowering in the
TensorFlow worker, importing TensorFlow, a parity run) an elapsed-time line drawn by
:func:`stage`. Progress goes to stderr only, and only when it was asked for:

* ``True`` (the command's default): when stderr is a terminal; logs and CI get none;
* ``"always"`` (``--progress``): also when stderr is not a terminal;
* ``False`` (``--no-progress``, ``-q``): never.

Imports nothing heavy (tqdm is imported when a bar is drawn).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

#: The value of ``progress`` that draws even when stderr is not a terminal (``--progress``).
ALWAYS = "always"


def enabled(requested: bool | str, stream: TextIO | None = None) -> bool:
    """Whether to draw: ``"always"``; or ``True`` and ``stream`` (stderr) is a terminal."""
    if requested == ALWAYS:
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(requested) and stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def tqdm_disable(requested: bool | str) -> bool:
    """tqdm's ``disable`` argument for ``requested``."""
    return not enabled(requested)


@contextlib.contextmanager
def stage(label: str, requested: bool | str, stream: TextIO | None = None,
          interval: float = 0.5) -> Iterator[Any]:
    """An elapsed-time line (``label [00:07]``) on stderr while the block runs, redrawn every
    ``interval`` seconds by a background thread (the block may sit in native code that reports
    nothing, or in a wait), removed when it ends. Yields the tqdm bar, or None when disabled."""
    if not enabled(requested, stream):
        yield None
        return
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    stop = threading.Event()
    bar = thread = None

    def redraw() -> None:
        while not stop.wait(interval):
            try:
                bar.refresh()
            except Exception:  # noqa: BLE001 - a display must never break the stage
                return

    try:  # created inside the try: an interrupt right after the first draw still cleans up
        bar = tqdm(total=None, desc=label, file=stream, leave=False,
                   bar_format="{desc} [{elapsed}]", dynamic_ncols=True)
        worker = threading.Thread(target=redraw, name="trtcompile-progress", daemon=True)
        worker.start()
        thread = worker  # only a started thread is joined (an interrupt may land in between)
        yield bar
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        if bar is not None:
            bar.close()
        if bar is None or not _isatty(stream):
            # A log keeps the last redraw, and an interrupt inside tqdm's constructor leaves its
            # first draw: end the line so that what follows starts on its own.
            stream.write("\n")
            stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
