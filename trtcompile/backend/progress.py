"""A build progress bar: TensorRT's IProgressMonitor rendered as nested tqdm bars on stderr.

TensorRT reports its optimizer as a tree of phases ("Building engine" > "Building engine from
subgraph" > "Computing profile costs" > ...), each with a number of steps. Every phase gets its own
bar, indented by its depth; inner bars disappear when their phase finishes.

TensorRT calls the monitor from native code and cannot handle Python exceptions from it, so every
callback is guarded: the first exception disables the display (the build goes on) and is kept in
:attr:`BuildProgress.error` for the caller to report.

The monitor is also how a build is interrupted: ``step_complete`` returning False cancels it, so the
monitor is installed on every build (with the display off when there is no terminal) and asks
``cancelled`` at every step (:func:`trtcompile.interrupts.pending`: SIGINT or SIGTERM arrived).
"""

from __future__ import annotations

import shutil
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, TextIO


def progress_enabled(requested: bool | str, stream: TextIO | None = None) -> bool:
    """Whether to draw bars (see :func:`trtcompile.progress.enabled`: ``True`` when ``stream``,
    stderr, is a terminal; ``"always"`` also when it is not)."""
    from trtcompile import progress

    return progress.enabled(requested, stream)


def make_progress_monitor(trt: types.ModuleType, stream: TextIO | None = None, *,
                          display: bool = True,
                          cancelled: Callable[[], bool] = lambda: False) -> Any:
    """An ``IProgressMonitor`` of module ``trt`` drawing tqdm bars on ``stream`` (stderr) when
    ``display`` is on, and cancelling the build as soon as ``cancelled()`` is true."""

    class BuildProgress(trt.IProgressMonitor):
        """Nested tqdm bars, one per active builder phase."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._stream = stream if stream is not None else sys.stderr
            self._lock = threading.Lock()
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}
            self.enabled = display
            self.error: BaseException | None = None
            #: True once the monitor has told TensorRT to cancel the build.
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._guard(self._start, phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._guard(self._step, phase_name, step)
            try:
                if cancelled():
                    self.cancelled = True
            except Exception:  # noqa: BLE001 - must not reach TensorRT
                pass
            return not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            self._guard(self._finish, phase_name)

        def close(self) -> None:
            """Close any bar left open (a build that failed midway)."""
            with self._lock:
                self._close_all()

        def _guard(self, callback, *args) -> None:
            if not self.enabled:
                return
            with self._lock:
                try:
                    callback(*args)
                except Exception as error:  # noqa: BLE001 - must not reach TensorRT
                    self.error = error
                    self.enabled = False
                    self._close_all()

        def _start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            from tqdm import tqdm

            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            if phase_name in self._bars:  # a phase name reused before its finish was seen
                self._bars.pop(phase_name).close()
            self._depth[phase_name] = depth
            self._bars[phase_name] = tqdm(
                total=max(int(num_steps), 1), desc=("  " * depth) + phase_name, position=depth,
                leave=depth == 0, file=self._stream, unit="step",
                # A terminal may report 0 columns (tqdm would then draw nothing): shutil falls back.
                ncols=min(shutil.get_terminal_size().columns, 120),
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]")

        def _step(self, phase_name: str, step: int) -> None:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(max(int(step) + 1 - bar.n, 0))

        def _finish(self, phase_name: str) -> None:
            bar = self._bars.pop(phase_name, None)
            self._depth.pop(phase_name, None)
            if bar is not None:
                bar.update(bar.total - bar.n)
                bar.close()

        def _close_all(self) -> None:
            for bar in self._bars.values():
                try:
                    bar.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._bars.clear()
            self._depth.clear()

    return BuildProgress()
