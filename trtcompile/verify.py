"""Numerical parity with Polygraphy: runners, seeded data loading, comparison and tolerances.

Every check compares a *reference* against a *candidate* on the same inputs, output by output, with
``|candidate - reference| <= atol + rtol * |reference|`` elementwise (Polygraphy's ``simple``
comparison in ``elemwise`` mode), and reports the maximum absolute and relative error per output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

#: Default tolerances (defined in trtcompile.checks, which the command reads without numpy).
from trtcompile.checks import DEFAULT_ATOL, DEFAULT_RTOL  # noqa: F401 - re-exported


@dataclass
class OutputParity:
    """Error statistics of one output."""

    max_abs: float
    max_rel: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "passed": self.passed}


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

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs.values())

    def summary(self) -> str:
        """One line: verdict and worst output."""
        if not self.outputs:
            return "no outputs compared"
        worst_name, worst = max(self.outputs.items(), key=lambda item: item[1].max_abs)
        verdict = "passed" if self.passed else "FAILED"
        return (f"{verdict} ({self.candidate} vs {self.reference}, atol={self.atol:g}, "
                f"rtol={self.rtol:g}; worst output '{worst_name}': max_abs={worst.max_abs:.3g}, "
                f"max_rel={worst.max_rel:.3g})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "candidate": self.candidate,
            "atol": self.atol,
            "rtol": self.rtol,
            "input_shapes": self.input_shapes,
            "outputs": {name: o.to_dict() for name, o in self.outputs.items()},
            "note": self.note,
        }


@contextlib.contextmanager
def quiet_polygraphy():
    """Silence Polygraphy's INFO logging for the duration of a block."""
    from polygraphy.logger import G_LOGGER

    previous = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.module_severity = previous


def _session(model: onnx.ModelProto):
    from polygraphy.backend.onnxrt import SessionFromOnnx

    return SessionFromOnnx(model.SerializeToString(), providers=["CPUExecutionProvider"])


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
              input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """One seeded batch of inputs for ``model`` from Polygraphy's data loader."""
    from polygraphy.comparator import DataLoader

    with quiet_polygraphy():
        loader = DataLoader(seed=seed, iterations=1,
                            input_metadata=input_metadata(model, input_shapes))
        return dict(loader[0])


def compare_models(reference: onnx.ModelProto, candidate: onnx.ModelProto, *,
                   atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, seed: int = 0,
                   input_shapes: Mapping[str, Sequence[int]] | None = None,
                   data: Sequence[Mapping[str, np.ndarray]] | None = None,
                   reference_name: str = "input", candidate_name: str = "optimized") -> ParityResult:
    """Run both models on ONNX Runtime with the same inputs and compare every output.

    ``data`` is a list of feed dicts; without it, one seeded random batch is generated from the
    reference model's inputs (``input_shapes`` fixes dynamic dimensions).
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, DataLoader

    with quiet_polygraphy():
        runners = [OnnxrtRunner(_session(reference), name=reference_name),
                   OnnxrtRunner(_session(candidate), name=candidate_name)]
        if data is None:
            loader = DataLoader(seed=seed, iterations=1,
                                input_metadata=input_metadata(reference, input_shapes))
        else:
            loader = list(data)
        results = Comparator.run(runners, data_loader=loader)
        return _parity_from_results(results, atol, rtol, reference_name, candidate_name)


def compare_run_results(results, *, atol: float, rtol: float, reference_name: str,
                        candidate_name: str) -> ParityResult:
    """Compare two runners' outputs already collected in a Polygraphy ``RunResults``."""
    with quiet_polygraphy():
        return _parity_from_results(results, atol, rtol, reference_name, candidate_name)


def _parity_from_results(results, atol: float, rtol: float, reference_name: str,
                         candidate_name: str) -> ParityResult:
    from polygraphy.comparator import Comparator, CompareFunc

    accuracy = Comparator.compare_accuracy(
        results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol, check_shapes=True))
    parity = ParityResult(reference=reference_name, candidate=candidate_name, atol=atol, rtol=rtol)
    # Polygraphy >= 0.53 returns one AccuracyResult per comparison function; older ones return it.
    per_function = [accuracy] if hasattr(accuracy, "values") else list(accuracy)
    per_pair = [iterations for result in per_function for iterations in result.values()]
    for per_iteration in per_pair:
        for iteration in per_iteration:
            for name, outcome in iteration.items():
                max_abs = float(outcome.max_absdiff) if outcome.max_absdiff is not None else float("inf")
                max_rel = float(outcome.max_reldiff) if outcome.max_reldiff is not None else float("inf")
                passed = bool(outcome)
                previous = parity.outputs.get(name)
                if previous is not None:
                    max_abs, max_rel = max(max_abs, previous.max_abs), max(max_rel, previous.max_rel)
                    passed = passed and previous.passed
                parity.outputs[name] = OutputParity(max_abs, max_rel, passed)
    return parity
