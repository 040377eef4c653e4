"""Instruments: observers of a pipeline run that passes do not know about.

:class:`DumpInstrument` writes the IR after every pass to ``NNN_<pass>.onnx``;
:class:`VerifyInstrument` runs the onnx checker and ONNX Runtime parity against the pass input after
every pass that changed the graph. An instrument raising :class:`VerificationFailed` stops the
pipeline; the manager turns it into :class:`~trtcompile.errors.PassFailed` naming the pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir, verify
from trtcompile.pm.base import Pass, PassContext
from trtcompile.pm.records import PassRecord


class VerificationFailed(Exception):
    """Raised by an instrument when a pass's output fails verification."""


class Instrument:
    """Observes a pipeline run. Override the hooks you need."""

    def before_pipeline(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Called once before the first pass."""

    def before_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, index: int) -> None:
        """Called before each pass run; ``index`` numbers runs from 1."""

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        """Called after each pass run with the manager's record. Raise to stop the pipeline."""


class DumpInstrument(Instrument):
    """Writes the IR before the first pass (``000_input.onnx``) and after each pass
    (``NNN_<pass>.onnx``) into ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.paths: list[Path] = []

    def before_pipeline(self, graph: gs.Graph, ctx: PassContext) -> None:
        self.paths.append(ir.save(ir.export_model(graph.copy()), self.directory / "000_input.onnx"))

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        path = self.directory / f"{record.index:03d}_{pass_.name}.onnx"
        self.paths.append(ir.save(ir.export_model(graph.copy()), path))


class VerifyInstrument(Instrument):
    """After each pass that changed the graph: the onnx checker on the exported model, then ONNX
    Runtime parity of the pass output against the pass input, on seeded inputs drawn from
    ``distribution`` (floating point: standard normal by default; see :mod:`trtcompile.verify`)
    at every size in ``verify.DYNAMIC_SIZES`` of the unknown dimensions ``input_shapes`` leaves
    open (or at ``shape_sets``, a compile's optimization-profile shapes). A failure stops the
    pipeline with :class:`~trtcompile.errors.PassFailed` naming the pass and the passes before it
    and saying what broke: the checker's message, an output whose shape or element type changed,
    values that differ, or the pass output not running on ONNX Runtime.
    """

    def __init__(self, atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0,
                 input_shapes: dict[str, Sequence[int]] | None = None,
                 distribution: Any = None,
                 shape_sets: Sequence[dict[str, Sequence[int]]] | None = None):
        self.atol = atol
        self.rtol = rtol
        self.seed = seed
        self.input_shapes = input_shapes
        self.distribution = distribution
        #: Input shape sets to check at (e.g. a compile's optimization profiles); None: every
        #: unknown dimension at each size of ``verify.DYNAMIC_SIZES``.
        self.shape_sets = [dict(s) for s in shape_sets] if shape_sets else None
        self._before = None

    def before_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, index: int) -> None:
        try:
            self._before = ir.export_model(graph.copy())
        except Exception as exc:
            raise VerificationFailed(f"the pass input cannot be exported as ONNX: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        if not record.changed:
            return
        try:
            after = ir.export_model(graph.copy())
        except Exception as exc:
            raise VerificationFailed(f"the pass output cannot be exported as ONNX: "
                                     f"{type(exc).__name__}: {exc}") from exc
        try:
            onnx.checker.check_model(after, full_check=False)
        except onnx.checker.ValidationError as exc:
            raise VerificationFailed(f"onnx checker: {str(exc).splitlines()[0]}") from None
        shape_sets = self.shape_sets or verify.dynamic_shape_sets(self._before, self.input_shapes)
        for position, shapes in enumerate(shape_sets):
            try:
                result = verify.compare_models(
                    self._before, after, atol=self.atol, rtol=self.rtol, seed=self.seed,
                    input_shapes=shapes, reference_name="pass input", candidate_name="pass output",
                    distribution=self.distribution)
            except verify.ModelRunError as exc:
                at = _shapes_text(exc.input_shapes)
                if exc.which == "pass output":
                    raise VerificationFailed(f"the pass output does not run on ONNX Runtime at "
                                             f"{at}: {exc.reason}") from None
                if position == 0:
                    raise VerificationFailed(f"the pass input does not run on ONNX Runtime at "
                                             f"{at}: {exc.reason}") from None
                continue  # the model's unknown dimensions do not take this size
            if result.passed:
                continue
            changed = [o.describe(name) for name, o in result.outputs.items() if o.change]
            if changed:
                raise VerificationFailed(f"output {'; '.join(changed)} (inputs at "
                                         f"{_shapes_text(result.input_shapes)})")
            raise VerificationFailed(f"output differs from the pass input: {result.summary()}")


def _shapes_text(shapes: dict[str, Sequence[int]]) -> str:
    return ", ".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())
