"""Writes the small ONNX models (and parity data) of the project's golden manifest.

Deterministic: the same bytes on every run (``tests/test_golden_manifest.py`` checks the committed
files against a fresh build). Run ``python tests/golden/make_models.py`` after changing a model,
then ``trtcompile golden tests/golden/manifest.toml --update`` and review the counts.

* ``conv_branches.onnx``: Conv+BatchNorm+Relu stem, three parallel 1x1 Conv+Relu branches reading
  the stem (horizontal fusion), a Concat of the branches (concat elimination), a 1x1 Conv head;
* ``nhwc_transposes.onnx``: an NHWC input moved to NCHW around each of two Conv+Relu layers, with
  the NCHW->NHWC->NCHW Transpose pairs between them (transpose cancellation); parity runs on
  ``nhwc_transposes.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 7
OPSET = 17


def _weights(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3):
    return numpy_helper.from_array(rng.normal(0.0, scale, shape).astype(np.float32), name)


def conv_branches() -> onnx.ModelProto:
    """Stem Conv-BN-Relu (4 -> 8 channels, 8x8), three 1x1 Conv-Relu branches, Concat, 1x1 head."""
    rng = np.random.default_rng(SEED)
    inits = [
        _weights(rng, "stem.weight", (8, 4, 3, 3)), _weights(rng, "stem.bias", (8,), 0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.scale"),
        numpy_helper.from_array(rng.uniform(-0.2, 0.2, 8).astype(np.float32), "bn.shift"),
        numpy_helper.from_array(rng.uniform(-0.2, 0.2, 8).astype(np.float32), "bn.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.var"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "stem.weight", "stem.bias"], ["stem_out"], name="stem_conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["stem_out", "bn.scale", "bn.shift", "bn.mean", "bn.var"],
                         ["bn_out"], name="stem_bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn_out"], ["stem_relu_out"], name="stem_relu"),
    ]
    branches = []
    for index, channels in enumerate((4, 6, 2)):
        inits += [_weights(rng, f"branch{index}.weight", (channels, 8, 1, 1)),
                  _weights(rng, f"branch{index}.bias", (channels,), 0.1)]
        nodes += [
            helper.make_node("Conv", ["stem_relu_out", f"branch{index}.weight", f"branch{index}.bias"],
                             [f"branch{index}_conv_out"], name=f"branch{index}_conv", kernel_shape=[1, 1]),
            helper.make_node("Relu", [f"branch{index}_conv_out"], [f"branch{index}_out"],
                             name=f"branch{index}_relu"),
        ]
        branches.append(f"branch{index}_out")
    inits += [_weights(rng, "head.weight", (3, 12, 1, 1)), _weights(rng, "head.bias", (3,), 0.1)]
    nodes += [
        helper.make_node("Concat", branches, ["concat_out"], name="branches_concat", axis=1),
        helper.make_node("Conv", ["concat_out", "head.weight", "head.bias"], ["output"],
                         name="head_conv", kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "conv_branches",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    return _model(graph)


def nhwc_transposes() -> onnx.ModelProto:
    """NHWC input (1x6x6x3); each Conv-Relu is wrapped in NHWC->NCHW and NCHW->NHWC Transposes."""
    rng = np.random.default_rng(SEED + 1)
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    inits = [_weights(rng, "conv1.weight", (5, 3, 3, 3)), _weights(rng, "conv1.bias", (5,), 0.1),
             _weights(rng, "conv2.weight", (4, 5, 3, 3)), _weights(rng, "conv2.bias", (4,), 0.1)]
    nodes = []
    current = "input"
    for index in (1, 2):
        nodes += [
            helper.make_node("Transpose", [current], [f"t{index}_in"], name=f"to_nchw{index}", perm=to_nchw),
            helper.make_node("Conv", [f"t{index}_in", f"conv{index}.weight", f"conv{index}.bias"],
                             [f"conv{index}_out"], name=f"conv{index}", kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"conv{index}_out"], [f"relu{index}_out"], name=f"relu{index}"),
            helper.make_node("Transpose", [f"relu{index}_out"],
                             ["output" if index == 2 else f"t{index}_out"], name=f"to_nhwc{index}",
                             perm=to_nhwc),
        ]
        current = f"t{index}_out"
    graph = helper.make_graph(
        nodes, "nhwc_transposes",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 6, 6, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, 6, 4])], inits)
    return _model(graph)


def nhwc_transposes_data() -> dict[str, np.ndarray]:
    """Parity inputs of ``nhwc_transposes.onnx``: a smooth image-like ramp plus seeded noise."""
    rng = np.random.default_rng(SEED + 2)
    ramp = np.linspace(-1.0, 1.0, 6 * 6 * 3, dtype=np.float32).reshape(1, 6, 6, 3)
    return {"input": (ramp + rng.normal(0.0, 0.1, ramp.shape)).astype(np.float32)}


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="trtcompile.tests.golden")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


#: File name -> bytes, for every file this script writes.
def build() -> dict[str, bytes]:
    import io

    data = io.BytesIO()
    np.savez(data, **nhwc_transposes_data())
    return {
        "conv_branches.onnx": conv_branches().SerializeToString(),
        "nhwc_transposes.onnx": nhwc_transposes().SerializeToString(),
        "nhwc_transposes.npz": data.getvalue(),
    }


def main(folder: Path = HERE) -> int:
    for name, content in build().items():
        (folder / name).write_bytes(content)
        print(f"wrote {folder / name} ({len(content)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
