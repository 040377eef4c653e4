"""Numerical parity: runners (Polygraphy over ONNX Runtime), seeded data loading, the tolerance rule.

Every check compares a *reference* against a *candidate* on the same inputs, output by output. An
element passes when

    |candidate - reference| <= atol + atol_range * max|reference| + rtol * |reference|

with ``max|reference|`` the largest finite magnitude of that output of the reference, and the
relative term taken of the reference (``numpy.isclose``'s form, plus the range term); NaN matches
NaN at the same position, an infinity only the same infinity. :func:`within_tolerance` is that rule,
the only place a verdict is decided (Polygraphy runs the models; its own comparison is not used,
see the note above :func:`output_peak`). Each output reports its largest absolute error and its
largest error relative to the reference. An output whose shape or element type changed, or that
the candidate does not produce, fails with those words instead of error figures.

Inputs (:func:`feed_data`): floating-point inputs are drawn from a seeded standard normal
distribution (negative values decide Relu, Clip and LeakyRelu, and inputs in [0, 1) cannot show a
sign error), or uniformly from a known range (:class:`InputDistribution`, the CLI's
``--data-range``); integer and boolean inputs keep Polygraphy's data loader (values 0 and 1, valid
indices and masks). Unknown dimensions are checked at two sizes (:data:`DYNAMIC_SIZES`), so a size
baked into the graph shows.

``atol_range`` (0 by default) scales the absolute bound with each output's range: reduced-precision
errors grow with the magnitude of the values that flow through the network, so a fixed ``atol`` is
either too tight for logits in the hundreds or too loose for logits near 1e-3.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from trtcompile.errors import CheckFailed

#: Default tolerances (defined in trtcompile.checks, which the command reads without numpy).
from trtcompile.checks import DEFAULT_ATOL, DEFAULT_RTOL  # noqa: F401 - re-exported

#: Sizes unknown input dimensions take, one shape set per size (every unknown dimension at once).
DYNAMIC_SIZES = (1, 3)


@dataclass(frozen=True)
class InputDistribution:
    """How parity draws floating-point inputs: a standard normal distribution (the default), or
    uniformly in ``[low, high)`` when the model's inputs have a known range (``--data-range``).
    Integer and boolean inputs always keep Polygraphy's data loader."""

    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("give both bounds of the data range or neither")
        if self.low is not None:
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError(f"data range bounds must be finite, got {self.low:g},{self.high:g}")
            if not self.low < self.high:
                raise ValueError(f"data range needs LO < HI, got {self.low:g},{self.high:g}")

    @classmethod
    def parse(cls, text: str, flag: str = "--data-range") -> InputDistribution:
        """``LO,HI`` (finite numbers, ``LO < HI``); raises InputError naming ``flag``."""
        from trtcompile.errors import InputError

        parts = [p.strip() for p in str(text).split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"{flag} {text!r}: expected LO,HI (two numbers, e.g. -1,1)") from None
        try:
            return cls(low, high)
        except ValueError as exc:
            raise InputError(f"{flag} {text!r}: {exc}") from None

    @property
    def is_default(self) -> bool:
        return self.low is None

    def describe(self) -> str:
        """``standard normal`` or ``uniform [0, 255)``."""
        if self.low is None:
            return "standard normal"
        return f"uniform [{self.low:g}, {self.high:g})"

    def draw(self, rng: np.random.Generator, shape: Sequence[int], dtype) -> np.ndarray:
        """One seeded array of floating-point ``dtype``."""
        if self.low is None:
            values = rng.standard_normal(size=tuple(shape))
        else:
            values = rng.uniform(self.low, self.high, size=tuple(shape))
        return values.astype(dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"floating_point": self.describe(), "integer": "Polygraphy default (0 or 1)",
                **({} if self.low is None else {"range": [self.low, self.high]})}


#: The default: standard normal floating-point inputs.
DEFAULT_DISTRIBUTION = InputDistribution()


class ModelRunError(CheckFailed):
    """A model of a comparison could not be loaded or run on ONNX Runtime: ``which`` names it
    (the runner name), ``reason`` is ONNX Runtime's message. A check that failed (exit 1): the
    compiler and the verify instrument say whose model it was."""

    def __init__(self, which: str, reason: str, input_shapes: Mapping[str, Sequence[int]]):
        self.which = which
        self.reason = reason
        self.input_shapes = {name: list(shape) for name, shape in input_shapes.items()}
        super().__init__(f"the {which} model does not run on ONNX Runtime: {reason}")


@dataclass
class OutputParity:
    """Error statistics of one output."""

    max_abs: float
    max_rel: float
    passed: bool
    #: Why the values could not be compared: ``shape [2, 6] -> [2, 2]``, ``dtype float32 ->
    #: float64``, ``missing from the candidate``; empty when they were.
    change: str = ""

    def to_dict(self) -> dict[str, Any]:
        entry = {"max_abs": self.max_abs, "max_rel": self.max_rel, "passed": self.passed}
        if self.change:
            entry["change"] = self.change
        return entry

    def describe(self, name: str) -> str:
        """``'y' changed shape [2, 6] -> [2, 2]`` or ``'y' max_abs=.. max_rel=..``."""
        if self.change:
            return f"'{name}' {self.change}"
        return f"'{name}' max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g}"


@dataclass
class ParityResult:
    """Outcome of one comparison: per-output errors and the tolerances used."""

    reference: str
    candidate: str
    atol: float
    rtol: float
    outputs: dict[str, OutputParity] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    note: str = ""
    #: How the inputs were drawn (:meth:`InputDistribution.describe`; empty: given by the caller).
    inputs: str = ""
    #: Fraction of each output's largest magnitude added to ``atol`` (see the module docstring).
    atol_range: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs.values())

    def summary(self) -> str:
        """One line: verdict and worst output."""
        if not self.outputs:
            return "no outputs compared"
        verdict = "passed" if self.passed else "FAILED"
        at = f" at {_shape_set_text(self.input_shapes)}" if self.input_shapes else ""
        changed = [o.describe(name) for name, o in self.outputs.items() if o.change]
        if changed:
            return (f"{verdict} ({self.candidate} vs {self.reference}{at}): output "
                    + "; ".join(changed))
        worst_name, worst = max(self.outputs.items(), key=lambda item: item[1].max_abs)
        return (f"{verdict} ({self.candidate} vs {self.reference}{at}, atol={self.atol:g}, "
                f"rtol={self.rtol:g}; worst output '{worst_name}': max_abs={worst.max_abs:.3g}, "
                f"max_rel={worst.max_rel:.3g})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "candidate": self.candidate,
            "atol": self.atol,
            "rtol": self.rtol,
            "atol_range": self.atol_range,
            "input_shapes": self.input_shapes,
            "inputs": self.inputs,
            "outputs": {name: o.to_dict() for name, o in self.outputs.items()},
            "note": self.note,
        }


@contextlib.contextmanager
def quiet_polygraphy():
    """Silence Polygraphy's logging (below CRITICAL) for the duration of a block."""
    from polygraphy.logger import G_LOGGER

    previous = G_LOGGER.module_severity
    # Comparison failures are reported by this module, in its own words.
    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    try:
        yield
    finally:
        G_LOGGER.module_severity = previous


def session_options():
    """ONNX Runtime session options for parity: the model runs as written. ONNX Runtime's graph
    optimizer rewrites a model before running it (fusions, constant folding, layout changes);
    parity judges our rewrites against the model the user gave, so neither side may be rewritten
    by another optimizer, whose own defects (a fusion that refuses valid negative ``axes``, a
    crash in an extended fusion) would otherwise be charged to the model or to our passes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def inference_session(model: onnx.ModelProto):
    """An ONNX Runtime CPU session running ``model`` as written (:func:`session_options`).

    A model storing tensors in bfloat16 runs as its float32 emulation
    (:func:`trtcompile.ir.bfloat16.emulate_bfloat16`: the CPU provider has no bfloat16 kernel for
    most ops), with bfloat16 inputs and outputs fed and read as float32."""
    import onnxruntime as ort

    from trtcompile.ir import bfloat16

    if bfloat16.computes_in_bfloat16(model):
        model = bfloat16.emulate_bfloat16(model)

    return ort.InferenceSession(model.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"])


def _session(model: onnx.ModelProto):
    # Polygraphy's runner takes a loader; this one hands it the session the parity rule runs.
    return lambda: inference_session(model)


def input_metadata(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None):
    """Polygraphy ``TensorMetadata`` of the model's inputs, with ``input_shapes`` overriding shapes.

    Unknown dimensions without an override become 1.
    """
    from polygraphy.common import TensorMetadata

    initializers = {init.name for init in model.graph.initializer}
    metadata = TensorMetadata()
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if input_shapes and value.name in input_shapes:
            shape = [int(d) for d in input_shapes[value.name]]
        else:
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                     for d in tensor_type.shape.dim]
        metadata.add(value.name, dtype, shape)
    return metadata


def feed_data(model: onnx.ModelProto, seed: int = 0,
              input_shapes: Mapping[str, Sequence[int]] | None = None,
              distribution: InputDistribution | None = None) -> dict[str, np.ndarray]:
    """One seeded batch of inputs for ``model``: floating-point inputs from ``distribution``
    (standard normal by default), the others from Polygraphy's data loader."""
    from polygraphy.comparator import DataLoader

    distribution = distribution or DEFAULT_DISTRIBUTION
    with quiet_polygraphy():
        loader = DataLoader(seed=seed, iterations=1,
                            input_metadata=input_metadata(model, input_shapes))
        feeds = dict(loader[0])
    rng = np.random.default_rng(seed)
    for name, array in feeds.items():
        if np.asarray(array).dtype.kind == "f":
            feeds[name] = distribution.draw(rng, np.shape(array), np.asarray(array).dtype)
    return feeds


def dynamic_shape_sets(model: onnx.ModelProto,
                       input_shapes: Mapping[str, Sequence[int]] | None = None,
                       sizes: Sequence[int] = DYNAMIC_SIZES) -> list[dict[str, list[int]] | None]:
    """The input shape sets parity runs at: one per size in ``sizes`` (every unknown dimension
    not fixed by ``input_shapes`` takes it), or ``[input_shapes]`` (None when not given) when no
    dimension is unknown."""
    initializers = {init.name for init in model.graph.initializer}
    given = {name: [int(d) for d in shape] for name, shape in (input_shapes or {}).items()}
    unknown = False
    for value in model.graph.input:
        if value.name in initializers or value.name in given:
            continue
        unknown |= any(not (d.HasField("dim_value") and d.dim_value > 0)
                       for d in value.type.tensor_type.shape.dim)
    if not unknown:
        return [given or None]
    sets = []
    for size in sizes:
        shapes = dict(given)
        for value in model.graph.input:
            if value.name in initializers or value.name in given:
                continue
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                  else int(size) for d in value.type.tensor_type.shape.dim]
        sets.append(shapes)
    return sets


def run_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
              name: str):
    """Polygraphy ``RunResults`` of ``model`` on one batch of ``feeds``, or one iteration per
    batch of a sequence of them, in one session (ONNX Runtime, CPU); raises
    :class:`ModelRunError` naming ``name`` when ONNX Runtime cannot load or run it."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator

    batches = [feeds] if isinstance(feeds, Mapping) else list(feeds)
    try:
        with quiet_polygraphy():
            return Comparator.run([OnnxrtRunner(_session(model), name=name)], data_loader=batches)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelRunError(name, text[-300:],
                            {k: np.shape(v) for k, v in batches[0].items()} if batches else {}) from None


def compare_models(reference: onnx.ModelProto, candidate: onnx.ModelProto, *,
                   atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, seed: int = 0,
                   input_shapes: Mapping[str, Sequence[int]] | None = None,
                   data: Sequence[Mapping[str, np.ndarray]] | None = None,
                   reference_name: str = "input", candidate_name: str = "optimized",
                   distribution: InputDistribution | None = None,
                   atol_range: float = 0.0) -> ParityResult:
    """Run both models on ONNX Runtime with the same inputs and compare every output.

    ``data`` is a list of feed dicts; without it, one seeded batch is drawn for the reference
    model's inputs (:func:`feed_data`: ``distribution``, ``input_shapes`` fixing dynamic
    dimensions, 1 where not given). Raises :class:`ModelRunError` when a model does not run.
    """
    from polygraphy.comparator import RunResults

    feeds_list = [dict(d) for d in data] if data is not None else [
        feed_data(reference, seed, input_shapes, distribution)]
    results = RunResults()
    for name, model in ((reference_name, reference), (candidate_name, candidate)):
        iterations = []
        for feeds in feeds_list:
            iterations.extend(run_model(model, feeds, name)[0][1])
        results.append((name, iterations))
    parity = compare_run_results(results, atol=atol, rtol=rtol, reference_name=reference_name,
                                 candidate_name=candidate_name, atol_range=atol_range)
    parity.input_shapes = {k: list(np.shape(v)) for k, v in feeds_list[0].items()} if feeds_list else {}
    if data is None:
        parity.inputs = f"{(distribution or DEFAULT_DISTRIBUTION).describe()}, seed {seed}"
    return parity


def compare_run_results(results, *, atol: float, rtol: float, reference_name: str,
                        candidate_name: str, atol_range: float = 0.0) -> ParityResult:
    """Compare two runners' outputs already collected in a Polygraphy ``RunResults`` (or any
    sequence of ``(runner name, [iteration outputs])`` pairs) by :func:`within_tolerance`.

    Every output of the reference is compared, iteration by iteration; one the candidate lacks,
    or whose shape or element type differs, fails with those words. Outputs only the candidate
    has are not compared. Raises ValueError when either runner is absent from ``results``."""
    by_runner = dict(results)
    for which in (reference_name, candidate_name):
        if which not in by_runner:
            raise ValueError(f"no results of the runner '{which}' (have: {sorted(by_runner)})")
    reference, candidate = by_runner[reference_name], by_runner[candidate_name]
    parity = ParityResult(reference=reference_name, candidate=candidate_name, atol=atol, rtol=rtol,
                          atol_range=atol_range)
    changes = _changed_outputs(results, reference_name, candidate_name)
    names = list(dict.fromkeys(name for iteration in reference for name in iteration.keys()))
    for name in names:
        if name in changes:
            parity.outputs[name] = OutputParity(float("inf"), float("inf"), False, changes[name])
            continue
        pairs = [(np.asarray(ref_iteration[name]), np.asarray(cand_iteration[name]))
                 for ref_iteration, cand_iteration in zip(reference, candidate)
                 if name in ref_iteration.keys() and name in cand_iteration.keys()]
        parity.outputs[name] = compare_output([r for r, _ in pairs], [c for _, c in pairs],
                                              atol=atol, rtol=rtol, atol_range=atol_range)
    return parity


# --------------------------------------------------------------------------------------------
# The tolerance rule
# --------------------------------------------------------------------------------------------
#
# Polygraphy runs the models and collects their outputs; the verdict is computed here. Polygraphy's
# ``simple`` comparison in ``elemwise`` mode passes an element when its absolute error is within
# atol OR its relative error is within rtol, and divides the relative error by the candidate. At
# atol = rtol = 0.1 it fails reference 1 against candidate 1.15 (error 0.15, relative 0.13), which
# the stated bound atol + rtol * |reference| = 0.2 passes; at rtol = 0.5 it passes reference 0.1
# against candidate 0.19 whatever atol is (0.09 / 0.19 = 47%, though the candidate is 90% off the
# reference). Two criteria joined by OR, one relative to the value under test, are not the bound the
# documentation, the per-precision tolerances and the reports state, so that bound is applied
# instead, here and nowhere else.


def output_peak(arrays: Iterable[np.ndarray]) -> float:
    """``max|reference|`` of one output: the largest magnitude among the finite values of
    ``arrays`` (the output over every iteration); 0 for outputs that are not floating-point or
    hold no finite value. An infinity must match exactly, so it does not widen the bound."""
    peak = 0.0
    for array in arrays:
        values = np.asarray(array)
        if values.dtype.kind != "f" or not values.size:
            continue
        finite = values[np.isfinite(values)]
        if finite.size:
            peak = max(peak, float(np.abs(finite).max()))
    return peak


def within_tolerance(reference: np.ndarray, candidate: np.ndarray, *, atol: float, rtol: float,
                     atol_range: float = 0.0, peak: float | None = None) -> np.ndarray:
    """Where ``candidate`` matches ``reference`` (same shape), elementwise: the parity rule.

    An element passes when ``|candidate - reference| <= atol + atol_range * peak + rtol *
    |reference|``, with ``peak = max|reference|`` of the whole output (:func:`output_peak`; over
    ``reference`` alone unless given) and the relative term taken of the reference, as
    ``numpy.isclose`` does. NaN matches NaN (a NaN in one of the two only fails); an infinity
    matches only the same infinity. Boolean outputs must be equal. Computed in float64, so an
    error of a float16 output is not rounded before it is judged.
    """
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.dtype.kind == "b" or candidate.dtype.kind == "b":
        return np.asarray(reference == candidate)
    expected, got = reference.astype(np.float64), candidate.astype(np.float64)
    if peak is None:
        peak = output_peak([reference])
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf: decided by the lines below
        bound = atol + atol_range * peak + rtol * np.abs(expected)
        close = np.abs(got - expected) <= bound
    both_nan = np.isnan(expected) & np.isnan(got)
    infinite = np.isinf(expected) | np.isinf(got)
    # An infinite reference makes the bound infinite: judge infinities by equality alone.
    return np.where(infinite, expected == got, close | both_nan)


def error_statistics(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """``(max_abs, max_rel)`` of ``candidate`` against ``reference`` (same shape): the largest
    ``|candidate - reference|`` and the largest ``|candidate - reference| / |reference|`` over the
    elements with a non-zero reference (a zero reference has no relative error; atol judges it).
    Matching NaNs and infinities count 0; a NaN or infinity in only one of the two counts inf."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if not reference.size:
        return 0.0, 0.0
    expected, got = reference.astype(np.float64), candidate.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        error = np.abs(got - expected)
        matched = (np.isnan(expected) & np.isnan(got)) | (np.isinf(expected) & (expected == got))
        error = np.where(matched, 0.0, np.where(np.isnan(error), np.inf, error))
        divisible = np.isfinite(expected) & (expected != 0)
        relative = np.where(divisible, error / np.where(divisible, np.abs(expected), 1.0), 0.0)
        # A mismatched NaN or infinity is infinitely wrong in relative terms too.
        relative = np.where(np.isinf(error), np.inf, relative)
    return float(error.max()), float(relative.max())


def compare_output(references: Sequence[np.ndarray], candidates: Sequence[np.ndarray], *,
                   atol: float, rtol: float, atol_range: float = 0.0) -> OutputParity:
    """One output over several iterations (``references[i]`` against ``candidates[i]``, same
    shapes): passed when every element of every iteration is :func:`within_tolerance`, with
    ``max|reference|`` taken over all iterations; the worst error statistics."""
    peak = output_peak(references) if atol_range else 0.0
    max_abs = max_rel = 0.0
    passed = True
    for reference, candidate in zip(references, candidates):
        passed &= bool(np.all(within_tolerance(reference, candidate, atol=atol, rtol=rtol,
                                               atol_range=atol_range, peak=peak)))
        abs_error, rel_error = error_statistics(reference, candidate)
        max_abs, max_rel = max(max_abs, abs_error), max(max_rel, rel_error)
    return OutputParity(max_abs, max_rel, passed)


def _changed_outputs(results, reference_name: str, candidate_name: str) -> dict[str, str]:
    """Outputs whose values cannot be compared elementwise, by name: a different shape or element
    type in some iteration, or missing from the candidate."""
    by_runner = dict(results)
    reference, candidate = by_runner.get(reference_name), by_runner.get(candidate_name)
    if reference is None or candidate is None:
        return {}
    changes: dict[str, str] = {}
    for ref_iteration, cand_iteration in zip(reference, candidate):
        for name in ref_iteration.keys():
            if name in changes:
                continue
            if name not in cand_iteration.keys():
                changes[name] = f"is missing from the {candidate_name} model"
                continue
            ref_value, cand_value = np.asarray(ref_iteration[name]), np.asarray(cand_iteration[name])
            if ref_value.shape != cand_value.shape:
                changes[name] = (f"changed shape: {list(ref_value.shape)} in the {reference_name} "
                                 f"model, {list(cand_value.shape)} in the {candidate_name} model")
            elif ref_value.dtype != cand_value.dtype:
                changes[name] = (f"changed element type: {ref_value.dtype} in the {reference_name} "
                                 f"model, {cand_value.dtype} in the {candidate_name} model")
    return changes


def _shape_set_text(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())
