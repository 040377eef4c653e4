"""The pass manager: runs a pipeline on a graph, records what each pass did, calls instruments.

:class:`PassManager` is handed its registry (it imports no pass); :class:`PipelineRun` is the state
of one run, through which combinators run their nested pipelines, so the manager itself tells apart
only passes and combinators, never one combinator from another.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.errors import InputError, PassFailed, PipelineError, TrtcompileError
from trtcompile.pm.base import Pass, PassContext, PassResult, Rewrite
from trtcompile.pm.instruments import Instrument, VerificationFailed
from trtcompile.pm.pipeline import (
    Combinator,
    Pipeline,
    PipelineElement,
    iter_combinators,
    parse_pipeline,
    print_pipeline,
)
from trtcompile.pm.records import PassRecord, PipelineReport
from trtcompile.pm.registry import PassRegistry


class PassManager:
    """Runs a pipeline on a graph and records what each pass did.

    >>> pm = PassManager("fold-constants,dead-layer-elimination", registry=registry)
    >>> report = pm.run(graph)            # graph is rewritten in place
    >>> [(r.name, r.layers_before, r.layers_after) for r in report.records]

    ``pipeline`` is text (parsed with ``registry``) or elements. Without a ``registry`` only
    element sequences (and the empty text) are accepted: this layer knows no built-in pass
    (:class:`trtcompile.pass_manager.PassManager` defaults to the built-in registry).
    """

    def __init__(self, pipeline: str | Sequence[PipelineElement] = (), *,
                 registry: PassRegistry | None = None,
                 instruments: Sequence[Instrument] = (),
                 ctx: PassContext | None = None):
        if isinstance(pipeline, str):
            if registry is None and pipeline.strip() not in ("", "none"):
                raise PipelineError(f"pipeline text needs a registry to look its names up in: "
                                    f"'{pipeline}'")
            pipeline = parse_pipeline(pipeline, registry or PassRegistry())
        self.registry = registry or PassRegistry()
        self.pipeline: Pipeline = tuple(pipeline)
        self.instruments = list(instruments)
        self.ctx = ctx or PassContext()
        #: What combinators keep across runs of this manager, by key (see :meth:`PipelineRun.cache`).
        self.caches: dict[str, dict[Any, Any]] = {}

    @property
    def text(self) -> str:
        """The pipeline as canonical text."""
        return print_pipeline(self.pipeline)

    def run(self, graph: gs.Graph) -> PipelineReport:
        """Run the pipeline on ``graph`` (in place) and return the report."""
        report = PipelineReport(pipeline=self.text)
        for cls in [*self.registry.combinators(), *map(type, iter_combinators(self.pipeline))]:
            if cls.report_section:
                report.sections.setdefault(cls.report_section, [])
        summary = ir.summarize(graph)
        report.layers_before, report.histogram_before = summary.layers, dict(summary.histogram)
        report.input_node_names = [node.name for node in graph.nodes]
        for instrument in self.instruments:
            try:
                instrument.before_pipeline(graph, self.ctx)
            except TrtcompileError:
                raise
            except Exception as exc:
                raise InputError(f"{type(instrument).__name__} could not start: "
                                 f"{type(exc).__name__}: {exc}") from exc
        start = time.perf_counter()
        first_rewrite = len(self.ctx.rewrites)
        # Rewrites allocate many small objects; on 100k-node graphs Python's cyclic collector then
        # runs often and costs several times the rewrites themselves. It is off during the run;
        # the garbage is left to Python's next collection after it (2.5 s at 100k nodes:
        # docs/benchmarks.md, "deferred collection").
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            if self.instruments:
                # Instruments observe, but the first pass's "before" is the graph as it receives
                # it, not as the report's "before" (taken ahead of them) saw it.
                summary = ir.summarize(graph)
            run = PipelineRun(self, report, summary=summary, structure=ir.Structure(graph))
            run.run_elements(self.pipeline, graph, iteration=None)
            report.provenance = {name: list(origins) for name, origins in run.provenance.items()}
        finally:
            if gc_was_enabled:
                gc.enable()
        report.seconds = time.perf_counter() - start
        report.rewrites = self.ctx.rewrites[first_rewrite:]
        # The graph as the last element left it (a combinator that restored a checkpoint left
        # the checkpoint's summary).
        report.layers_after = run.summary.layers
        report.histogram_after = dict(run.summary.histogram)
        return report


@dataclass
class Checkpoint:
    """What :meth:`PipelineRun.restore` puts back: a copy of the graph, the run's trace of it and
    the number of records then."""

    graph: gs.Graph
    summary: ir.GraphSummary
    structure: ir.Structure
    provenance: dict[str, tuple[str, ...]]
    records: int

    @property
    def fingerprint(self) -> int:
        """The fingerprint of the graph at the checkpoint."""
        return self.summary.fingerprint


class PipelineRun:
    """The state of one pipeline run: the report being written, the summary (fingerprint, layers,
    op histogram) of the graph as the last element left it, and the provenance traced so far.
    Combinators run their nested elements with :meth:`run_elements` and may :meth:`checkpoint`
    and :meth:`restore` the graph; they change it in no other way.

    The graph is summarized once after every pass run, in one walk (:func:`ir.summarize
    <trtcompile.ir.summary.summarize>`): that summary is the record's "after" and the next
    pass's "before", and comparing its fingerprint with the previous one tells ``changed``.

    A pass that declares the ops its rewrites start from (:attr:`Pass.needs_ops
    <trtcompile.pm.base.Pass.needs_ops>`) is not run on a graph that holds none of them in any
    scope (the summary lists them): its record says so (``skipped``), and the graph is not walked
    again. On a convolutional network most of the default pipeline's layout and attention passes
    are such runs.

    A pass is a function of the graph, its options and the run's context. So when a pass left a
    graph unchanged, the same pass (same options) on a graph of the same fingerprint, later in the
    same run, would leave it unchanged again with the same result: that run is not repeated (nor
    the walk after it), and its record repeats the earlier run's counts, rejections, tables and log
    lines, and the rewrites it was granted (:meth:`PassContext.may_rewrite
    <trtcompile.pm.base.PassContext.may_rewrite>`) are granted again. A fixed point's last
    iteration is mostly such runs. A run that had a rewrite refused, or that asked for one under a
    rewrite limit, is always repeated: the limit may answer differently. Restoring a checkpoint
    forgets every result: what the undone runs spent outside the graph (a MAC budget) stays."""

    def __init__(self, manager: PassManager, report: PipelineReport, summary: ir.GraphSummary,
                 structure: ir.Structure):
        self.manager = manager
        self.report = report
        self.ctx = manager.ctx
        #: The graph's summary after the last element run (fingerprint changes tell ``changed``).
        self.summary = summary
        #: The graph's structure after the last pass that changed it, and the provenance of its
        #: nodes (see :attr:`PipelineReport.provenance`; names missing stand for themselves).
        self.structure = structure
        self.provenance: dict[str, tuple[str, ...]] = {}
        #: Results of pass runs that left the graph unchanged, with their log lines and granted
        #: rewrites, by pass and the graph they ran on (:meth:`_unchanged_key`).
        self.unchanged: dict[tuple, tuple[PassResult, list[str], list[Rewrite]]] = {}

    @property
    def fingerprint(self) -> int:
        """The fingerprint of the graph as the last element left it."""
        return self.summary.fingerprint

    # For combinators --------------------------------------------------------------------------

    def run_elements(self, elements: Sequence[PipelineElement], graph: gs.Graph,
                     iteration: int | None) -> bool:
        """Run ``elements`` in order on ``graph``; whether any changed it. Passes are recorded with
        ``iteration``; combinators run themselves."""
        changed_any = False
        for element in elements:
            if isinstance(element, Combinator):
                changed_any |= bool(element.run(graph, self, iteration))
            else:
                changed_any |= self._run_pass(element, graph, iteration)
        return changed_any

    def previous(self) -> list[str]:
        """Text of the passes recorded so far (what a failure names as run before it)."""
        return [record.text for record in self.report.records]

    def section(self, combinator: Combinator) -> list[dict[str, Any]]:
        """The report's list ``combinator`` appends its entries to (its ``report_section``)."""
        return self.report.sections.setdefault(combinator.report_section or combinator.name, [])

    def cache(self, key: str) -> dict[Any, Any]:
        """A dict the manager keeps across its runs (one manager, one process: graph fingerprints
        are not stable across processes), e.g. engine builds by graph fingerprint."""
        return self.manager.caches.setdefault(key, {})

    def checkpoint(self, graph: gs.Graph) -> Checkpoint:
        """Remember ``graph`` as it is now, with the run's trace of it."""
        return Checkpoint(graph.copy(), self.summary, self.structure, dict(self.provenance),
                          len(self.report.records))

    def restore(self, graph: gs.Graph, checkpoint: Checkpoint) -> None:
        """Make ``graph`` (in place: callers hold it) what it was at ``checkpoint``, with the run's
        trace, and drop the records of the elements run since (they no longer shaped it)."""
        graph.__dict__.clear()
        graph.__dict__.update(checkpoint.graph.__dict__)
        self.summary = checkpoint.summary
        self.structure, self.provenance = checkpoint.structure, dict(checkpoint.provenance)
        del self.report.records[checkpoint.records:]
        # What the undone runs left behind outside the graph (a MAC budget they spent) stays: a
        # pass may now act otherwise on a graph it left unchanged before.
        self.unchanged.clear()

    def add_record(self, element: Combinator, result: PassResult, *, iteration: int | None,
                   layers_before: int, histogram_before: dict[str, int], seconds: float,
                   changed: bool, graph: gs.Graph) -> PassRecord:
        """Record one run of ``element`` (a combinator accounting for itself like a pass): its
        counts and rejections in ``result``, the layers and histogram before it; after it, the
        graph is as the last element it ran (or the checkpoint it restored) left it."""
        after = self.summary
        record = PassRecord(
            index=len(self.report.records) + 1, name=element.name, text=element.to_text(),
            options=element.options(), iteration=iteration, layers_before=layers_before,
            layers_after=after.layers, seconds=seconds, changed=changed,
            histogram_delta=ir.histogram_delta(histogram_before, after.histogram),
            counts=dict(result.counts), rejections=list(result.rejections),
            tables={k: list(v) for k, v in result.tables.items()})
        self.report.records.append(record)
        return record

    # Passes ----------------------------------------------------------------------------------

    @staticmethod
    def _unchanged_key(pass_: Pass, graph: gs.Graph, summary: ir.GraphSummary) -> tuple | None:
        """What a pass run's result depends on: the pass (its type and options) and the graph (its
        fingerprint, and the opsets, which the fingerprint leaves out); None for a pass whose
        options do not hash."""
        domains = tuple((entry.domain, entry.version)
                        for entry in getattr(graph, "import_domains", None) or ())
        key = (type(pass_), pass_, summary.fingerprint, graph.opset, domains)
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def _run_pass(self, pass_: Pass, graph: gs.Graph, iteration: int | None) -> bool:
        report, ctx = self.report, self.ctx
        index = len(report.records) + 1
        previous = self.previous()
        before = self.summary  # the graph as the last element left it
        for instrument in self.manager.instruments:
            _instrument_hook(instrument.before_pass, pass_, previous, graph, ctx, index)
        key = self._unchanged_key(pass_, graph, before)
        known = self.unchanged.get(key) if key is not None else None
        start = time.perf_counter()
        skipped = ""
        if pass_.needs_ops and pass_.needs_ops.isdisjoint(before.ops):
            skipped = f"no {' or '.join(sorted(pass_.needs_ops))} in the graph"
            result, seconds, after, changed = PassResult(), 0.0, before, False
        elif known is not None:
            result, lines, granted = known
            ctx.current_pass = pass_.name
            for line in lines:
                ctx.log(line)
            for rewrite in granted:
                ctx.rewrites.append(Rewrite(len(ctx.rewrites) + 1, pass_.name, rewrite.rule,
                                            rewrite.nodes))
            seconds = time.perf_counter() - start
            after, changed = before, False
        else:
            result, repeatable, seconds = self._execute(pass_, graph, previous)
            try:
                after = ir.summarize(graph)
            except Exception as exc:  # a graph the manager cannot even read is the pass's bug
                raise PassFailed(pass_.to_text(), previous, f"left a graph that cannot be read: "
                                                            f"{type(exc).__name__}: {exc}") from exc
            changed = after.fingerprint != before.fingerprint
            if not changed and key is not None and repeatable is not None:
                self.unchanged[key] = (result, *repeatable)
        self.summary = after
        if changed:
            structure = ir.Structure(graph)
            self.provenance = ir.trace_provenance(self.structure, structure, self.provenance)
            self.structure = structure
        record = PassRecord(
            index=index, name=pass_.name, text=pass_.to_text(), options=pass_.options(),
            iteration=iteration, layers_before=before.layers, layers_after=after.layers,
            seconds=seconds, changed=changed,
            histogram_delta=ir.histogram_delta(before.histogram, after.histogram),
            counts=dict(result.counts), rejections=list(result.rejections),
            # a repeated result's rows are copies: each record owns its own
            tables={k: copy.deepcopy(v) if known else list(v) for k, v in result.tables.items()},
            skipped=skipped,
        )
        report.records.append(record)
        for instrument in self.manager.instruments:
            _instrument_hook(instrument.after_pass, pass_, previous, graph, ctx, record)
        return changed

    def _execute(self, pass_: Pass, graph: gs.Graph, previous: list[str]
                 ) -> tuple[PassResult, tuple[list[str], list[Rewrite]] | None, float]:
        """Run the pass: its result; the lines it logged and the rewrites it was granted, or None
        when a later run could not repeat them (a rewrite was refused, or may be under a limit);
        and its seconds."""
        ctx = self.ctx
        log, lines = ctx.log, []
        rewrites, refused = len(ctx.rewrites), ctx.refused

        def log_and_keep(line: str) -> None:
            lines.append(line)
            log(line)

        ctx.log = log_and_keep
        start = time.perf_counter()
        ctx.current_pass = pass_.name
        try:
            result = pass_.run(graph, ctx)
        except TrtcompileError:
            raise  # a pass reporting unusable input (e.g. stale calibration data): the user's to fix
        except Exception as exc:  # a pass that raises is a compiler bug: name it, keep the cause
            raise PassFailed(pass_.to_text(), previous, f"{type(exc).__name__}: {exc}") from exc
        finally:
            ctx.log = log
        seconds = time.perf_counter() - start
        if not isinstance(result, PassResult):
            raise PassFailed(pass_.to_text(), previous,
                             f"run() returned {type(result).__name__}, expected PassResult")
        granted = ctx.rewrites[rewrites:]
        if ctx.refused != refused or (granted and ctx.rewrite_limit is not None):
            return result, None, seconds
        return result, (lines, granted), seconds


def _instrument_hook(hook: Callable[..., None], pass_: Pass, previous: list[str],
                     *args: Any) -> None:
    """Call an instrument hook; what it raises becomes PassFailed naming the pass (a
    verification's finding, or an instrument that broke on the pass's graph)."""
    try:
        hook(pass_, *args)
    except VerificationFailed as exc:
        raise PassFailed(pass_.to_text(), previous, str(exc)) from None
    except TrtcompileError:
        raise
    except Exception as exc:
        owner = type(getattr(hook, "__self__", hook)).__name__
        raise PassFailed(pass_.to_text(), previous,
                         f"{owner} raised {type(exc).__name__}: {exc}") from exc
