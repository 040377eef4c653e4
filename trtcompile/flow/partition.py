"""The partition stage: when TensorRT's parser rejects nodes, its builder fails on nodes the
parser accepts, or the user excludes ops, one engine per supported segment and the rest on ONNX
Runtime (see :mod:`trtcompile.flow.partitioning` and :mod:`trtcompile.flow.culprits`)."""

from __future__ import annotations

import time
from typing import Any

import onnx

from trtcompile.errors import CheckFailed, TrtcompileError
from trtcompile.flow import culprits, inputs
from trtcompile.flow import engine as engine_stage
from trtcompile.flow.engine import support_settings
from trtcompile.flow.options import CompileOptions
from trtcompile.flow.parity import check_parity_at_shapes
from trtcompile.frontend import LoadedModel
from trtcompile.shapes import ProfilePlan


def partition_stage(loaded: LoadedModel, optimized: onnx.ModelProto, options: CompileOptions,
                    plan: ProfilePlan, seconds: dict[str, float], *,
                    built: dict[str, Any] | None = None,
                    judge: dict[str, Any] | None = None) -> tuple[Any, TrtcompileError | None]:
    """Partition the optimized model when TensorRT's parser rejects some of its nodes, when its
    builder fails on some, when ``exclude_ops`` forces ops to fall back, or for
    ``partition_only``; otherwise return None and the compile builds one engine as usual.

    When the parser accepts every node and the engine is on, the whole model is built here: a
    build that succeeds is the compile's engine (put in ``built["engine"]`` for the engine stage
    to take instead of building it again; without ``built`` the engine stage builds it again). A
    build that fails is searched for the node the builder fails on
    (:func:`trtcompile.flow.culprits.find_build_culprit`), and the model is partitioned with that
    node on ONNX Runtime, the builder's words as its reason (as for a segment whose build fails,
    see :func:`trtcompile.flow.partitioning.run_partition`).

    The outcome holds the partitioned model, the segment models and their engines in memory (the
    write stage writes them: ``partitioned.onnx``, ``segments/``, ``partitioned_ctx.onnx``); the
    partitioned model is checked against the input model on ONNX Runtime (on what ``judge``
    gives: the keyword arguments ``samples``/``ranges`` of
    :func:`~trtcompile.flow.parity.check_parity_at_shapes`). Returns the outcome and
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
    failures: dict[str, str] = {}
    if support.all_supported and not asked:
        log("building the TensorRT engine")
        t0 = time.perf_counter()
        try:
            engine = engine_stage.build_engine(optimized, loaded, options, plan)
        except BackendError as exc:
            if not str(exc).startswith(culprits.BUILD_FAILURE):
                return None, None  # not a node's doing: the engine stage reports it
            error_text = str(exc)
        else:
            seconds["engine"] = time.perf_counter() - t0
            if built is not None:
                built["engine"] = engine
            return None, None
        log("TensorRT's parser accepts every node but the engine build fails: finding the "
            "node it fails on")
        culprit = culprits.find_build_culprit(
            optimized, _whole_model_builder(loaded, options, plan), error_text)
        seconds["build_culprits"] = time.perf_counter() - t0
        if culprit is None:
            return None, None
        log(f"  {culprit.node} ({culprit.op}) after {culprit.builds + 1} builds: it runs on "
            "ONNX Runtime")
        failures[culprit.node] = culprit.reason
    if failures:
        trigger = (f"TensorRT's builder fails on {len(failures)} node"
                   f"{'s' if len(failures) != 1 else ''} its parser accepts")
    elif not support.all_supported:
        count = len(support.unsupported)
        trigger = f"TensorRT's parser rejects {count} node{'s' if count != 1 else ''}"
    else:
        trigger = "--partition-only" if options.partition_only else "--exclude-ops"
    dry_run = options.partition_only or not options.engine
    log(f"partitioning: {trigger}" + ("; no engine is built, so segments that TensorRT's "
                                      "builder fails on are not found" if dry_run
                                      else "; one engine per segment"))
    given = inputs.compile_inputs(loaded, options)

    def feeds_at(at):
        return inputs.feeds_for(loaded, options, at, given)

    outcome = partitioning.run_partition(
        optimized, support=support, min_segment_size=options.min_segment_size,
        exclude_ops=options.exclude_ops, trigger=trigger, dry_run=dry_run,
        model_dir=loaded.model_dir, seed=options.seed, plan=plan, feeds_at=feeds_at,
        progress=options.progress, log=log, build_failures=failures,
        workspace_bytes=options.workspace_bytes, build=options.build)
    if failures:  # the whole model's build and the search that blamed a node
        outcome.build_checks += 1 + culprit.builds
    seconds.update({f"partition_{k}": v for k, v in outcome.seconds.items()})
    error: TrtcompileError | None = None
    if options.parity:
        log("checking parity of the partitioned model on ONNX Runtime")
        t0 = time.perf_counter()
        outcome.parity = check_parity_at_shapes(loaded, outcome.model, options, plan,
                                                **(judge or {}))
        for comparison in outcome.parity.comparisons:
            if comparison.candidate == "optimized":
                comparison.candidate = "partitioned"
        seconds["partition_parity"] = time.perf_counter() - t0
        if not outcome.parity.passed:
            error = CheckFailed("partitioned model: " + outcome.parity.error_message())
    if error is None and not dry_run:
        built_segments = [s for s in outcome.segments if s.engine is not None]
        if not outcome.segments:
            error = BackendError(
                f"no segment of at least {options.min_segment_size} compute nodes that TensorRT "
                "supports: nothing to build (see partition.fallback in report.json)")
        elif not built_segments:
            error = BackendError(f"no segment engine could be built: "
                                 f"{outcome.segments[0].name}: {outcome.segments[0].why_not_engine}")
    return outcome, error


def _whole_model_builder(loaded: LoadedModel, options: CompileOptions, plan: ProfilePlan):
    """Builds node ranges of the optimized model as the compile builds its engine, the profiles
    restricted to the inputs a range reads: None when it builds, else the builder's words."""
    from trtcompile.flow.partitioning import build_error

    profiles = plan.backend_profiles() if plan is not None else None

    def build(model: onnx.ModelProto) -> str | None:
        return build_error(model, culprits.restrict_profiles(profiles, model), loaded.model_dir,
                           options.workspace_bytes, options.build)

    return build
