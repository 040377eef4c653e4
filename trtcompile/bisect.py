"""``trtcompile bisect``: find the pass, then the rewrite, that breaks a model; or the segment of a
graph TensorRT cannot build.

Rewrites. Every built-in rewrite site asks :meth:`PassContext.may_rewrite` before it touches the
graph, and the context grants at most ``rewrite_limit`` rewrites (LLVM's ``-opt-bisect-limit``).
:func:`bisect_rewrites` compiles the model through the compile flow's stages
(:class:`~trtcompile.flow.Compilation`: its pipeline with the precision pass, its parity and its
engine builds) and:

1. runs the whole pipeline, keeping the model after every pass run and the rewrites each run was
   granted; when the result passes parity (and builds) there is nothing to find;
2. binary-searches the pass runs for the first one whose output fails (the pass to blame);
3. binary-searches the rewrite limit inside that run's rewrites for the first limit at which the
   pipeline's output fails: that rewrite is the culprit. The outputs at the limit just below and
   at it are the graph just before and just after that one rewrite.

A pass that does not consult the limit is still found by step 2; the report then says so and the
pair written is the pass's input and output.

Segments (``--engine``): :func:`bisect_engine` takes the optimized model's nodes in topological
order and finds the shortest prefix TensorRT rejects, then the shortest suffix of that prefix it
still rejects: the contiguous node range (extracted with ``onnx.utils.Extractor``) that makes the
build fail.

A failure is a parity failure, an error running either model on ONNX Runtime, a pass raising, or
(unless the engine is off) TensorRT rejecting the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from trtcompile import ir
from trtcompile.errors import BackendError, CheckFailed, InputError, PassFailed, TrtcompileError
from trtcompile.flow import Compilation, CompileOptions
from trtcompile.flow.culprits import first_failing as _first
from trtcompile.flow.culprits import segment_model
from trtcompile.pm import Instrument, Rewrite

#: Files ``trtcompile bisect`` writes into its output folder.
BEFORE_ONNX = "before.onnx"
AFTER_ONNX = "after.onnx"
SEGMENT_ONNX = "segment.onnx"


@dataclass
class RewriteVerdict:
    """What :func:`bisect_rewrites` found."""

    failure: str  #: how the full pipeline's output fails
    pass_index: int  #: the pass run to blame, numbered from 1 as in reports
    pass_text: str
    rewrite: Rewrite | None  #: None when the pass does not consult the rewrite limit
    checks: int  #: compiles checked during the search
    before: onnx.ModelProto
    after: onnx.ModelProto
    after_failure: str

    def lines(self) -> list[str]:
        """The verdict as the CLI prints it."""
        lines = [f"pipeline output fails: {self.failure}",
                 f"first failing pass: #{self.pass_index} {self.pass_text}"]
        if self.rewrite is None:
            lines.append("the pass does not consult the rewrite limit (ctx.may_rewrite): "
                         "before/after are its input and output")
        else:
            lines += [f"first failing rewrite: #{self.rewrite.index} rule {self.rewrite.rule} "
                      f"of {self.rewrite.pass_name}",
                      f"  nodes: {', '.join(self.rewrite.nodes) or '(none named)'}"]
        lines += [f"after it: {self.after_failure}", f"checks: {self.checks} compiles"]
        return lines


@dataclass
class SegmentVerdict:
    """What :func:`bisect_engine` found: nodes ``[start, stop)`` in topological order."""

    start: int
    stop: int
    nodes: list[tuple[str, str]]  #: (name, op) of each node of the segment
    error: str
    checks: int
    segment: onnx.ModelProto

    def lines(self) -> list[str]:
        shown = ", ".join(f"{name} ({op})" for name, op in self.nodes)
        return [f"TensorRT rejects nodes {self.start}..{self.stop - 1} in topological order: "
                f"{shown}", f"  {self.error}", f"checks: {self.checks} builds"]


class _Snapshots(Instrument):
    """Keeps the model after every pass run and how many rewrites had been granted by then."""

    def __init__(self):
        self.ctx = None  # the run's context: its rewrite log outlives a pass that raises
        self.models: list[onnx.ModelProto] = []
        self.texts: list[str] = []
        self.rewrites_after: list[int] = []

    def before_pass(self, pass_, graph, ctx, index) -> None:
        self.ctx = ctx

    def after_pass(self, pass_, graph, ctx, record) -> None:
        self.models.append(ir.export_model(graph.copy()))
        self.texts.append(record.text)
        self.rewrites_after.append(len(ctx.rewrites))


class _Context(Instrument):
    """Keeps the run's context, whose rewrite log outlives a pass that raises."""

    def __init__(self):
        self.ctx = None

    def before_pass(self, pass_, graph, ctx, index) -> None:
        self.ctx = ctx


@dataclass
class _Checker:
    """Compiles and judges: None when the model passes, else the failure in one line."""

    compilation: Compilation
    checks: int = 0

    def optimized(self, limit: int | None, instruments: Sequence[Instrument] = ()
                  ) -> tuple[onnx.ModelProto | None, str | None, list[Rewrite]]:
        """The pipeline's output under ``limit`` and the rewrites granted (None, the failure and
        the rewrites granted until then when a pass raises: the last one may be what crashed)."""
        self.checks += 1
        context = _Context()
        try:
            model, report = self.compilation.optimize(rewrite_limit=limit,
                                                      instruments=[*instruments, context])
        except PassFailed as exc:
            return None, str(exc), list(context.ctx.rewrites) if context.ctx is not None else []
        return model, self.judge(model), report.rewrites

    def judge(self, model: onnx.ModelProto) -> str | None:
        from polygraphy.logger import G_LOGGER

        severity = G_LOGGER.module_severity
        G_LOGGER.module_severity = G_LOGGER.CRITICAL  # each failing step would print a mismatch
        try:
            return self._judge(model)
        finally:
            G_LOGGER.module_severity = severity

    def _judge(self, model: onnx.ModelProto) -> str | None:
        try:
            verdict = self.compilation.parity_of(model)
        except TrtcompileError:
            raise
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime rejecting the model is the finding
            return f"ONNX Runtime cannot run it: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if not verdict.passed:
            return verdict.error_message()
        if self.compilation.options.engine:
            try:
                self.compilation.build(model)
            except BackendError as exc:
                return f"TensorRT: {exc}"
        return None


def bisect_rewrites(source: str | Path, options: CompileOptions) -> RewriteVerdict | None:
    """The first pass run and rewrite after which ``source`` fails; None when nothing fails.

    Raises CheckFailed when the model fails with no pass run at all (the input itself).
    """
    compilation = Compilation(source, options)
    loaded = compilation.load()
    checker = _Checker(compilation)

    snapshots = _Snapshots()
    final, failure, _ = checker.optimized(None, [snapshots])
    if failure is None:
        return None
    input_failure = checker.judge(loaded.model)
    if input_failure is not None:
        raise CheckFailed(f"the input model fails before any pass runs ({input_failure}); "
                          "nothing to bisect over the passes (try --engine)")

    # 2. The first pass run whose output fails. A pass that raises has no snapshot: it is the run
    # after the last one kept.
    runs = len(snapshots.models)
    failures: dict[int, str | None] = {0: None}

    def run_fails(index: int) -> bool:
        if index > runs:
            return True
        if index not in failures:
            checker.checks += 1
            failures[index] = checker.judge(snapshots.models[index - 1])
        return failures[index] is not None

    last = runs + 1 if final is None else runs
    if final is not None:
        failures[runs] = failure
    pass_index = _first(0, last, run_fails)
    before_pass = loaded.model if pass_index == 1 else snapshots.models[pass_index - 2]
    granted_before = 0 if pass_index == 1 else snapshots.rewrites_after[pass_index - 2]
    if pass_index <= runs:
        pass_text = snapshots.texts[pass_index - 1]
        granted_by = snapshots.rewrites_after[pass_index - 1]
        after_pass, after_failure = snapshots.models[pass_index - 1], failures[pass_index]
    else:  # the pass raised: it ran up to the rewrite that crashed it
        pass_text = _raising_pass(failure)
        granted_by = None
        after_pass, after_failure = before_pass, failure

    # 3. The first rewrite inside it: the least limit at which the pipeline's output fails.
    outcomes: dict[int, tuple[onnx.ModelProto | None, str | None, list[Rewrite]]] = {}

    def limit_fails(limit: int) -> bool:
        if limit not in outcomes:
            outcomes[limit] = checker.optimized(limit)
        return outcomes[limit][1] is not None

    if granted_by is None:  # how far the raising pass got is in the full run's log
        granted_by = len(snapshots.ctx.rewrites) if snapshots.ctx is not None else 0
    if granted_by > granted_before and not limit_fails(granted_before) and limit_fails(granted_by):
        limit = _first(granted_before, granted_by, limit_fails)
        before_model = outcomes[limit - 1][0]
        after_model, after_failure, rewrites = outcomes[limit]
        rewrite = rewrites[limit - 1]
        return RewriteVerdict(failure, pass_index, pass_text, rewrite, checker.checks,
                              before_model if before_model is not None else before_pass,
                              after_model if after_model is not None else before_pass,
                              after_failure or "")
    return RewriteVerdict(failure, pass_index, pass_text, None, checker.checks, before_pass,
                          after_pass, after_failure or "")


def _raising_pass(message: str) -> str:
    text = message.split("pass '", 1)[-1]
    return text.split("' failed", 1)[0]


# --------------------------------------------------------------------------------------------
# Engine segments
# --------------------------------------------------------------------------------------------


def bisect_engine(source: str | Path, options: CompileOptions) -> SegmentVerdict | None:
    """The shortest contiguous node range of the optimized model TensorRT rejects; None when the
    whole model builds."""
    compilation = Compilation(source, options)
    compilation.load()
    optimized, _ = compilation.optimize()
    model = onnx.shape_inference.infer_shapes(optimized, data_prop=True)
    size = len(model.graph.node)
    checks = 0
    errors: dict[tuple[int, int], str | None] = {}

    def build_error(start: int, stop: int) -> str | None:
        nonlocal checks
        if (start, stop) not in errors:
            checks += 1
            try:
                part = model if (start, stop) == (0, size) else segment_model(model, start, stop)
                compilation.build(part, progress=False)
                errors[start, stop] = None
            except BackendError as exc:
                errors[start, stop] = str(exc)
        return errors[start, stop]

    if size == 0 or build_error(0, size) is None:
        return None
    # The shortest failing prefix [0, stop), then the latest start that still fails with it.
    stop = _first(0, size, lambda k: build_error(0, k) is not None)
    if build_error(stop - 1, stop) is not None:
        start = stop - 1
    else:  # the least start at which [start, stop) builds, minus one
        start = _first(0, stop - 1, lambda k: build_error(k, stop) is None) - 1
    nodes = [(node.name, node.op_type) for node in list(model.graph.node)[start:stop]]
    segment = model if (start, stop) == (0, size) else segment_model(model, start, stop)
    return SegmentVerdict(start, stop, nodes, build_error(start, stop) or "", checks, segment)


def write_pair(output_dir: Path, verdict: RewriteVerdict) -> list[Path]:
    """Write the before/after pair of a rewrite verdict (ir.save: readable by ONNX Runtime)."""
    return [ir.save(verdict.before, output_dir / BEFORE_ONNX),
            ir.save(verdict.after, output_dir / AFTER_ONNX)]


def check_source(source: str | Path) -> None:
    """Refuse a model path that does not exist before anything runs."""
    if not Path(source).exists():
        raise InputError(f"model not found: {source}")


__all__ = ["RewriteVerdict", "SegmentVerdict", "bisect_engine", "bisect_rewrites",
           "segment_model", "write_pair"]
