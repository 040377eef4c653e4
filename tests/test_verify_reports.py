"""What the parity rule reports and draws: the data range option, the shape sets a model with
unknown dimensions runs at, seeded inputs, the one-line summary and the JSON of a comparison, and
the errors of a model that does not run."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.parser
import pytest
from polygraphy.datatype import DataType

from trtcompile import verify
from trtcompile.errors import InputError
from trtcompile.verify import InputDistribution, OutputParity, ParityResult

RELU = """
<ir_version: 10, opset_import: ["" : 17]>
g (float[{shape}] x) => (float[{shape}] y) {{
  y = Relu(x)
}}"""


def _relu(shape: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(RELU.format(shape=shape))


# --- the data range ------------------------------------------------------------------------------

def test_a_data_range_parses_from_lo_hi() -> None:
    assert InputDistribution.parse(" -1 , 2.5 ") == InputDistribution(-1.0, 2.5)


@pytest.mark.parametrize("text, flag, message", [
    ("1", "--data-range", "--data-range '1': expected LO,HI (two numbers, e.g. -1,1)"),
    ("1,2,3", "--data-range", "--data-range '1,2,3': expected LO,HI (two numbers, e.g. -1,1)"),
    ("1,x", "--range", "--range '1,x': expected LO,HI (two numbers, e.g. -1,1)"),
    ("2,1", "--data-range", "--data-range '2,1': data range needs LO < HI, got 2,1"),
    ("0,inf", "--data-range", "--data-range '0,inf': data range bounds must be finite, got 0,inf"),
    ("-inf,0", "--data-range", "--data-range '-inf,0': data range bounds must be finite, got -inf,0"),
])
def test_a_wrong_data_range_names_the_flag_and_what_is_wrong(text: str, flag: str,
                                                             message: str) -> None:
    with pytest.raises(InputError) as raised:
        if flag == "--data-range":
            InputDistribution.parse(text)
        else:
            InputDistribution.parse(text, flag)
    assert str(raised.value) == message


def test_a_data_range_needs_both_bounds() -> None:
    with pytest.raises(ValueError, match="^give both bounds of the data range or neither$"):
        InputDistribution(0.0, None)


def test_a_distribution_describes_and_reports_itself() -> None:
    assert verify.DEFAULT_DISTRIBUTION.describe() == "standard normal"
    assert verify.DEFAULT_DISTRIBUTION.to_dict() == {
        "floating_point": "standard normal", "integer": "Polygraphy default (0 or 1)"}
    assert InputDistribution(0, 255).to_dict() == {
        "floating_point": "uniform [0, 255)", "integer": "Polygraphy default (0 or 1)",
        "range": [0, 255]}


def test_a_range_draws_inside_it_in_the_dtype_asked() -> None:
    values = InputDistribution(2.0, 3.0).draw(np.random.default_rng(0), [1000], np.float16)
    assert values.dtype == np.float16 and values.min() >= 2.0 and values.max() <= 3.0


# --- inputs and shape sets ------------------------------------------------------------------------

def test_unknown_dimensions_run_at_each_size_and_known_ones_keep_theirs() -> None:
    model = _relu("1,N,4")
    assert verify.dynamic_shape_sets(model) == [{"x": [1, 1, 4]}, {"x": [1, 3, 4]}]
    assert verify.dynamic_shape_sets(model, sizes=(2,)) == [{"x": [1, 2, 4]}]


def test_a_dimension_written_as_zero_counts_as_unknown() -> None:
    assert verify.dynamic_shape_sets(_relu("0,4")) == [{"x": [1, 4]}, {"x": [3, 4]}]


def test_static_or_fixed_inputs_run_once() -> None:
    assert verify.dynamic_shape_sets(_relu("2,4")) == [None]
    assert verify.dynamic_shape_sets(_relu("N,4"), {"x": [5, 4]}) == [{"x": [5, 4]}]


def test_an_overridable_initializer_is_no_input_to_draw() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[2] x, float[N] w) => (float[2] y) <float[2] w = {1, 2}> {
          y = Add(x, w)
        }""")
    assert verify.dynamic_shape_sets(model) == [None]
    metadata = verify.input_metadata(model)
    assert list(metadata.keys()) == ["x"]


def test_input_metadata_gives_unknown_dimensions_1_unless_given() -> None:
    metadata = verify.input_metadata(_relu("N,4"))
    assert (metadata["x"].dtype, list(metadata["x"].shape)) == (DataType.FLOAT32, [1, 4])
    assert list(verify.input_metadata(_relu("N,4"), {"x": [6, 4]})["x"].shape) == [6, 4]


def test_feeds_are_drawn_with_seed_0_unless_told() -> None:
    model = _relu("3,4")
    default = verify.feed_data(model)
    np.testing.assert_array_equal(default["x"], verify.feed_data(model, 0)["x"])
    assert not np.array_equal(default["x"], verify.feed_data(model, 1)["x"])


def test_a_session_runs_on_the_cpu_without_a_word(capfd) -> None:
    session = verify.inference_session(_relu("2"))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert capfd.readouterr() == ("", "")


def test_a_model_that_does_not_run_is_named_with_the_end_of_the_reason() -> None:
    """ONNX Runtime's message about an op it does not know, named at length: the reason keeps
    its last 300 characters."""
    op = "Unknown" + "Op" * 200
    model = onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17, "custom" : 1]>
        g (float[2,3] x) => (float[2,3] y) {{
          y = custom.{op}(x)
        }}""")
    with pytest.raises(verify.ModelRunError) as raised:
        verify.run_model(model, {"x": np.zeros((2, 3), np.float32)}, "optimized")
    error = raised.value
    assert error.which == "optimized" and error.input_shapes == {"x": [2, 3]}
    assert len(error.reason) == 300 and "OpOpOp" in error.reason
    assert str(error) == f"the optimized model does not run on ONNX Runtime: {error.reason}"


# --- comparisons and their reports ------------------------------------------------------------------

def test_compare_models_reports_the_default_seed_and_the_input_shapes() -> None:
    model = _relu("N,4")
    parity = verify.compare_models(model, model)
    assert parity.passed and parity.inputs == "standard normal, seed 0"
    assert parity.input_shapes == {"x": [1, 4]}
    assert parity.summary().startswith("passed (optimized vs input at x:1x4, atol=")


def test_compare_models_runs_the_given_batches() -> None:
    model = _relu("2")
    feeds = [{"x": np.array([-1.0, 2.0], np.float32)}, {"x": np.array([3.0, -4.0], np.float32)}]
    parity = verify.compare_models(model, model, data=feeds)
    assert parity.passed and parity.inputs == "" and parity.input_shapes == {"x": [2]}
    empty = verify.compare_models(model, model, data=[])
    assert not empty.passed and empty.input_shapes == {} and empty.summary() == "no outputs compared"


def _results(reference: dict, candidate: dict):
    return [("input", [reference]), ("optimized", [candidate])]


def test_changed_outputs_are_each_named_in_the_summary_and_the_json() -> None:
    reference = {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}
    candidate = {"b": np.zeros(3, np.float32)}
    parity = verify.compare_run_results(_results(reference, candidate), atol=0.1, rtol=0.0,
                                        reference_name="input", candidate_name="optimized")
    parity.input_shapes = {"x": [1, 3]}
    assert parity.summary() == (
        "FAILED (optimized vs input at x:1x3): output 'a' is missing from the optimized model; "
        "'b' changed shape: [2] in the input model, [3] in the optimized model")
    assert parity.to_dict() == {
        "passed": False, "reference": "input", "candidate": "optimized", "atol": 0.1, "rtol": 0.0,
        "atol_range": 0.0, "input_shapes": {"x": [1, 3]}, "inputs": "",
        "outputs": {"a": {"max_abs": float("inf"), "max_rel": float("inf"), "passed": False,
                          "change": "is missing from the optimized model"},
                    "b": {"max_abs": float("inf"), "max_rel": float("inf"), "passed": False,
                          "change": "changed shape: [2] in the input model, [3] in the "
                                    "optimized model"}},
        "note": ""}


def test_the_summary_names_the_worst_output() -> None:
    parity = ParityResult("input", "optimized", 0.001, 0.01, outputs={
        "small": OutputParity(0.0001, 0.001, True), "large": OutputParity(0.01, 0.5, False),
        "middle": OutputParity(0.001, 0.002, True)})
    assert parity.summary() == ("FAILED (optimized vs input, atol=0.001, rtol=0.01; worst output "
                                "'large': max_abs=0.01, max_rel=0.5)")


def test_atol_range_widens_the_bound_only_when_asked() -> None:
    references, candidates = [np.array([10.0, 0.0])], [np.array([10.0, 0.5])]
    assert not verify.compare_output(references, candidates, atol=0.1, rtol=0.0).passed
    assert verify.compare_output(references, candidates, atol=0.1, rtol=0.0, atol_range=0.05).passed
    results = _results({"y": references[0]}, {"y": candidates[0]})
    parity = verify.compare_run_results(results, atol=0.1, rtol=0.0, reference_name="input",
                                        candidate_name="optimized", atol_range=0.05)
    assert parity.passed and parity.to_dict()["atol_range"] == 0.05


def test_the_peak_skips_outputs_that_are_not_floating_point() -> None:
    assert verify.output_peak([np.array([7, -9]), np.array([2.0, -3.0])]) == 3.0


def test_error_statistics_of_infinities_and_nans_warn_nothing() -> None:
    reference = np.array([np.inf, np.nan, 1.0, -np.inf])
    candidate = np.array([np.inf, 1.0, np.nan, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert verify.error_statistics(reference, candidate) == (np.inf, np.inf)
        assert verify.error_statistics(reference[:1], candidate[:1]) == (0.0, 0.0)


def test_an_output_changing_in_a_later_batch_is_named_too() -> None:
    reference = {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}
    results = [("input", [reference, reference]),
               ("optimized", [{"b": np.zeros(2, np.float32)}, {"b": np.zeros(3, np.float32)}])]
    parity = verify.compare_run_results(results, atol=0.1, rtol=0.0, reference_name="input",
                                        candidate_name="optimized")
    assert {name: o.change for name, o in parity.outputs.items()} == {
        "a": "is missing from the optimized model",
        "b": "changed shape: [2] in the input model, [3] in the optimized model"}
