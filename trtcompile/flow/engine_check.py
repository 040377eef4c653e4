"""The engine check: a compile never delivers a model whose engine has more compute layers than
TensorRT builds from the model as the passes received it.

Rewrites are written from measurements on the models they were measured on; on another exporter's
form a rewrite TensorRT usually rewards can cost it layers (a Transpose pushed through a
broadcast that TensorRT then copies twice). So, once the optimized model's engine is built, the
compile also builds the **baseline**: the input model with only the precision pass applied (the
input itself at FP32), so the two engines differ only by the rewrites. When the optimized engine
has more compute layers:

1. the pipeline runs again with its rewrite elements inside ``engine-guided(...)``
   (:class:`~trtcompile.flow.engine_guided.EngineGuided`, judged by builds made as the compile
   builds its engine): each group is kept only where the engine does not get worse, so the groups
   responsible are undone, each with its engine verdict (``engine 45 -> 53 compute layers``); the
   precision pass runs after them as before;
2. if that engine still has more compute layers than the baseline (or the pipeline cannot be
   regrouped: it already judges by engine, or a precision pass sits inside a group), the
   baseline itself is delivered.

Parity then checks the delivered model again. The report's ``engine_check`` says what happened,
with the builds and seconds it cost; the regrouped run is bounded by :data:`MAX_BUILDS` builds
and :data:`MAX_SECONDS`. ``--no-engine`` (no engine, nothing to compare) and
``--no-engine-check`` skip it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trtcompile.errors import BackendError
from trtcompile.flow.engine_guided import EngineGuided
from trtcompile.pm import Combinator, iter_passes

#: The passes that write a precision into the graph: the baseline runs only these.
PRECISION_PASSES = frozenset({"precision-fp16", "quantize-int8"})

#: Bounds of the regrouped run (engine builds, and no build starts after this many seconds).
MAX_BUILDS = 32
MAX_SECONDS = 600.0


@dataclass
class EngineCheck:
    """What the engine check found and did; ``report.json``'s ``engine_check``."""

    #: ``kept`` (the optimized engine is not worse), ``regrouped`` (groups undone),
    #: ``baseline delivered``, or ``not run`` (``reason`` says why).
    status: str
    reason: str | None = None
    baseline_layers: int | None = None
    optimized_layers: int | None = None
    delivered_layers: int | None = None
    #: Groups the regrouped run undid: ``{"group": text, "reason": engine verdict}``.
    undone: list[dict[str, Any]] = field(default_factory=list)
    builds: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason,
                "baseline_layers": self.baseline_layers,
                "optimized_layers": self.optimized_layers,
                "delivered_layers": self.delivered_layers, "undone": list(self.undone),
                "builds": self.builds, "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        """One line for the terminal."""
        if self.status == "not run":
            return f"engine check: not run ({self.reason})"
        head = (f"engine check: {self.optimized_layers} compute layers after the pipeline, "
                f"{self.baseline_layers} from the model as the passes received it")
        cost = f"{self.builds} build{'s' if self.builds != 1 else ''}, {self.seconds:.1f} s"
        if self.status == "kept":
            return f"{head}: kept ({cost})"
        if self.status == "regrouped":
            undone = "; ".join(f"{u['group']}: {u['reason']}" for u in self.undone)
            return (f"{head}: undid {len(self.undone)} group{'s' if len(self.undone) != 1 else ''}"
                    f" ({undone}), delivered {self.delivered_layers} ({cost})")
        return f"{head}: delivered the baseline, {self.delivered_layers} ({self.reason}; {cost})"


def split_precision(pipeline: Sequence) -> tuple[list, list] | None:
    """``(rewrites, precision passes)`` of the top-level elements, or None when a precision pass
    sits inside a combinator (the rewrites cannot be regrouped without it) or the pipeline
    already judges by engine."""
    rewrites, precision = [], []
    for element in pipeline:
        if isinstance(element, Combinator):
            if isinstance(element, EngineGuided) or baseline_pipeline(element.elements):
                return None
            rewrites.append(element)
        elif element.name in PRECISION_PASSES:
            precision.append(element)
        else:
            rewrites.append(element)
    return rewrites, precision


def baseline_pipeline(pipeline: Sequence) -> tuple:
    """The precision passes of ``pipeline`` (top level or nested), alone."""
    return tuple(p for p in iter_passes(pipeline) if p.name in PRECISION_PASSES)


def guided_pipeline(pipeline: Sequence) -> tuple | None:
    """``engine-guided(rewrites), precision passes``, or None when the pipeline cannot be
    regrouped (:func:`split_precision`)."""
    split = split_precision(pipeline)
    if split is None or not split[0]:
        return None
    rewrites, precision = split
    return (EngineGuided(elements=tuple(rewrites), max_builds=MAX_BUILDS,
                         max_seconds=MAX_SECONDS), *precision)


def compute_layers(build) -> int | None:
    """An engine build's compute layers, or None when the builder did not report its layers."""
    return int(build.compute_layers) if getattr(build, "layer_report_available", False) else None


def undone_groups(pipeline_report) -> list[dict[str, Any]]:
    """The groups a regrouped run undid, with their engine verdicts."""
    entries = pipeline_report.section(EngineGuided.report_section)
    return [{"group": entry["group"], "reason": entry["reason"]}
            for entry in entries if not entry.get("kept", True)]


def run_check(compilation: Any, optimize: Callable[..., tuple], log: Callable[[str], None]
              ) -> EngineCheck:
    """The check over a compilation whose engine is built (:class:`EngineCheck`); replaces the
    compilation's optimized model, pipeline report and engine when it delivers another."""
    c = compilation
    t0 = time.perf_counter()
    check = EngineCheck(status="not run")
    optimized_layers = compute_layers(c.engine)
    if optimized_layers is None:
        check.reason = "the builder reported no engine layers"
        return check
    log("building the engine of the model as the passes received it (engine check)")
    baseline_model, baseline_report = optimize(baseline_pipeline(c.pipeline))
    try:
        baseline_build = c.build(baseline_model, progress=False)
    except BackendError as exc:
        check.reason = f"TensorRT cannot build the input model: {str(exc).splitlines()[0]}"
        check.builds, check.seconds = 1, time.perf_counter() - t0
        return check
    check.builds = 1
    check.baseline_layers = compute_layers(baseline_build)
    check.optimized_layers = optimized_layers
    if check.baseline_layers is None:
        check.status, check.reason = "not run", "the builder reported no engine layers"
    elif optimized_layers <= check.baseline_layers:
        check.status, check.delivered_layers = "kept", optimized_layers
    else:
        _deliver_better(c, check, optimize, (baseline_model, baseline_report, baseline_build), log)
    check.seconds = time.perf_counter() - t0
    return check


def _deliver_better(c: Any, check: EngineCheck, optimize: Callable[..., tuple],
                    baseline: tuple, log: Callable[[str], None]) -> None:
    baseline_model, baseline_report, baseline_build = baseline
    guided = guided_pipeline(c.pipeline)
    if guided is not None:
        log(f"engine check: {check.optimized_layers} compute layers after the pipeline, "
            f"{check.baseline_layers} before it: running the pipeline again, judged by engine")
        model, report = optimize(guided)
        record = next((r for r in report.records if r.name == EngineGuided.name), None)
        check.builds += int(record.counts.get("engine_builds", 0)) if record else 0
        try:
            build = c.build(model, progress=False)
            check.builds += 1
            layers = compute_layers(build)
        except BackendError:
            layers = None
        if layers is not None and layers <= check.baseline_layers:
            check.status, check.delivered_layers = "regrouped", layers
            check.undone = undone_groups(report)
            c.optimized, c.pipeline_report, c.engine = model, report, build
            return
        check.reason = (f"the pipeline judged by engine still builds {layers} compute layers"
                        if layers is not None else "the pipeline judged by engine does not build")
    else:
        check.reason = ("the pipeline already judges by engine or nests its precision pass, so "
                        "its groups cannot be judged one by one")
    check.status, check.delivered_layers = "baseline delivered", check.baseline_layers
    c.optimized, c.pipeline_report, c.engine = baseline_model, baseline_report, baseline_build


__all__ = ["EngineCheck", "MAX_BUILDS", "MAX_SECONDS", "PRECISION_PASSES", "baseline_pipeline",
           "compute_layers", "guided_pipeline", "run_check", "split_precision", "undone_groups"]
