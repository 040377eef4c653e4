"""The generator itself: every model it draws is valid, runs, builds, and the suite sees every kind
of layer. A property test over an invalid or narrow generator would prove nothing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.parser
from hypothesis import given, settings

from tests.property import oracle, profiles
from tests.property.strategies import cnn_models


@profiles.examples()
@given(cnn_models(max_layers=profiles.max_layers()))
def test_generated_models_are_valid_and_run(case) -> None:
    model = case.model
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    declared = oracle.interface(model)["outputs"]
    assert oracle.interface(inferred)["outputs"] == declared
    outputs = oracle.run_onnxruntime(model, oracle.random_feeds(model))
    for name, _elem_type, dims in declared:
        assert outputs[name].shape == dims, name
        assert np.all(np.isfinite(outputs[name])), f"output {name} is not finite"


@profiles.examples(0.5)
@given(cnn_models(max_layers=profiles.max_layers()))
def test_generated_models_survive_the_text_format(case) -> None:
    """Regression cases are saved as ONNX text: the text must parse back to the same computation."""
    model = case.model
    parsed = onnx.parser.parse_model(onnx.printer.to_text(model))
    onnx.checker.check_model(parsed)
    feeds = oracle.random_feeds(model)
    # The printer writes floats with limited digits: equal up to float32 printing precision.
    problems = oracle.compare_outputs(oracle.run_onnxruntime(model, feeds),
                                      oracle.run_onnxruntime(parsed, feeds),
                                      oracle.Tolerance(atol=1e-5, rtol=1e-4))
    assert not problems, problems


@profiles.examples(0.25)
@given(cnn_models(max_layers=profiles.max_layers()))
def test_generated_models_build_with_tensorrt(case) -> None:
    """Unoptimized models build, so an optimized one that does not is the passes' doing."""
    oracle.tensorrt_build(case.model)


def test_generator_covers_every_layer_kind() -> None:
    seen: Counter[str] = Counter()
    features: Counter[str] = Counter()

    @settings(max_examples=600, derandomize=True, database=None)
    @given(cnn_models())
    def collect(case) -> None:
        graph = case.model.graph
        seen.update(node.op_type for node in graph.node)
        produced = {name for node in graph.node for name in node.output}
        read = {name for node in graph.node for name in node.input}
        outputs = [o.name for o in graph.output]
        features["multiple_outputs"] += len(outputs) > 1
        features["output_read_internally"] += any(name in read for name in outputs)
        features["dead_tensor"] += any(name not in read and name not in outputs
                                       for name in produced)
        features["two_inputs"] += len(graph.input) > 1
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Conv":
                features["grouped_conv"] += attrs.get("group", 1) > 1
                features["dilated_conv"] += any(d > 1 for d in attrs.get("dilations", [1]))
                features["strided_conv"] += any(s > 1 for s in attrs.get("strides", [1]))
                features["auto_pad_conv"] += "auto_pad" in attrs
                features["conv_without_bias"] += len(node.input) == 2
            if node.op_type in ("Concat", "Split"):
                features[f"{node.op_type}_axis_{attrs.get('axis', 0)}"] += 1

    collect()
    layer_ops = {"Conv", "Add", "Mul", "BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid",
                 "Tanh", "HardSigmoid", "HardSwish", "Elu", "Softplus", "PRelu", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Concat", "Split",
                 "Transpose", "Identity", "Dropout", "Reshape", "Flatten", "Gemm", "MatMul",
                 "Softmax", "Shape", "Gather", "Constant"}
    assert layer_ops <= set(seen), f"never generated: {sorted(layer_ops - set(seen))}"
    wanted = ["multiple_outputs", "output_read_internally", "dead_tensor", "two_inputs",
              "grouped_conv", "dilated_conv", "strided_conv", "auto_pad_conv", "conv_without_bias",
              "Concat_axis_1", "Concat_axis_2", "Split_axis_1", "Split_axis_3"]
    missing = [name for name in wanted if not features[name]]
    assert not missing, f"never generated: {missing}"
