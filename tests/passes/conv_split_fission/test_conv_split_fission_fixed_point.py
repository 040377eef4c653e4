"""conv-split-fission leaves no dead node: a Split output nothing reads gets no piece, so the
default pipeline run on its own output removes nothing more (the held-out random graph whose
second compile removed two dead convolutions)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from trtcompile import ir
from trtcompile.pass_manager import PassManager

MODEL = """
<ir_version: 10, opset_import: ["" : 17]>
g (float[2,4,11,8] x) => (float[2,2,5,4] y, float[2,4] z) <int64[3] sizes = {1, 1, 2}> {
  c = Conv<kernel_shape = [3, 1], strides = [2, 2], pads = [0, 0, 2, 0], dilations = [2, 1]>(x, W)
  a, b, y = Split<axis = 1>(c, sizes)
  flat = Flatten(x)
  z = Gemm(flat, fc)
}
"""


def _model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(MODEL)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([
        onnx.numpy_helper.from_array(rng.uniform(-1, 1, (4, 4, 3, 1)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(rng.uniform(-1, 1, (352, 4)).astype(np.float32), "fc")])
    onnx.checker.check_model(model, full_check=True)
    return model


def _optimize(model: onnx.ModelProto):
    graph = ir.import_model(model)
    report = PassManager("default").run(graph)
    assert ir.dead_nodes(graph) == []
    return ir.export_model(graph), report


def test_default_pipeline_leaves_no_dead_piece_and_is_a_fixed_point() -> None:
    once, report = _optimize(_model())
    assert [n.op_type for n in once.graph.node] == ["Conv", "Flatten", "Gemm"]
    fission = next(r for r in report.records if r.name == "conv-split-fission")
    assert fission.counts == {"split_convs": 1, "conv_pieces": 1}
    twice, again = _optimize(once)
    assert ir.model_digest(twice) == ir.model_digest(once)
    assert not any(record.changed for record in again.records)
