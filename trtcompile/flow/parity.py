"""The parity stages: the input model against the optimized one on ONNX Runtime (and the
TensorFlow reference when there is one), top-1 agreement on held-out samples, and the engine
against the optimized model.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from trtcompile import verify
from trtcompile.errors import CheckFailed, InputError, TrtcompileError
from trtcompile.flow import inputs, judging
from trtcompile.flow.options import CompileOptions
from trtcompile.flow.precision import engine_parity_tolerances
from trtcompile.frontend import LoadedModel
from trtcompile.shapes import ProfilePlan, format_shape_set

#: Runner names of the engine parity comparison.
ENGINE_RUNNER = "engine"
ENGINE_REFERENCE = "optimized"


@dataclass
class ParityVerdict:
    """All parity comparisons of a compile.

    ``primary`` is the end-to-end comparison: the source model (TensorFlow when a reference runner
    exists, else the input ONNX) against the optimized model.
    """

    comparisons: list[verify.ParityResult]
    primary: verify.ParityResult
    #: Input shape sets compared (a profile's min, opt and max), one entry per set.
    input_shapes: list[dict[str, list[int]]] = field(default_factory=list)

    @classmethod
    def combine(cls, verdicts: Sequence[ParityVerdict]) -> ParityVerdict:
        """One verdict over checks at several input shapes: every comparison is kept (each
        records its shapes); the primary holds, per output, the worst error over all shapes."""
        if len(verdicts) == 1:
            return verdicts[0]
        first = verdicts[0].primary
        primary = verify.ParityResult(
            reference=first.reference, candidate=first.candidate, atol=first.atol, rtol=first.rtol,
            note=f"worst over {len(verdicts)} input shape sets", atol_range=first.atol_range)
        for verdict in verdicts:
            for name, stats in verdict.primary.outputs.items():
                seen = primary.outputs.get(name)
                primary.outputs[name] = stats if seen is None else verify.OutputParity(
                    max(seen.max_abs, stats.max_abs), max(seen.max_rel, stats.max_rel),
                    seen.passed and stats.passed)
            if not verdict.primary.outputs:  # nothing compared at these shapes is a failure
                primary.outputs.setdefault("(no outputs)", verify.OutputParity(
                    float("inf"), float("inf"), False))
        return cls([c for v in verdicts for c in v.comparisons], primary,
                   [shapes for v in verdicts for shapes in v.input_shapes])

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def failures(self) -> list[tuple[verify.ParityResult, str]]:
        """(comparison, output name) of every output that failed, in order."""
        return [(c, name) for c in self.comparisons for name, o in c.outputs.items() if not o.passed]

    def error_message(self, check: str = "parity") -> str:
        """One line naming the failed comparisons and outputs (``check`` names the check)."""
        parts = []
        for comparison in self.comparisons:
            failed = [name for name, o in comparison.outputs.items() if not o.passed]
            if comparison.outputs and not failed:
                continue
            label = f"{comparison.candidate} vs {comparison.reference}"
            if len(self.input_shapes) > 1:  # say at which of the profile shapes it failed
                label += f" at {format_shape_set(comparison.input_shapes)}"
            if not comparison.outputs:
                parts.append(f"{label}: no outputs compared")
                continue
            changed = [comparison.outputs[name].describe(name) for name in failed
                       if comparison.outputs[name].change]
            if changed:  # values that cannot be compared: say what changed
                parts.append(f"{label}: output {'; '.join(changed)}")
                continue
            worst = max(failed, key=lambda name: comparison.outputs[name].max_abs)
            stats = comparison.outputs[worst]
            parts.append(f"{label}: output"
                         f"{'s' if len(failed) > 1 else ''} {', '.join(repr(n) for n in failed)} "
                         f"(max_abs={stats.max_abs:.3g}, max_rel={stats.max_rel:.3g})"
                         + (f" [{comparison.note}]" if comparison.note else ""))
        tolerances = f"atol={self.primary.atol:g}, rtol={self.primary.rtol:g}"
        if self.primary.atol_range:
            tolerances += f", atol_range={self.primary.atol_range:g}"
        return f"{check} failed ({tolerances}): " + "; ".join(parts)


@dataclass
class EngineParity:
    """The engine parity stage: the engine against the optimized model on ONNX Runtime.

    ``status`` is ``passed``, ``failed`` or ``not run`` (``reason`` says why: no engine, the stage
    is off, or the engine could not be executed, e.g. no supported GPU).
    """

    mode: str
    status: str
    reason: str | None = None
    atol: float = verify.DEFAULT_ATOL
    rtol: float = verify.DEFAULT_RTOL
    #: Why these tolerances (precision, TF32, user tolerances).
    note: str = ""
    #: Every comparison, worst per output over the shape sets as primary; None when not run.
    verdict: ParityVerdict | None = None

    @classmethod
    def not_run(cls, mode: str, reason: str, **tolerances: Any) -> EngineParity:
        return cls(mode=mode, status="not run", reason=reason, **tolerances)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def error_message(self) -> str:
        """One line naming the outputs the engine got wrong."""
        assert self.verdict is not None
        return self.verdict.error_message("engine parity")

    def to_dict(self) -> dict[str, Any]:
        """``report.json``'s ``parity.engine``."""
        verdict = self.verdict
        return {
            "mode": self.mode,
            "status": self.status,
            "reason": self.reason,
            "reference": ENGINE_REFERENCE,
            "candidate": ENGINE_RUNNER,
            "atol": self.atol,
            "rtol": self.rtol,
            "note": self.note,
            "outputs": {name: o.to_dict() for name, o in verdict.primary.outputs.items()}
            if verdict else {},
            "comparisons": [c.to_dict() for c in verdict.comparisons] if verdict else [],
            "input_shapes": list(verdict.input_shapes) if verdict else [],
            "failed": list(dict.fromkeys(name for _, name in verdict.failures())) if verdict else [],
        }


def check_top1_agreement(loaded: LoadedModel, optimized: onnx.ModelProto,
                         held_out: Any, options: CompileOptions) -> dict[str, Any]:
    """Top-1 agreement of the optimized model with the input model on held-out samples.

    For every output shaped ``[batch, classes]`` (classes > 1), the share of samples whose arg-max
    class is the same in both models; the check passes at
    :data:`trtcompile.calibration.MIN_TOP1_AGREEMENT` or more. Models without such an output get
    ``{"checked": False, "reason": ...}``.
    """

    from trtcompile import calibration

    specs = calibration.model_input_specs(loaded.model)
    batch = held_out.batch_size(specs)
    sessions = [verify.inference_session(model)
                for model in (loaded.model, optimized)]
    names = [output.name for output in sessions[0].get_outputs()]
    predictions: dict[str, list[np.ndarray]] = {}
    for feeds in held_out.batches(batch, drop_last=calibration.has_fixed_batch(specs)):
        reference, candidate = (session.run(names, feeds) for session in sessions)
        for name, ref, cand in zip(names, reference, candidate):
            if ref.ndim == 2 and ref.shape[1] > 1:
                predictions.setdefault(name, []).append(ref.argmax(1) == cand.argmax(1))
    if not predictions:
        return {"checked": False, "reason": "no output is shaped [batch, classes]"}
    outputs = {}
    for name, matches in predictions.items():
        agreement = float(np.concatenate(matches).mean())
        outputs[name] = {"agreement": round(agreement, 4), "samples": int(sum(m.size for m in matches)),
                         "passed": agreement >= calibration.MIN_TOP1_AGREEMENT}
    return {"checked": True, "threshold": calibration.MIN_TOP1_AGREEMENT,
            "source": held_out.source, "outputs": outputs,
            "passed": all(o["passed"] for o in outputs.values())}


@contextlib.contextmanager
def _empty_outputs_quiet() -> Iterator[None]:
    """Polygraphy averages the elementwise errors of each output, and an output with a declared
    size of 0 has none: NumPy's warnings about the mean of nothing say nothing about parity."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in (scalar )?divide",
                                RuntimeWarning)
        yield


def check_parity(loaded: LoadedModel, optimized: onnx.ModelProto,
                 options: CompileOptions,
                 feeds: dict[str, np.ndarray] | None = None, *,
                 batches: Sequence[Mapping[str, np.ndarray]] | None = None) -> ParityVerdict:
    """Compare the input model, the optimized model and (if any) the reference on one seeded batch
    (or on ``feeds``, one batch of given inputs by input name, or on each of ``batches``).

    Without a reference runner: input ONNX vs optimized. With one (TensorFlow): reference vs
    lowered, lowered vs optimized and reference vs optimized, the last being the verdict's primary
    comparison.
    """
    from polygraphy.comparator import IterationResult, RunResults

    if batches is None:
        if feeds is None:
            feeds = inputs.feeds_for(loaded, options, given=inputs.compile_inputs(loaded, options))
        batches = [feeds]
    tolerance = {"atol": options.atol, "rtol": options.rtol, "atol_range": options.atol_range}
    input_name = "lowered" if loaded.lowering is not None else "input"

    # Overridable initializers are inputs: fed values other than their defaults, so an optimized
    # model that baked a default in (folded, fused or merged it) computes something else here.
    overridden = {name: value
                  for name, value in inputs.overridable_feeds(loaded.model, options.seed).items()
                  if name not in batches[0]}
    source = inputs.feedable(loaded.model, overridden)
    try:
        fed = [{**batch, **overridden} for batch in batches]
        input_results = inputs.run_model(source, fed, input_name)
    except verify.ModelRunError:
        if not overridden:
            raise
        # The model does not run with other values there (an index out of range): feed the
        # defaults, the values it is compiled for.
        defaults = inputs.overridable_feeds(loaded.model, options.seed, defaults=True)
        fed = [{**batch, **defaults} for batch in batches]
        input_results = inputs.run_model(source, fed, input_name)
    onnx_results = RunResults([*input_results, *inputs.run_model(
        inputs.feedable(optimized, overridden), fed, "optimized")])
    with _empty_outputs_quiet():
        input_vs_optimized = verify.compare_run_results(
            onnx_results, reference_name=input_name, candidate_name="optimized", **tolerance)
    input_vs_optimized.input_shapes = {k: list(np.shape(v)) for k, v in fed[0].items()}
    if loaded.reference is None:
        return ParityVerdict([input_vs_optimized], input_vs_optimized)

    reference_name = loaded.reference_name or "reference"
    iterations = []
    for batch in fed:
        outputs = loaded.reference({k: np.array(v) for k, v in batch.items() if k not in overridden})
        iterations.append(IterationResult(dict(outputs), runner_name=reference_name))
    reference_outputs = iterations[0]
    reference_result = (reference_name, iterations)
    comparisons = []
    for runner_name, runner_iterations in onnx_results:
        pair = RunResults([reference_result, (runner_name, runner_iterations)])
        with _empty_outputs_quiet():
            comparison = verify.compare_run_results(
                pair, reference_name=reference_name, candidate_name=runner_name, **tolerance)
        comparison.input_shapes = input_vs_optimized.input_shapes
        missing = set(runner_iterations[0].keys()) - set(reference_outputs.keys())
        if missing:
            comparison.note = f"outputs without a {reference_name} value: {sorted(missing)}"
            for name in missing:
                comparison.outputs[name] = verify.OutputParity(float("inf"), float("inf"), False)
        comparisons.append(comparison)
    reference_vs_lowered, reference_vs_optimized = comparisons
    return ParityVerdict([reference_vs_lowered, input_vs_optimized, reference_vs_optimized],
                         reference_vs_optimized)


def onnx_parity_shape_sets(plan: ProfilePlan) -> list[tuple[dict, bool]]:
    """The input shape sets ONNX Runtime parity runs at, each with whether it was added here.

    Every profile's min, opt and max (``plan.parity_shapes``). The default profile fixes an
    unknown batch to 1 for the engine only; ONNX Runtime runs any size, so parity also runs at
    the last of :data:`verify.DYNAMIC_SIZES` there, where a batch size baked into the graph shows.
    """
    sets = [(dict(shapes), False) for shapes in plan.parity_shapes]
    if plan.source == "default" and sets:
        size = verify.DYNAMIC_SIZES[-1]
        extra = {}
        for name, shape in sets[0][0].items():
            dims = plan.dynamic_inputs.get(name)
            extra[name] = tuple(size if dims is not None and not isinstance(dims[axis], int) else d
                                for axis, d in enumerate(shape))
        if extra != sets[0][0]:
            sets.append((extra, True))
    return sets


#: Bytes parity holds per input element besides the array itself: the float64 values Polygraphy
#: and the input distribution draw before casting to the input's dtype.
DRAW_BYTES_PER_ELEMENT = 8


def check_input_sizes(model: onnx.ModelProto, plan: ProfilePlan,
                      memory: int | None = None) -> None:
    """Refuse, before anything is allocated, parity inputs that cannot fit in ``memory`` bytes
    (default: the memory available now): InputError naming the largest input of the first shape
    set that does not fit, its shape and its element count. A model that declares a
    10^12-element input is told so instead of failing to allocate terabytes."""
    from trtcompile import checks
    from trtcompile.shapes import format_shape, model_inputs

    dtypes = {}
    for value in model.graph.input:
        try:
            dtypes[value.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
                value.type.tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):  # not a tensor type NumPy knows: a float64's size
            dtypes[value.name] = np.dtype(np.float64)
    signatures = model_inputs(model)
    for shapes, _ in onnx_parity_shape_sets(plan):
        sizes = {name: (math.prod(shape), dtypes.get(name, np.dtype(np.float64)))
                 for name, shape in shapes.items()}
        need = sum(count * (dtype.itemsize + DRAW_BYTES_PER_ELEMENT)
                   for count, dtype in sizes.values())
        if memory is None:
            memory = checks.available_memory()
        if not sizes or need <= memory:
            continue
        name = max(sizes, key=lambda key: sizes[key][0] * sizes[key][1].itemsize)
        count, dtype = sizes[name]
        signature = signatures.get(name)
        fix = ("give smaller shapes (--input-shape, --min-shapes/--opt-shapes/--max-shapes)"
               if signature is not None and signature.is_dynamic
               else "the model declares this shape: fix it")
        raise InputError(
            f"input '{name}' has {count} elements at shape {format_shape(shapes[name])} "
            f"({checks.format_bytes(count * dtype.itemsize)} as {dtype}): parity inputs of that "
            f"size do not fit in the {checks.format_bytes(memory)} of memory available; {fix}, "
            "or skip parity (--no-parity)")


def check_parity_at_shapes(loaded: LoadedModel, optimized: onnx.ModelProto,
                           options: CompileOptions, plan: ProfilePlan,
                           samples: judging.ParitySamples | None = None,
                           ranges: Mapping[str, tuple[float, float]] | None = None) -> ParityVerdict:
    """:func:`check_parity` at every input shape set of :func:`onnx_parity_shape_sets` (each
    profile's min, opt and max; a second batch size with the default profile), combined into one
    verdict. At each set: batches of ``samples`` (calibration samples, see
    :mod:`trtcompile.flow.judging`) when they fit its shapes, else one seeded batch, its
    floating-point inputs drawn within ``ranges`` (input name -> ``(low, high)``) where given. A
    size added here that the input model itself does not run at is skipped."""
    given = inputs.compile_inputs(loaded, options)
    if given is not None:  # given inputs: checked at their shapes
        verdict = check_parity(loaded, optimized, options, feeds=given)
        verdict.input_shapes = [{k: list(np.shape(v)) for k, v in given.items()}]
        return verdict
    ranges = dict(ranges or (samples.ranges() if samples is not None else {}))
    verdicts = []
    for shapes, added in onnx_parity_shape_sets(plan) or [({}, False)]:
        batches = samples.batches(shapes) if samples is not None else None
        if batches is None:
            feeds = inputs.feeds_for(loaded, options, shapes or None)
            batches = [judging.within_ranges(feeds, ranges, options.seed) if ranges else feeds]
        try:
            verdict = check_parity(loaded, optimized, options, batches=batches)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
            if not shapes:
                raise
            try:
                verdict = _failed_run_verdict(loaded, optimized, options, batches[0], shapes, exc)
            except InputError:
                if added:
                    continue  # the model's batch does not take this size after all
                raise
        if shapes:
            verdict.input_shapes = [{name: list(shape) for name, shape in shapes.items()}]
        verdicts.append(verdict)
    return ParityVerdict.combine(verdicts)


# Operator domains some runtime here implements: ONNX's own, ONNX Runtime's contrib ops (which the
# TensorRT parser also takes in part) and the compiler's local functions.
_KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft",
                  "com.microsoft.nchwc", "ai.onnx.contrib"}
_ORT_MIN_OPSET = 7  # ONNX Runtime's documented minimum for the ai.onnx domain


def _proto_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _proto_nodes(sub)


def unrunnable_model_reason(model: onnx.ModelProto, error: str = "") -> str | None:
    """Why ONNX Runtime cannot run ``model`` at any shape, if the model itself says so: an ai.onnx
    opset outside what ONNX Runtime and onnx support, or an operator of a domain no runtime here
    implements (neither a model-local function nor a known domain). None when neither holds."""
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    match = re.search(r"support for domain ai\.onnx is till opset (\d+)", error)
    if match:
        newest = min(newest, int(match.group(1)))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not _ORT_MIN_OPSET <= opset <= newest:
        return (f"it uses ai.onnx opset {opset}, outside the opsets ONNX Runtime and onnx support "
                f"({_ORT_MIN_OPSET} to {newest}); convert it to a supported opset "
                f"(e.g. onnx.version_converter.convert_version)")
    local = {(f.domain, f.name) for f in model.functions}
    for node in _proto_nodes(model.graph):
        if node.domain in _KNOWN_DOMAINS or (node.domain, node.op_type) in local:
            continue
        return (f"no runtime implements op {node.op_type} of domain {node.domain} (node "
                f"'{node.name or node.output[0]}'): ONNX Runtime has no kernel for it and TensorRT "
                f"would need a plugin; replace it with standard ONNX ops")
    return None


def _failed_run_verdict(loaded: LoadedModel, optimized: onnx.ModelProto, options: CompileOptions,
                        feeds: dict[str, np.ndarray], shapes: dict, exc: Exception) -> ParityVerdict:
    """A model did not run at a profile's shapes. If the input model itself fails, its dynamic
    dimensions do not really take these sizes (the user's to fix: InputError); if only the
    optimized model fails, a pass fixed a size it must not have (a parity failure)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    at = format_shape_set(shapes)
    try:
        inputs.run_model(loaded.model, feeds, "input")
    except Exception as own:  # noqa: BLE001
        cause = unrunnable_model_reason(loaded.model, str(own))
        if cause is not None:
            raise InputError(f"the input model does not run on ONNX Runtime: {cause}") from None
        raise InputError(f"the input model does not run on ONNX Runtime at {at} ({reason}); its "
                         "dynamic dimensions do not take these sizes: give profile shapes it runs "
                         "at") from None
    failed = verify.ParityResult(reference="lowered" if loaded.lowering is not None else "input",
                                 candidate="optimized", atol=options.atol, rtol=options.rtol,
                                 note=f"the optimized model failed on ONNX Runtime: {reason}")
    failed.input_shapes = {name: list(shape) for name, shape in shapes.items()}
    for value in optimized.graph.output:
        failed.outputs[value.name] = verify.OutputParity(float("inf"), float("inf"), False)
    return ParityVerdict([failed], failed)


def run_engine(plan: bytes, feeds: dict[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
    """Execute the engine plan once with optimization profile ``profile`` (raises BackendError
    when no GPU can run it)."""
    from trtcompile import backend

    return backend.run_engine(plan, feeds, profile=profile)


def profile_index(plan: ProfilePlan, shapes: dict[str, Sequence[int]]) -> int:
    """The first optimization profile whose [min, max] range holds ``shapes`` (0 when the engine
    has no profile or none does)."""
    for index, profile in enumerate(plan.profiles):
        if all(name in shapes and len(shapes[name]) == len(low)
               and all(lo <= dim <= hi for dim, lo, hi in zip(shapes[name], low, high))
               for name, (low, _, high) in profile.items()):
            return index
    return 0


def check_engine_parity(plan_bytes: bytes, loaded: LoadedModel, optimized: onnx.ModelProto,
                        options: CompileOptions, plan: ProfilePlan, *, mode: str = "auto",
                        tolerances: tuple[float, float, str] | None = None) -> EngineParity:
    """Run the engine on the seeded inputs parity used (one batch per shape set of ``plan``, each
    with the profile holding it) and compare every output with the optimized model's on ONNX
    Runtime (Polygraphy's comparison). An engine that cannot be executed (no supported GPU, a plan
    the runtime refuses) yields status ``not run`` with the backend's one-line reason."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, IterationResult, RunResults

    from trtcompile.calibration import precision_tolerances
    from trtcompile.errors import BackendError

    atol, rtol, note = tolerances or engine_parity_tolerances(options, user_tolerances=False)
    settings = {"atol": atol, "rtol": rtol, "note": note}
    # FP16/INT8 graphs: the engine's rounding differs from ONNX Runtime's by amounts that grow with
    # the outputs' range, as in ONNX parity; tolerances the user gave apply as given.
    atol_range = 0.0
    if options.precision.lower() != "fp32" and not note.startswith("user tolerances"):
        atol_range = precision_tolerances(options.precision).atol_range
    given = inputs.compile_inputs(loaded, options)
    shape_sets = list(plan.parity_shapes) or [dict(options.frontend.input_shapes) or None]
    if given is not None:
        shape_sets = [{name: list(np.shape(array)) for name, array in given.items()}]
    session = verify.inference_session(optimized)
    expected_outputs = [value.name for value in optimized.graph.output]
    verdicts = []
    for shapes in shape_sets:
        # The same inputs as check_parity_at_shapes: given, or generated alike at these shapes.
        feeds = inputs.feeds_for(loaded, options, shapes, given)
        at = {name: list(array.shape) for name, array in feeds.items()}
        try:
            engine_outputs = run_engine(plan_bytes, feeds, profile_index(plan, at))
        except (BackendError, InputError) as exc:
            reason = " ".join(str(exc).split())
            if len(shape_sets) > 1:
                reason += f" (at {format_shape_set(at)})"
            return EngineParity.not_run(mode, reason, **settings)
        missing = [name for name in expected_outputs if name not in engine_outputs]
        if len(missing) < len(expected_outputs):
            with verify.quiet_polygraphy():
                reference = Comparator.run([OnnxrtRunner(session, name=ENGINE_REFERENCE)],
                                           data_loader=[feeds])
            engine_result = (ENGINE_RUNNER, [IterationResult(
                {name: np.asarray(value) for name, value in engine_outputs.items()},
                runner_name=ENGINE_RUNNER)])
            with _empty_outputs_quiet():
                comparison = verify.compare_run_results(
                    RunResults([*reference, engine_result]), reference_name=ENGINE_REFERENCE,
                    candidate_name=ENGINE_RUNNER, atol=atol, rtol=rtol, atol_range=atol_range)
        else:  # nothing in common to compare (Polygraphy refuses that)
            comparison = verify.ParityResult(reference=ENGINE_REFERENCE, candidate=ENGINE_RUNNER,
                                             atol=atol, rtol=rtol)
        comparison.input_shapes = at
        if missing:  # Polygraphy compares common outputs only; an absent one is a failure
            comparison.note = f"outputs the engine did not produce: {missing}"
            for name in missing:
                comparison.outputs[name] = verify.OutputParity(float("inf"), float("inf"), False)
        verdict = ParityVerdict([comparison], comparison)
        verdict.input_shapes = [at]
        verdicts.append(verdict)
    combined = ParityVerdict.combine(verdicts)
    return EngineParity(mode=mode, status="passed" if combined.passed else "failed",
                        verdict=combined, **settings)


def engine_parity_stage(engine: Any, engine_status: dict[str, Any], loaded: LoadedModel,
                        optimized: onnx.ModelProto, options: CompileOptions, plan: ProfilePlan,
                        tolerances: tuple[float, float, str]) -> tuple[EngineParity,
                                                                       TrtcompileError | None]:
    """The engine parity stage as ``options.engine_parity`` asks: its record and the error it
    makes the compile fail with (engine outputs that differ: CheckFailed; an engine that cannot
    run under ``require``: BackendError; otherwise None)."""
    from trtcompile.errors import BackendError

    mode = options.engine_parity
    settings = dict(zip(("atol", "rtol", "note"), tolerances))
    if mode == "off":
        return EngineParity.not_run(mode, "--engine-parity off", **settings), None
    if not options.parity:
        return EngineParity.not_run(mode, "--no-parity", **settings), None
    if engine is None:
        return EngineParity.not_run(mode, f"no engine ({engine_status.get('reason', 'not built')})",
                                    **settings), None
    result = check_engine_parity(engine.plan, loaded, optimized, options, plan, mode=mode,
                                 tolerances=tolerances)
    if result.failed:
        return result, CheckFailed(result.error_message())
    if result.status == "not run" and mode == "require":
        return result, BackendError(f"engine parity is required but did not run: {result.reason}")
    return result, None


