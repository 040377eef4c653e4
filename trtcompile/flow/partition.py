"""The partition stage: when TensorRT's parser rejects nodes (or the user excludes ops), one
engine per supported segment and the rest on ONNX Runtime (see :mod:`trtcompile.flow.partitioning`)."""

from __future__ import annotations

import time
from typing import Any

import onnx

from trtcompile import verify
from trtcompile.errors import CheckFailed, TrtcompileError
from trtcompile.flow.engine import support_settings
from trtcompile.flow.options import CompileOptions
from trtcompile.flow.parity import check_parity_at_shapes
from trtcompile.frontend import LoadedModel
from trtcompile.shapes import ProfilePlan


def partition_stage(loaded: LoadedModel, optimized: onnx.ModelProto, options: CompileOptions,
                    plan: ProfilePlan, seconds: dict[str, float]
                    ) -> tuple[Any, TrtcompileError | None]:
    """Partition the optimized model when TensorRT's parser rejects some of its nodes, when
    ``exclude_ops`` forces ops to fall back, or for ``partition_only``; otherwise (everything
    supported) return None and the compile builds one engine as usual.

    The outcome holds the partitioned model, the segment models and their engines in memory (the
    write stage writes them: ``partitioned.onnx``, ``segments/``, ``partitioned_ctx.onnx``); the
    partitioned model is checked against the input model on ONNX Runtime. Returns the outcome and
    the error the compile fails with (parity of the partitioned model, no engine at all)."""
    from trtcompile import backend
    from trtcompile.errors import BackendError
    from trtcompile.flow import partitioning

    log = options.log or (lambda message: None)
    asked = bool(options.partition_only or options.exclude_ops)
    if not (options.engine or asked):
        return None, None
    t0 = time.perf_counter()
    try:
        support = backend.query_support(optimized, model_dir=loaded.model_dir,
                                        **support_settings(options))
    except BackendError as exc:
        return (None, exc) if asked else (None, None)  # the engine stage reports it otherwise
    seconds["support"] = time.perf_counter() - t0
    if support.all_supported and not asked:
        return None, None
    if not support.all_supported:
        count = len(support.unsupported)
        trigger = f"TensorRT's parser rejects {count} node{'s' if count != 1 else ''}"
    else:
        trigger = "--partition-only" if options.partition_only else "--exclude-ops"
    dry_run = options.partition_only or not options.engine
    log(f"partitioning: {trigger}" + ("" if dry_run else "; one engine per segment"))
    shapes = dict(options.frontend.input_shapes) or None

    def feeds_at(at):
        return verify.feed_data(loaded.model, seed=options.seed, input_shapes=at or shapes)

    outcome = partitioning.run_partition(
        optimized, support=support, min_segment_size=options.min_segment_size,
        exclude_ops=options.exclude_ops, trigger=trigger, dry_run=dry_run,
        model_dir=loaded.model_dir, seed=options.seed, plan=plan, feeds_at=feeds_at,
        progress=options.progress, log=log, build=options.build)
    seconds.update({f"partition_{k}": v for k, v in outcome.seconds.items()})
    error: TrtcompileError | None = None
    if options.parity:
        log("checking parity of the partitioned model on ONNX Runtime")
        t0 = time.perf_counter()
        outcome.parity = check_parity_at_shapes(loaded, outcome.model, options, plan)
        for comparison in outcome.parity.comparisons:
            if comparison.candidate == "optimized":
                comparison.candidate = "partitioned"
        seconds["partition_parity"] = time.perf_counter() - t0
        if not outcome.parity.passed:
            error = CheckFailed("partitioned model: " + outcome.parity.error_message())
    if error is None and not dry_run:
        built = [s for s in outcome.segments if s.engine is not None]
        if not outcome.segments:
            error = BackendError(
                f"no segment of at least {options.min_segment_size} compute nodes that TensorRT "
                "supports: nothing to build (see partition.fallback in report.json)")
        elif not built:
            error = BackendError(f"no segment engine could be built: "
                                 f"{outcome.segments[0].name}: {outcome.segments[0].why_not_engine}")
    return outcome, error


