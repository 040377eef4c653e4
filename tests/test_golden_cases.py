"""Runs every pass's golden cases: structure and counts as recorded, and ONNX Runtime parity."""

from __future__ import annotations

import json

import onnx
import pytest

from tests import golden

CASES = golden.all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden_case(case: golden.GoldenCase, request: pytest.FixtureRequest) -> None:
    observed, model, optimized = golden.run_case(case)
    if request.config.getoption("--update-golden"):
        golden.write_expected(case, observed)
    assert case.expected_path.exists(), f"no expectations for {case.id}: run pytest --update-golden"
    expected = json.loads(case.expected_path.read_text())
    assert observed == expected

    onnx.checker.check_model(optimized)
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in optimized.graph.input] == [i.name for i in model.graph.input]
    # Dynamic dimensions stay dynamic: same symbols on the interface, parity at two sizes.
    assert golden.interface_dims(optimized) == golden.interface_dims(model)
    for parity in golden.check_parity(case, model, optimized):
        assert parity.passed, parity.summary()
