"""precision-fp16 run on its own output changes nothing: the Casts it put at the boundaries stay
as they are (a Cast out of float32 reads float16 as well; a float16-to-float32 Cast is a
boundary), so a second compile of an FP16 model is the same model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort

from trtcompile import ir
from trtcompile.pass_manager import PassManager


def _once(model: onnx.ModelProto, pipeline: str = "precision-fp16") -> onnx.ModelProto:
    graph = ir.import_model(model)
    PassManager(pipeline).run(graph)
    return ir.export_model(graph)


def test_second_run_on_its_output_changes_nothing() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 10, opset_import: ["" : 17]>
    g (float[1,2,4,4] x) => (float[1,2,4,4] y) <float[2,2,1,1] w = {0.5, -0.25, 0.125, 1}> {
      c = Conv(x, w)
      y = Relu(c)
    }""")
    once = _once(model)
    assert [n.op_type for n in once.graph.node] == ["Cast", "Conv", "Relu", "Cast"]
    twice = _once(once)
    assert ir.model_digest(twice) == ir.model_digest(once), onnx.printer.to_text(twice)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
               .run(None, feeds)[0] for m in (once, twice)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
