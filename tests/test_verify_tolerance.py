"""The parity rule on known arrays: what passes and what fails at each precision's tolerances.

``|candidate - reference| <= atol + atol_range * max|reference| + rtol * |reference|`` elementwise
(:func:`trtcompile.verify.within_tolerance`), relative to the reference; NaN matches NaN, an
infinity only itself. Each bound is checked from both sides, so a change of the rule (an OR of two
criteria, a relative error of the candidate, a range term from the sum of the output instead of
its largest magnitude) fails here.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from polygraphy.comparator import IterationResult, RunResults

from trtcompile import html_report, ir, verify
from trtcompile.calibration import precision_tolerances

PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: A reference output: signed, magnitudes from 0 to 4 (its largest), a zero, many elements (so a
#: range term taken of the sum of |reference| instead of its maximum would be 60x too large).
REFERENCE = np.array([4.0, -3.0, 2.5, -1.0, 0.5, 0.0, -0.25, 1.5] * 8, dtype=np.float32)


def _passes(reference, candidate, precision: str) -> bool:
    tolerances = precision_tolerances(precision)
    return bool(np.all(verify.within_tolerance(
        reference, candidate, atol=tolerances.atol, rtol=tolerances.rtol,
        atol_range=tolerances.atol_range)))


def _bound(reference: np.ndarray, precision: str) -> np.ndarray:
    """The documented bound, written out independently of the code under test."""
    t = precision_tolerances(precision)
    reference = reference.astype(np.float64)
    return t.atol + t.atol_range * np.max(np.abs(reference)) + t.rtol * np.abs(reference)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_errors_just_within_the_bound_pass(precision: str) -> None:
    bound = _bound(REFERENCE, precision)
    for sign in (1.0, -1.0):
        candidate = REFERENCE.astype(np.float64) + sign * 0.99 * bound
        assert _passes(REFERENCE, candidate, precision), (precision, sign)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_an_error_just_beyond_the_bound_fails_at_each_element(precision: str) -> None:
    bound = _bound(REFERENCE, precision)
    for index in (0, 3, 5):  # the largest value, a small one, the zero
        for sign in (1.0, -1.0):
            candidate = REFERENCE.astype(np.float64).copy()
            candidate[index] += sign * 1.01 * bound[index]
            verdict = verify.within_tolerance(REFERENCE, candidate,
                                              **_tolerance_kwargs(precision))
            assert not verdict[index] and verdict.sum() == verdict.size - 1, (precision, index)


def _tolerance_kwargs(precision: str) -> dict:
    t = precision_tolerances(precision)
    return {"atol": t.atol, "rtol": t.rtol, "atol_range": t.atol_range}


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_a_candidate_one_and_a_half_times_the_reference_fails(precision: str) -> None:
    assert not _passes(REFERENCE, 1.5 * REFERENCE, precision)
    # Element by element as the bound says: the largest values fail; at INT8 the range term
    # (0.1 x 4) covers half of the smaller ones.
    verdict = verify.within_tolerance(REFERENCE, 1.5 * REFERENCE, **_tolerance_kwargs(precision))
    expected = 0.5 * np.abs(REFERENCE.astype(np.float64)) <= _bound(REFERENCE, precision)
    assert verdict.tolist() == expected.tolist()
    assert not verdict[0] and not verdict[1] and verdict[5]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_the_range_term_is_the_largest_magnitude_of_the_output(precision: str) -> None:
    t = precision_tolerances(precision)
    assert verify.output_peak([REFERENCE]) == 4.0
    # Over every iteration, and over finite values only (an infinity must match exactly).
    assert verify.output_peak([np.array([1.0, -2.0]), np.array([np.inf, -3.0, np.nan])]) == 3.0
    assert verify.output_peak([np.array([1, 7], np.int64)]) == 0.0
    # The allowance at the zero element is exactly atol + atol_range * 4.
    allowance = t.atol + t.atol_range * 4.0
    candidate = REFERENCE.astype(np.float64).copy()
    candidate[5] = 0.98 * allowance
    assert _passes(REFERENCE, candidate, precision)
    candidate[5] = 1.02 * allowance
    assert not _passes(REFERENCE, candidate, precision)


def test_the_bound_is_relative_to_the_reference_and_sums_both_terms() -> None:
    tolerances = {"atol": 0.1, "rtol": 0.1}
    # Error 0.15 is beyond atol and 13% of the candidate, but within 0.1 + 0.1 * |1| = 0.2.
    assert verify.within_tolerance(np.array([1.0]), np.array([1.15]), **tolerances).all()
    assert not verify.within_tolerance(np.array([1.0]), np.array([1.21]), **tolerances).any()
    # Error 0.09 is within 0.1 + 0.1 * 0.1, and is 90% of the reference (47% of the candidate).
    assert verify.within_tolerance(np.array([0.1]), np.array([0.19]), **tolerances).all()
    assert verify.error_statistics(np.array([0.1]), np.array([0.19])) == pytest.approx((0.09, 0.9))
    # Without atol, rtol = 0.5 allows 0.05 at 0.1: the candidate is 90% off and fails, although
    # its error is within half of the candidate itself.
    assert not verify.within_tolerance(np.array([0.1]), np.array([0.19]), atol=0.0, rtol=0.5).any()
    # The bound is symmetric around the reference, not around the candidate.
    assert verify.within_tolerance(np.array([1.0]), np.array([0.8]), atol=0.0, rtol=0.2).all()
    assert not verify.within_tolerance(np.array([0.8]), np.array([1.0]), atol=0.0, rtol=0.2).any()


def test_nan_matches_nan_and_an_infinity_only_itself() -> None:
    nan, inf = np.nan, np.inf
    reference = np.array([nan, inf, -inf, 1.0, 1.0, inf, inf, nan], np.float32)
    candidate = np.array([nan, inf, -inf, nan, inf, -inf, 1e30, 0.0], np.float32)
    verdict = verify.within_tolerance(reference, candidate, atol=1e-4, rtol=1e-3, atol_range=0.1)
    assert verdict.tolist() == [True, True, True, False, False, False, False, False]
    # A NaN in the same place only: the output passes, and the matching values count no error.
    same = np.array([nan, 2.0, inf], np.float32)
    assert verify.within_tolerance(same, same.copy(), atol=0.0, rtol=0.0).all()
    assert verify.error_statistics(same, same.copy()) == (0.0, 0.0)
    assert verify.error_statistics(np.array([1.0, 2.0]), np.array([nan, 2.0])) == (np.inf, np.inf)


def test_errors_of_half_precision_outputs_are_judged_in_double() -> None:
    reference = np.array([1000.0], np.float16)
    candidate = np.array([1001.0], np.float16)  # one float16 step (0.5) twice
    assert not verify.within_tolerance(reference, candidate, atol=0.5, rtol=0.0).any()
    assert verify.within_tolerance(reference, candidate, atol=1.0, rtol=0.0).all()


def test_boolean_outputs_must_be_equal() -> None:
    reference = np.array([True, False, True])
    assert verify.within_tolerance(reference, reference.copy(), atol=1.0, rtol=1.0).all()
    verdict = verify.within_tolerance(reference, np.array([True, True, True]), atol=1.0, rtol=1.0)
    assert verdict.tolist() == [True, False, True]


def _results(reference: list[dict], candidate: list[dict]) -> RunResults:
    return RunResults([
        ("input", [IterationResult(outputs, runner_name="input") for outputs in reference]),
        ("optimized", [IterationResult(outputs, runner_name="optimized") for outputs in candidate])])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compare_run_results_applies_the_rule_per_output(precision: str) -> None:
    t = precision_tolerances(precision)
    bound = _bound(REFERENCE, precision)
    close = (REFERENCE + 0.9 * bound).astype(np.float32)
    results = _results([{"good": REFERENCE, "wrong": REFERENCE}],
                       [{"good": close, "wrong": 1.5 * REFERENCE}])
    parity = verify.compare_run_results(results, atol=t.atol, rtol=t.rtol, atol_range=t.atol_range,
                                        reference_name="input", candidate_name="optimized")
    assert parity.outputs["good"].passed and not parity.outputs["wrong"].passed
    assert not parity.passed
    assert parity.outputs["wrong"].max_abs == pytest.approx(2.0)   # 0.5 x 4
    assert parity.outputs["wrong"].max_rel == pytest.approx(0.5)   # of the reference
    assert parity.outputs["good"].max_abs == pytest.approx(float(np.max(close - REFERENCE)))


def test_the_range_term_spans_every_iteration() -> None:
    """A small second batch is judged with the largest magnitude of the whole output."""
    big, small = np.array([10.0, -2.0], np.float32), np.array([0.1, 0.2], np.float32)
    off = small + np.float32(0.5)  # 0.5 off: within 0.1 x 10, beyond 0.1 x 0.2 + 0.1 x 0.2
    results = _results([{"y": big}, {"y": small}], [{"y": big}, {"y": off}])
    kwargs = {"atol": 1e-3, "rtol": 0.1, "reference_name": "input", "candidate_name": "optimized"}
    assert verify.compare_run_results(results, atol_range=0.1, **kwargs).passed
    alone = _results([{"y": small}], [{"y": off}])
    assert not verify.compare_run_results(alone, atol_range=0.1, **kwargs).passed


def test_outputs_that_cannot_be_compared_fail_with_the_reason() -> None:
    results = _results([{"y": REFERENCE, "z": REFERENCE, "w": REFERENCE}],
                       [{"y": REFERENCE[:4], "z": REFERENCE.astype(np.float64), "extra": REFERENCE}])
    parity = verify.compare_run_results(results, atol=1.0, rtol=1.0, reference_name="input",
                                        candidate_name="optimized")
    assert list(parity.outputs) == ["y", "z", "w"]
    assert parity.outputs["y"].change.startswith("changed shape: [64] in the input model, [4]")
    assert parity.outputs["z"].change.startswith("changed element type: float32")
    assert parity.outputs["w"].change == "is missing from the optimized model"
    assert not any(o.passed for o in parity.outputs.values())
    with pytest.raises(ValueError, match="no results of the runner 'engine'"):
        verify.compare_run_results(results, atol=1.0, rtol=1.0, reference_name="input",
                                   candidate_name="engine")


def _scale_model(factor: float) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2,64] x) => (float[2,64] y) {{
          k = Constant<value = float {{{factor!r}}}>()
          y = Mul(x, k)
        }}""")
    model.ir_version = ir.IR_VERSION
    return model


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_parity_fails_a_wrong_model_at_reduced_precision_tolerances(precision: str) -> None:
    """The whole path (seeded inputs, ONNX Runtime, the rule) fails a model computing 1.5x the
    reference at FP16 and INT8 tolerances, and passes one within them."""
    t = precision_tolerances(precision)
    kwargs = {"atol": t.atol, "rtol": t.rtol, "atol_range": t.atol_range, "seed": 0}
    reference = _scale_model(1.0)
    wrong = verify.compare_models(reference, _scale_model(1.5), **kwargs)
    assert not wrong.passed and wrong.outputs["y"].max_rel == pytest.approx(0.5, rel=1e-5)
    assert "FAILED" in wrong.summary()
    close = 1.0 + 0.9 * t.rtol  # within rtol * |reference| alone
    assert verify.compare_models(reference, _scale_model(close), **kwargs).passed


def test_the_html_report_states_the_rule() -> None:
    def paragraph(tolerances: dict) -> str:
        report = {"parity": {"checked": True, "passed": True, "tolerances": tolerances,
                             "comparisons": []}}
        return html_report.engine.parity_section(report).split("</p>")[0]

    plain = paragraph({"seed": 0, "atol": 1e-4, "rtol": 1e-3})
    assert "|candidate - reference| &le; atol + rtol &middot; |reference|" in plain
    ranged = paragraph({"seed": 0, "atol": 1e-3, "rtol": 0.1, "atol_range": 0.1})
    assert "atol_range=0.1" in ranged
    assert ("|candidate - reference| &le; atol + atol_range &middot; max|reference| + rtol "
            "&middot; |reference|") in ranged
