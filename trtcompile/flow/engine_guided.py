"""``engine-guided(...)``: keep each group of rewrites only where TensorRT builds a better engine.

A combinator (:class:`trtcompile.pm.Combinator`) of the compile flow, not of the pass
infrastructure: judging a candidate takes an engine build (:mod:`trtcompile.backend`) and its
arithmetic (:mod:`trtcompile.ir.cost`), which the pass manager knows nothing of. The flow registers it
in the built-in registry (:func:`trtcompile.flow.registry.builtin_registry`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.ir import cost
from trtcompile.errors import BackendError, TrtcompileError
from trtcompile.pm import Combinator, PassResult, PipelineRun

#: A judge: a graph to the compute layers of the engine TensorRT builds from it. Raises
#: :class:`~trtcompile.errors.TrtcompileError` when no engine can be built.
Judge = Callable[[gs.Graph], int]


@dataclass(frozen=True)
class EngineGuided(Combinator):
    """Keeps each group of rewrites only where TensorRT builds a better engine from it.

    Every element of ``elements`` (a pass, or a ``fixed-point`` group) is one candidate group. In
    order, each group runs on the graph as the groups kept so far left it; an engine is built from
    the result (TensorRT's own fusion verdict: its compute layers) and the group is kept when

    * the engine has fewer compute layers, and the MACs stay within ``1 + max_extra_macs`` times
      the fewest MACs the graph has had in ``engine-guided`` (its input's, or less once a kept
      group removed arithmetic, e.g. folding a constant subgraph); or
    * the engine has as many compute layers and the group adds no MACs (a neutral rewrite, such
      as folding or cleanup, which later groups may build on).

    MACs compare only states that price the same layers: a group after which fewer layers have
    unknown cost (folding made their shapes known) resets the MAC reference to its own figure.
    Otherwise the graph goes back to what it was before the group (with the MAC budgets the
    group's passes spent), with the reason recorded (``engine 85 -> 87 compute layers``). Builds
    are cached by graph fingerprint for the life of the manager, so a group that leaves the graph
    as an earlier state costs nothing; a group that changes nothing is kept without a build. At
    most ``max_builds`` engines are built and no build starts after ``max_seconds``; groups left
    then are not tried (recorded as skipped). When TensorRT cannot build the input itself there is
    no engine to judge by: every group runs and is kept, as the plain pipeline runs it, recorded
    as not judged (``groups_unjudged``); the compile then reports the build failure (or partitions
    the model when TensorRT's parser rejects nodes).

    The engine of each candidate is judged by ``judge`` when given, else by
    ``PassContext.resources["engine-guided"]`` when set (a callable from a graph to its engine's
    compute layers, e.g. one that builds with the compile's optimization profiles), else by a
    TensorRT build without profiles. Each run records itself (counts ``groups_kept``,
    ``groups_rejected``, ``engine_builds``, ...) and appends one entry per group tried to the
    report's ``engine_guided`` section.

    Worth it when the rewrites' effect on the engine is not known in advance: rewrites that add
    arithmetic to remove layers (``pad-kernels``, ``average-pool-conv-fusion``), and models
    unlike the ones the default pipeline was measured on. Each build takes seconds on a CPU, so
    a pipeline of N groups costs about N + 1 builds.
    """

    max_builds: int = 32
    max_seconds: float = 600.0
    max_extra_macs: float = 0.0
    #: The judge of candidates; None: the context's, else a TensorRT build. Not an option (it does
    #: not print in pipeline text) and not compared (two groups differing only here are equal).
    judge: Judge | None = field(default=None, compare=False, repr=False)
    name: ClassVar[str] = "engine-guided"
    report_section: ClassVar[str] = "engine_guided"
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("elements", "judge")

    def __post_init__(self) -> None:
        if self.max_builds < 1 or not self.max_seconds > 0 or not self.max_extra_macs >= 0:
            raise ValueError("max-builds must be >= 1, max-seconds > 0 and max-extra-macs >= 0")

    def run(self, graph: gs.Graph, run: PipelineRun, iteration: int | None) -> bool:
        """Try each group in turn; keep it or restore the graph as it was before it."""
        return _GuidedRun(self, graph, run, iteration).run()


class _GuidedRun:
    """One run of an :class:`EngineGuided` element: its budget, builds and MAC references."""

    def __init__(self, group: EngineGuided, graph: gs.Graph, run: PipelineRun,
                 iteration: int | None):
        self.group, self.graph, self.run_state, self.iteration = group, graph, run, iteration
        self.judge = group.judge or run.ctx.resources.get(EngineGuided.name) \
            or engine_compute_layers
        #: Engine compute layers by graph fingerprint, kept by the manager across its runs.
        self.cache = run.cache(EngineGuided.name)
        self.failures: dict[int, str] = {}
        self.builds = 0
        self.cache_hits = 0
        self.start = time.perf_counter()

    def engine_layers(self, fingerprint: int) -> int | None:
        """Compute layers of the graph's engine (cached); None when TensorRT cannot build it."""
        if fingerprint in self.cache:
            self.cache_hits += 1
            return self.cache[fingerprint]
        if fingerprint in self.failures:
            return None
        self.builds += 1
        try:
            layers = int(self.judge(self.graph))
        except TrtcompileError as error:
            self.failures[fingerprint] = str(error).splitlines()[0]
            return None
        self.cache[fingerprint] = layers
        return layers

    def run(self) -> bool:
        group, graph, state = self.group, self.graph, self.run_state
        layers_before, histogram_before = state.summary.layers, state.summary.histogram
        entry_fingerprint = state.fingerprint
        summary = cost.graph_macs(graph)
        baseline_macs = current_macs = summary.macs
        current_unpriced = len(summary.unknown)
        current_layers = self.engine_layers(state.fingerprint)
        result = PassResult()
        if current_layers is None:
            return self.run_unjudged(result, layers_before, histogram_before, entry_fingerprint)
        engine_before = current_layers
        for element in group.elements:
            text = element.to_text()
            if (self.builds >= group.max_builds
                    or time.perf_counter() - self.start >= group.max_seconds):
                result.reject(text, f"not tried: the budget (max-builds={group.max_builds}, "
                                    f"max-seconds={group.max_seconds:g}) is spent")
                result.count("groups_skipped")
                continue
            checkpoint = state.checkpoint(graph)
            ledger = cost.mac_ledger(graph, state.ctx.resources)
            ledger_before = (ledger.spent, list(ledger.entries))
            state.run_elements((element,), graph, self.iteration)
            result.count("groups_tried")
            if state.fingerprint == checkpoint.fingerprint:
                result.count("groups_unchanged")
                continue
            summary = cost.graph_macs(graph)
            macs, unpriced = summary.macs, len(summary.unknown)
            references = (baseline_macs, current_macs)
            if unpriced < current_unpriced:
                # The group made layers priceable (folding a shape computation): the MACs it
                # "adds" are those layers' own, so the new figure becomes the reference.
                baseline_macs = current_macs = max(macs, 1)
            layers = self.engine_layers(state.fingerprint)
            entry = {"group": text, "engine_before": current_layers, "engine_after": layers,
                     "macs_before": current_macs, "macs_after": macs}
            if layers is None:
                reason = f"TensorRT cannot build the result: {self.failures[state.fingerprint]}"
            elif macs > baseline_macs * (1.0 + group.max_extra_macs) and macs > current_macs:
                reason = (f"MACs {cost.format_macs(macs)} exceed max-extra-macs="
                          f"{group.max_extra_macs:g} of {cost.format_macs(baseline_macs)}")
            elif layers < current_layers or (layers == current_layers and macs <= current_macs):
                reason = ""
            elif layers == current_layers:
                reason = (f"engine {current_layers} -> {layers} compute layers at "
                          f"{cost.format_macs(macs - current_macs)} more MACs")
            else:
                reason = f"engine {current_layers} -> {layers} compute layers"
            entry["kept"] = not reason
            entry["reason"] = reason or "kept"
            state.section(group).append(entry)
            if reason:
                state.restore(graph, checkpoint)
                baseline_macs, current_macs = references
                ledger.spent, ledger.entries = ledger_before  # the undone rewrites spent nothing
                result.reject(text, reason)
                result.count("groups_rejected")
            else:
                current_layers, current_macs = layers, macs
                current_unpriced = unpriced
                baseline_macs = min(baseline_macs, macs)
                result.count("groups_kept")
        result.count("engine_builds", self.builds)
        if self.cache_hits:
            result.count("engine_cache_hits", self.cache_hits)
        result.count("engine_layers_before", engine_before)
        result.count("engine_layers_after", current_layers)
        changed = state.fingerprint != entry_fingerprint
        state.add_record(group, result, iteration=self.iteration, layers_before=layers_before,
                         histogram_before=histogram_before,
                         seconds=time.perf_counter() - self.start, changed=changed, graph=graph)
        return changed


    def run_unjudged(self, result: PassResult, layers_before: int,
                     histogram_before: dict[str, int], entry_fingerprint: int) -> bool:
        """TensorRT cannot build the input, so there is no engine to compare candidates with: every
        group runs and is kept, as the plain pipeline would run it, and the report says why (the
        compile then reports the build failure itself, or partitions the model)."""
        group, graph, state = self.group, self.graph, self.run_state
        error = self.failures[entry_fingerprint]
        why = "not judged: TensorRT cannot build the input; kept as the plain pipeline runs it"
        state.ctx.log(f"engine-guided: TensorRT cannot build the input ({error}): every group "
                      "runs unjudged")
        for element in group.elements:
            state.run_elements((element,), graph, self.iteration)
            state.section(group).append({"group": element.to_text(), "engine_before": None,
                                         "engine_after": None, "kept": True, "reason": why,
                                         "error": error})
            result.count("groups_unjudged")
        result.count("engine_builds", self.builds)
        changed = state.fingerprint != entry_fingerprint
        state.add_record(group, result, iteration=self.iteration, layers_before=layers_before,
                         histogram_before=histogram_before,
                         seconds=time.perf_counter() - self.start, changed=changed, graph=graph)
        return changed


def engine_compute_layers(graph: gs.Graph) -> int:
    """Compute layers of the engine TensorRT builds from ``graph`` (no optimization profiles): the
    judge of ``engine-guided`` when neither the element nor the context gives one."""
    # Imported here: TensorRT loads only when a build is judged.
    from trtcompile.backend import build_engine

    build = build_engine(ir.export_model(graph.copy()), progress=False)
    if not build.layer_report_available:
        raise BackendError("the builder reported no engine layers, so engines cannot be compared")
    return build.compute_layers
