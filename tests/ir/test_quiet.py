"""Library chatter about graphs trtcompile builds for itself stays out of the user's terminal:
onnx-graphsurgeon's warnings and ONNX Runtime's, whose sessions onnx-graphsurgeon opens to fold
constants, are silenced in :func:`trtcompile.ir.quiet_graphsurgeon`, and ONNX Runtime's severity
is what it was afterwards."""

from __future__ import annotations

import onnx.parser
import pytest

from trtcompile import ir

#: A model ONNX Runtime warns about on load ("Removing initializer 'unused'. It is not used by any
#: node and should be removed from the model.").
MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) <float[2] unused = {1.0, 2.0}> {
    y = Relu (x)
}
"""


def _load_session() -> None:
    import onnxruntime

    onnxruntime.InferenceSession(onnx.parser.parse_model(MODEL).SerializeToString(),
                                 providers=["CPUExecutionProvider"])


@pytest.fixture
def warnings_shown():
    """ONNX Runtime at its default severity (an earlier `trtcompile -q` in this process may have
    raised it), put back afterwards."""
    before = ir.io._ort_severity
    ir.set_onnxruntime_severity(ir.io.ORT_WARNING_SEVERITY)
    yield
    ir.set_onnxruntime_severity(before)


def test_onnxruntime_warnings_are_silenced_inside_and_restored_after(
        warnings_shown, capfd: pytest.CaptureFixture) -> None:
    with ir.quiet_graphsurgeon():
        _load_session()
    assert "Removing initializer" not in capfd.readouterr().err
    _load_session()
    assert "Removing initializer 'unused'" in capfd.readouterr().err


def test_a_severity_trtcompile_set_is_the_one_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    calls: list[int] = []
    monkeypatch.setattr(onnxruntime, "set_default_logger_severity", calls.append)
    monkeypatch.setattr(ir.io, "_ort_severity", ir.io.ORT_WARNING_SEVERITY)
    ir.set_onnxruntime_severity(4)  # as `trtcompile -q` sets errors only, here fatal only
    with ir.quiet_graphsurgeon():
        pass
    assert calls == [4, 4, 4]  # raised to at least errors (already above), then restored
