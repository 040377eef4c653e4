"""The float32 emulation of bfloat16 models ONNX Runtime's CPU provider runs (trtcompile.ir.bfloat16)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest

from trtcompile import ir, verify


def bf16(values) -> np.ndarray:
    return np.asarray(values, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def test_bfloat16_inputs_outputs_and_constants_run_as_float32_rounded():
    """A graph whose interface is bfloat16: fed float32, rounded on entry; a bfloat16 Constant
    becomes float32 exactly; every stored result is rounded."""
    model = onnx.parser.parse_model('''
        <ir_version: 10, opset_import: ["" : 17]>
        g (bfloat16[3] x) => (bfloat16[3] y) {
          c = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
          s = Mul(x, c)
          y = Add(s, x)
        }''')
    constant = model.graph.node[0].attribute[0]
    constant.t.CopyFrom(onnx.numpy_helper.from_array(
        np.array([1, 2, 3], np.float32).astype(ml_dtypes.bfloat16), constant.t.name))
    onnx.checker.check_model(model)
    with pytest.raises(Exception):  # as written: no bfloat16 Mul on the CPU provider
        import onnxruntime as ort

        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([1.00390625 * 1.01, 3.14159, -7.77], np.float32)
    (y,) = verify.inference_session(model).run(None, {"x": x})
    assert y.dtype == np.float32
    rounded = bf16(x)
    np.testing.assert_array_equal(y, bf16(bf16(rounded * [1, 2, 3]) + rounded))


def test_local_function_bodies_in_bfloat16_are_inlined_and_rounded():
    model = onnx.parser.parse_model('''
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[4] x) => (float[4] y) {
          xb = Cast <to = 16> (x)
          zb = local.Square(xb)
          y = Cast <to = 1> (zb)
        }
        <domain: "local", opset_import: ["" : 17]>
        Square (a) => (b) {
          b = Mul(a, a)
        }''')
    assert ir.bfloat16.computes_in_bfloat16(model)
    emulated = ir.bfloat16.emulate_bfloat16(model)
    assert not emulated.functions
    # bfloat16 is left only where tensors are rounded: Casts to it, read by Casts back.
    producers = {out: node for node in emulated.graph.node for out in node.output}
    rounding = [node for node in emulated.graph.node if node.op_type == "Cast"
                and node.attribute[0].i == onnx.TensorProto.BFLOAT16]
    assert rounding and all(producers[node.input[0]].op_type != "Cast" or
                            producers[node.input[0]].attribute[0].i != onnx.TensorProto.BFLOAT16
                            for node in rounding)
    readers = [node for node in emulated.graph.node
               if any(name in {r.output[0] for r in rounding} for name in node.input)]
    assert {node.op_type for node in readers} == {"Cast"}
    x = np.array([1.1, 2.3, -3.7, 100.3], np.float32)
    (y,) = verify.inference_session(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, bf16(bf16(x) * bf16(x)))
