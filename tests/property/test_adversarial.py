"""The default pipeline (and FP16 lowering after it) on the adversarial models of
tests/property/adversarial.py: If bodies reading outer values, overridable initializers, dynamic
Shape chains, string and bool tensors, BatchNorm forms that must not fold, float16 hazards.

Each optimized model passes the full onnx checker, keeps the interface (inputs, overridable
initializers among them, outputs, element types, shapes), computes what the input model computes
on ONNX Runtime (for both values of an If condition, with overridable initializers fed values
other than their defaults) and is a fixed point: the pipeline run on its own output changes
nothing (the same :func:`trtcompile.ir.model_digest`).
"""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
from hypothesis import given, settings

from tests.property import adversarial, oracle, profiles
from trtcompile import ir

MODELS = adversarial.adversarial_models()

#: Pipelines the models go through, with their tolerance.
PIPELINES = {
    "default": oracle.FP32,
    "default,precision-fp16": oracle.FP16,
}


def _runs(model: onnx.ModelProto) -> list[dict]:
    """The feeds parity runs at: each If condition, overridable initializers off their defaults
    (at their defaults where the input model does not run otherwise, as the compile's parity
    does)."""
    conditions = [True, False] if any(v.name == "cond" for v in model.graph.input) else [True]
    runs = []
    for condition in conditions:
        feeds = adversarial.feeds(model, condition=condition)
        try:
            oracle.run_onnxruntime(model, feeds)
        except Exception:  # noqa: BLE001 - e.g. overridden weights of another shape
            feeds = adversarial.feeds(model, condition=condition, defaults=True)
        runs.append(feeds)
    return runs


def check_optimized(model: onnx.ModelProto, optimized: onnx.ModelProto,
                    tolerance: oracle.Tolerance) -> None:
    """Checker, interface and parity of ``optimized`` against ``model``."""
    try:
        onnx.checker.check_model(optimized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise AssertionError(f"onnx checker rejects the optimized model: {exc}\n"
                             + onnx.printer.to_text(optimized)) from None
    assert adversarial.interface(optimized) == adversarial.interface(model)
    for feeds in _runs(model):
        reference = oracle.run_onnxruntime(model, feeds)
        problems = adversarial.compare(reference, oracle.run_onnxruntime(optimized, feeds),
                                       tolerance.atol, tolerance.rtol)
        assert not problems, "; ".join(problems) + "\n" + onnx.printer.to_text(optimized)


@profiles.examples(0.3)
@given(MODELS)
def test_adversarial_models_are_valid_and_run(case: adversarial.AdversarialModel) -> None:
    onnx.checker.check_model(case.model, full_check=True)
    assert ir.overridable_initializer_names(case.model) == list(case.overridable)
    for feeds in _runs(case.model):
        outputs = oracle.run_onnxruntime(case.model, feeds)
        assert set(outputs) == {o.name for o in case.model.graph.output}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@profiles.examples(0.5)
@given(case=MODELS)
def test_pipeline_keeps_scopes_interface_and_values(pipeline: str,
                                                   case: adversarial.AdversarialModel) -> None:
    once, _ = oracle.optimize(case.model, pipeline)
    check_optimized(case.model, once, PIPELINES[pipeline])
    twice, _ = oracle.optimize(once, pipeline)
    assert ir.model_digest(twice) == ir.model_digest(once), (
        "a second run changed the model:\n" + onnx.printer.to_text(once) + "\n---\n"
        + onnx.printer.to_text(twice))


def test_generator_draws_every_motif_and_scope_source() -> None:
    """Over the CI profile's draws, every motif and every kind of outer read appears."""
    seen: Counter[str] = Counter()

    @settings(max_examples=200, derandomize=True, database=None)
    @given(MODELS)
    def collect(case: adversarial.AdversarialModel) -> None:
        seen.update(case.motifs)
        seen.update(f"opset{o.version}" for o in case.model.opset_import)
        for node in case.model.graph.node:
            seen[node.op_type] += 1
            for attr in node.attribute:
                if attr.name == "spatial":
                    seen["spatial"] += 1

    collect()
    missing = [name for name in (*adversarial.MOTIFS, "opset7", "opset17", "If", "ScatterND",
                                 "spatial", "Shape", "Transpose", "Concat", "Identity")
               if not seen[name]]
    assert not missing, f"never drawn: {missing} ({dict(seen)})"
