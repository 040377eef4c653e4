"""Parity feeds overridable initializers (graph inputs with a default) values other than their
defaults, so an optimized model that baked a default in fails parity instead of passing it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from trtcompile.flow.options import CompileOptions
from trtcompile.flow.inputs import overridable_feeds
from trtcompile.flow.parity import check_parity
from trtcompile.frontend import LoadedModel

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x, float[3] scale, int64 steps, bool flag) => (float[2,3] y, int64 n, bool f)
  <float[3] scale = {1, 2, 3}, int64 steps = {0}, bool flag = {1}> {
  y = Mul(x, scale)
  n = Identity(steps)
  f = Not(flag)
}
"""

#: The same model with ``scale`` baked in: no longer an input, a plain constant.
BAKED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x, int64 steps, bool flag) => (float[2,3] y, int64 n, bool f)
  <float[3] scale = {1, 2, 3}, int64 steps = {0}, bool flag = {1}> {
  y = Mul(x, scale)
  n = Identity(steps)
  f = Not(flag)
}
"""


def test_overridable_feeds_differ_from_every_default() -> None:
    model = onnx.parser.parse_model(MODEL)
    drawn = overridable_feeds(model, seed=3)
    assert sorted(drawn) == ["flag", "scale", "steps"]
    assert drawn["scale"].dtype == np.float32 and drawn["scale"].shape == (3,)
    assert np.all(np.abs(drawn["scale"] - [1, 2, 3]) >= 0.5)
    assert drawn["steps"].dtype == np.int64 and drawn["steps"].shape == () and drawn["steps"] == 1
    assert drawn["flag"].shape == () and not drawn["flag"]
    np.testing.assert_array_equal(overridable_feeds(model, seed=3)["scale"], drawn["scale"])
    defaults = overridable_feeds(model, defaults=True)
    np.testing.assert_array_equal(defaults["scale"], [1, 2, 3])


def test_parity_fails_when_a_default_was_baked_in() -> None:
    model = onnx.parser.parse_model(MODEL)
    loaded = LoadedModel(model=model, source_path=None, kind="onnx")
    assert check_parity(loaded, onnx.parser.parse_model(MODEL), CompileOptions()).passed
    verdict = check_parity(loaded, onnx.parser.parse_model(BAKED), CompileOptions())
    assert not verdict.passed
    assert [name for _, name in verdict.failures()] == ["y"]
