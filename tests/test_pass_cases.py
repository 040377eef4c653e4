"""Runs every pass's pass cases: structure and counts as recorded, and ONNX Runtime parity."""

from __future__ import annotations

import json

import onnx
import pytest

from tests import pass_cases

CASES = pass_cases.all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pass_case(case: pass_cases.PassCase, request: pytest.FixtureRequest) -> None:
    observed, model, optimized = pass_cases.run_case(case)
    if request.config.getoption("--update-cases"):
        pass_cases.write_expected(case, observed)
    assert case.expected_path.exists(), f"no expectations for {case.id}: run pytest --update-cases"
    expected = json.loads(case.expected_path.read_text())
    assert observed == expected

    onnx.checker.check_model(optimized)
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in optimized.graph.input] == [i.name for i in model.graph.input]
    # Dynamic dimensions stay dynamic: same symbols on the interface, parity at two sizes.
    assert pass_cases.interface_dims(optimized) == pass_cases.interface_dims(model)
    for parity in pass_cases.check_parity(case, model, optimized):
        assert parity.passed, parity.summary()
