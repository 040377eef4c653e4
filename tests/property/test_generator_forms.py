"""The generators write every attribute a pass rule reads in its omitted (default) form and written
out, and masks of every rank attention allows.

A pass that reads ``keepdims`` with the wrong default, or unsqueezes a rank-1 mask on the wrong
axis, is wrong only on the forms it misreads: a generator that always writes the attribute, or
never draws that mask, cannot catch it however many examples it runs.
"""

from __future__ import annotations

from collections import defaultdict

import onnx
import pytest
from hypothesis import given, settings

from tests.property import profiles
from tests.property.rewrite_strategies import rewrite_models
from tests.property.strategies import cnn_models

#: Marks the form of an attribute a node does not write.
OMITTED = "omitted"

#: (op, attribute) -> forms every sample must hold: OMITTED and the written values listed.
REWRITE_FORMS = {
    ("ReduceMean", "keepdims"): {OMITTED, 0, 1},
    ("Gemm", "transB"): {OMITTED, 0, 1},
    ("Gemm", "transA"): {OMITTED, 0},
    ("Gemm", "alpha"): {OMITTED, 1.0, 0.5},
    ("Gemm", "beta"): {OMITTED, 1.0},
    ("Flatten", "axis"): {OMITTED, 1},
    ("Softmax", "axis"): {OMITTED, -1},
    ("Elu", "alpha"): {OMITTED, 0.5},
    ("LeakyRelu", "alpha"): {OMITTED},
    ("HardSigmoid", "alpha"): {OMITTED},
    ("BatchNormalization", "epsilon"): {OMITTED, 1e-5},
    ("Conv", "strides"): {OMITTED, (1, 1)},
    ("Conv", "dilations"): {OMITTED, (1, 1)},
    ("Conv", "group"): {OMITTED, 1},
    ("Conv", "pads"): {OMITTED, (0, 0, 0, 0)},
    ("AveragePool", "count_include_pad"): {OMITTED, 0, 1},
    ("AveragePool", "ceil_mode"): {OMITTED, 0},
    ("Reshape", "allowzero"): {OMITTED, 0},
}

CNN_FORMS = {
    ("ReduceMean", "keepdims"): {OMITTED, 1},
    ("Gemm", "transB"): {OMITTED, 0, 1},
    ("Gemm", "transA"): {OMITTED, 0},
    ("Gemm", "alpha"): {OMITTED, 1.0, 0.5},
    ("Gemm", "beta"): {OMITTED, 1.0, 2.0},
    ("Flatten", "axis"): {OMITTED, 1},
    ("Softmax", "axis"): {OMITTED, -1},
    ("Elu", "alpha"): {OMITTED, 1.0},
    ("LeakyRelu", "alpha"): {OMITTED, 0.01},
    ("HardSigmoid", "alpha"): {OMITTED, 0.2},
    ("BatchNormalization", "epsilon"): {OMITTED, 1e-5},
    ("Conv", "strides"): {OMITTED, (1, 1)},
    ("Conv", "group"): {OMITTED, 1},
    ("AveragePool", "ceil_mode"): {OMITTED, 0},
    ("AveragePool", "count_include_pad"): {OMITTED, 0, 1},
}


def _value(attribute: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float):
        return round(value, 6)
    return tuple(value) if isinstance(value, list) else value


def _forms(models, wanted) -> dict:
    """(op, attribute) -> the forms seen on the top-level nodes of ``models``."""
    seen: dict = defaultdict(set)
    for model in models:
        for node in model.graph.node:
            written = {a.name: _value(a) for a in node.attribute}
            for op, attribute in wanted:
                if node.op_type == op:
                    seen[op, attribute].add(written.get(attribute, OMITTED))
    return seen


def _sample(strategy, count: int) -> list[onnx.ModelProto]:
    models: list[onnx.ModelProto] = []

    @settings(max_examples=count, derandomize=True, database=None)
    @given(strategy)
    def collect(case) -> None:
        models.append(case.model)

    collect()
    return models


#: As many models as the differential tests' rule count looks at (300 in the ci profile).
REWRITE_SAMPLE = max(1, round(profiles.PROFILES[profiles.active()]["max_examples"] * 3))


@pytest.fixture(scope="module")
def rewrite_sample() -> list[onnx.ModelProto]:
    return _sample(rewrite_models(max_motifs=6), REWRITE_SAMPLE)


def _missing(seen: dict, wanted: dict) -> dict:
    return {f"{op}.{attribute}": sorted(map(str, forms - seen.get((op, attribute), set())))
            for (op, attribute), forms in wanted.items()
            if not forms <= seen.get((op, attribute), set())}


def test_rewrite_models_write_each_attribute_omitted_and_written(rewrite_sample) -> None:
    missing = _missing(_forms(rewrite_sample, REWRITE_FORMS), REWRITE_FORMS)
    assert not missing, f"forms never generated: {missing}"


def test_rewrite_models_spell_reduce_mean_axes_both_ways(rewrite_sample) -> None:
    """As an attribute below opset 18, as an input from 18."""
    spellings = set()
    for model in rewrite_sample:
        for node in model.graph.node:
            if node.op_type == "ReduceMean":
                spellings.add("input" if len(node.input) > 1 else
                              "attribute" if any(a.name == "axes" for a in node.attribute) else
                              OMITTED)
    assert {"input", "attribute"} <= spellings, spellings


def _attention_mask_ranks(model: onnx.ModelProto) -> set[int]:
    """Ranks of the constants added to the scores right before a Softmax."""
    producers = {out: node for node in model.graph.node for out in node.output}
    shapes = {init.name: len(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensor = onnx.helper.get_attribute_value(node.attribute[0])
            if isinstance(tensor, onnx.TensorProto):
                shapes[node.output[0]] = len(tensor.dims)
    ranks = set()
    for node in model.graph.node:
        add = producers.get(node.input[0]) if node.op_type == "Softmax" else None
        if add is not None and add.op_type == "Add":
            ranks.update(shapes[name] for name in add.input if name in shapes)
    return ranks


def test_rewrite_models_add_attention_masks_of_every_rank() -> None:
    # (Attention alone: among six motifs of every kind a rank may be drawn a few times only.)
    models = _sample(rewrite_models(max_motifs=1, motifs=("attention",)), 200)
    ranks = set().union(*(_attention_mask_ranks(model) for model in models))
    assert {0, 1, 2, 3, 4} <= ranks, f"mask ranks generated: {sorted(ranks)}"


def test_cnn_models_write_each_attribute_omitted_and_written() -> None:
    models = _sample(cnn_models(), 600)
    missing = _missing(_forms(models, CNN_FORMS), CNN_FORMS)
    assert not missing, f"forms never generated: {missing}"


def test_ci_draws_do_not_depend_on_the_modules_loaded(tmp_path, monkeypatch) -> None:
    """The ci profile's examples are the same before and after a module full of unusual
    constants is imported (hypothesis would otherwise draw them: see profiles.py)."""
    if profiles.active() != "ci":
        pytest.skip("only the ci profile promises the same examples on every run")
    before = [onnx.printer.to_text(m) for m in _sample(rewrite_models(max_motifs=3), 20)]
    (tmp_path / "odd_constants.py").write_text(
        "VALUES = [" + ", ".join(str(v) for v in (3, 7, 11, 13, 17, 19, 23, 29, 31, 37, 1023, 4095,
                                                   65537, 0.3183, 2.7182, 1e-7)) + "]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("odd_constants")
    after = [onnx.printer.to_text(m) for m in _sample(rewrite_models(max_motifs=3), 20)]
    assert before == after
