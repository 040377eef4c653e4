"""A build progress bar: TensorRT's IProgressMonitor rendered as nested tqdm bars on stderr.

TensorRT reports its optimizer as a tree of phases ("Building engine" > "Building engine from
subgraph" > "Computing profile costs" > ...), each with a number of steps. Every phase gets its own
bar, indented by its depth; inner bars disappear when their phase finishes.

TensorRT calls the monitor from its own threads and cannot handle Python exceptions from it, so every
callback is guarded: the first exception disables the display (the build goes on) and is kept in
:attr:`BuildProgress.error` for the caller to report.
"""

from __future__ import annotations

import shutil
import sys
import threading
import types
from typing import Any, TextIO


def progress_enabled(requested: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw bars: only when asked and when ``stream`` (stderr) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return requested and stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def make_progress_monitor(trt: types.ModuleType, stream: TextIO | None = None) -> Any:
    """An ``IProgressMonitor`` of module ``trt`` drawing tqdm bars on ``stream`` (stderr)."""

    class BuildProgress(trt.IProgressMonitor):
        """Nested tqdm bars, one per active builder phase."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._stream = stream if stream is not None else sys.stderr
            self._lock = threading.Lock()
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}
            self.enabled = True
            self.error: BaseException | None = None

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._guard(self._start, phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._guard(self._step, phase_name, step)
            return True  # never cancel the build from the display

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
