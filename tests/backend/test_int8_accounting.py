"""The INT8 layer accounting, on layer messages of real INT8 builds (tests/backend/data, recorded by
``python -m tests.backend.capture_logs --int8`` from tests/backend/int8_models.py) and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.backend import int8_models, models
from trtcompile.backend.engine_report import read_layer_report
from trtcompile.backend.int8_accounting import account_int8, classify_layers

DATA = Path(__file__).resolve().parent / "data"


def accounting_of(name: str):
    """The accounting of capture ``name`` (its layer message and the graph it was built from)."""
    model = onnx.parser.parse_model((DATA / f"{name}.onnxtxt").read_text())
    report = read_layer_report((DATA / f"{name}.layers.txt").read_text(),
                               {node.name for node in model.graph.node})
    assert report.problems == []
    compute = sum(1 for layer in report.layers if layer.compute and layer.profile == 0)
    return account_int8(report.layers, model), report.layers, compute


def records(accounting) -> dict[str, dict]:
    return {record["node"]: record for record in accounting.to_dict()["layers"]}


NETWORK_INPUT_REASON = ("{node}: QuantizeLinear input_quantize on the network input input runs as "
                        "a kernel of its own (the input arrives in Float)")


def test_parser_keeps_the_dataflow_without_constants():
    _, layers, _ = accounting_of("concat_pooling_int8")
    quantize, product = layers[0], layers[1]
    assert quantize.input_tensors == ["input"]  # its Int8 and Float constants are not inputs
    assert product.type == "correlation" and product.input_tensors == quantize.output_tensors
    assert len(product.output_tensors) == 1 and layers[2].input_tensors == product.output_tensors


def test_residual_blocks_cost_one_product_and_one_epilogue_per_convolution():
    accounting, _, compute = accounting_of("residual_blocks_int8")
    assert accounting.classes == {"product": 12, "epilogue": 10, "reformat": 0, "qdq": 1,
                                  "other": 3}
    assert sum(accounting.classes.values()) == compute == 26
    by_node = records(accounting)
    assert len(by_node) == 12 and all(r["product_precisions"] == ["INT8"] for r in by_node.values())
    assert all(len(r["products"]) == 1 and len(r["epilogues"]) == 1 for r in by_node.values())
    # A projection block's two convolutions meet in the residual Add: one epilogue for both.
    for block in ("b0", "b2"):
        assert by_node[f"{block}_c3"]["epilogues"] == by_node[f"{block}_proj"]["epilogues"]
    assert by_node["b1_c3"]["epilogues"] != by_node["b1_c2"]["epilogues"]
    # No reformat anywhere; the one extra layer is the quantization of the network input.
    assert [p.to_dict() for p in accounting.placements] == [{
        "node": "stem", "layers": ["__myl_MulMinMaxRounCastConc_myl0_0"], "between_int8": False,
        "reason": NETWORK_INPUT_REASON.format(node="stem")}]
    assert by_node["stem"]["engine_layers"] == 3 and by_node["b1_c1"]["engine_layers"] == 2
    assert accounting.summary() == (
        "INT8: 12 quantized layers -> 12 products + 10 epilogues + 0 reformats + 1 Q/DQ kernels "
        "(other layers 3); no placement costs a layer between INT8 layers; 1 network input "
        "quantization kernel")


def test_a_pair_on_the_residual_skip_input_changes_what_the_epilogue_reads_not_the_layers():
    plain, plain_layers, _ = accounting_of("residual_blocks_int8")
    paired, paired_layers, compute = accounting_of("residual_blocks_skip_dq_int8")
    assert paired.classes == plain.classes and compute == 26
    assert paired.costly_placements == []

    def skip_read(layers, accounting):
        epilogue = records(accounting)["b1_c3"]["epilogues"][0]
        return next(layer.input_datatypes for layer in layers if layer.name == epilogue)

    # The builder took the placement: the epilogue reads the skip in Int8 instead of Float.
    assert "Int8" in skip_read(paired_layers, paired)
    assert "Int8" not in skip_read(plain_layers, plain)


def test_the_quantize_after_average_pool_is_a_named_placement():
    accounting, _, compute = accounting_of("concat_pooling_int8")
    assert accounting.classes == {"product": 7, "epilogue": 5, "reformat": 0, "qdq": 2,
                                  "other": 4}
    assert sum(accounting.classes.values()) == compute == 18
    by_node = records(accounting)
    # The three branches end in one epilogue (the Concat and its requantization).
    assert by_node["br_a"]["epilogues"] == by_node["br_b2"]["epilogues"] == \
        by_node["br_c"]["epilogues"]
    # MaxPool between two INT8 layers runs in Int8 and costs nothing; AveragePool does not.
    assert by_node["br_c"]["qdq"] == [] and by_node["br_c"]["reformats"] == []
    assert by_node["after_avg"]["qdq"] == ["__myl_MulMinMaxRounCast_myl0_13"]
    assert [p.to_dict() for p in accounting.costly_placements] == [{
        "node": "after_avg", "layers": ["__myl_MulMinMaxRounCast_myl0_13"], "between_int8": True,
        "reason": "after_avg: QuantizeLinear avg_out_quantize on the output of AveragePool avg "
                  "runs as a kernel of its own (avg runs in FP32 between two INT8 layers)"}]
    assert "; 1 placement costs extra layers between INT8 layers (see report);" in \
        accounting.summary()


def test_a_pair_before_the_average_pool_does_not_remove_its_quantize_kernel():
    plain, _, _ = accounting_of("concat_pooling_int8")
    paired, layers, _ = accounting_of("concat_pooling_avg_pair_int8")
    assert paired.classes == plain.classes
    assert [p.node for p in paired.costly_placements] == ["after_avg"]
    pool = next(layer for layer in layers if layer.onnx_nodes == ["avg"])
    assert pool.type == "avgpool" and pool.precision == "FP32"


def test_transformer_matmul_chain():
    accounting, layers, compute = accounting_of("matmul_chain_int8")
    assert accounting.classes == {"product": 6, "epilogue": 6, "reformat": 0, "qdq": 1,
                                  "other": 2}
    assert sum(accounting.classes.values()) == compute
    products = {name for r in accounting.layers for name in r.products}
    assert {layer.type for layer in layers if layer.name in products} == {"gemm"}
    assert [p.node for p in accounting.placements] == ["l0_fc1"]
    assert accounting.costly_placements == []


def test_a_gemm_shared_by_the_q_k_v_projections_has_one_epilogue_per_projection():
    accounting, layers, compute = accounting_of("attention_projections_int8")
    assert accounting.classes == {"product": 2, "epilogue": 4, "reformat": 0, "qdq": 0,
                                  "other": 6}
    assert sum(accounting.classes.values()) == compute
    by_node = records(accounting)
    shared = by_node["q"]["products"]
    assert shared == by_node["k"]["products"] == by_node["v"]["products"] == ["v+k+q_myl0_1"]
    epilogues = [by_node[part]["epilogues"] for part in "qkv"]
    assert all(len(e) == 1 for e in epilogues) and len({e[0] for e in epilogues}) == 3
    # The attention MatMuls (two activations) are not quantized: float GEMMs, class "other".
    assert {layer.type for layer in layers if layer.name in ("scores_myl0_4", "context_myl0_7")} \
        == {"gemm"}
    assert "scores" not in by_node and accounting.placements == []


def test_squeeze_excitation_expand_runs_inside_the_reduce_epilogue():
    accounting, layers, compute = accounting_of("squeeze_excitation_int8")
    assert accounting.classes == {"product": 3, "epilogue": 3, "reformat": 0, "qdq": 2,
                                  "other": 4}
    assert sum(accounting.classes.values()) == compute
    by_node = records(accounting)
    # The 4-channel gate's 1x1 expand has no product: the reduce's epilogue computes it ("Corr").
    assert by_node["se_expand"]["products"] == [] and by_node["se_expand"]["engine_layers"] == 0
    assert by_node["se_expand"]["inside"] == by_node["se_reduce"]["epilogues"]
    assert "Corr" in by_node["se_expand"]["inside"][0]
    assert all(by_node[name]["inside"] == [] for name in ("stem", "se_reduce", "after_se"))
    # The squeeze (GlobalAveragePool, an AveragePool in the optimized graph) runs in Float and
    # its output is quantized by a kernel of its own, like concat_pooling's AveragePool.
    assert [(p.node, p.layers) for p in accounting.costly_placements] == [
        ("se_reduce", ["__myl_MulMinMaxRounCast_myl0_4"])]
    assert "AveragePool se_pool" in accounting.costly_placements[0].reason
    assert "; 1 quantized layer runs inside another kernel (no product of its own);" in \
        accounting.summary()


@pytest.mark.parametrize("capture", ["split_heads_int8", "split_heads_pair_before_reshape_int8"])
def test_reshape_and_transpose_between_two_matmuls_fold_into_the_epilogue(capture):
    accounting, layers, compute = accounting_of(capture)
    assert accounting.classes == {"product": 2, "epilogue": 2, "reformat": 0, "qdq": 1,
                                  "other": 1}
    assert sum(accounting.classes.values()) == compute == 6
    epilogue = next(layer for layer in layers
                    if layer.name == records(accounting)["qkv"]["epilogues"][0])
    # Wherever the pair sits, the requantization, Reshape and Transpose run in one kernel.
    assert {"split", "heads_first"} <= set(epilogue.onnx_nodes) and epilogue.datatypes == ["Int8"]
    assert accounting.costly_placements == []


def test_a_float_engine_has_no_accounting_and_its_layout_moves_are_reformats():
    message = (DATA / "conv_relu.layers.txt").read_text()
    model = models.conv_relu_model()
    layers = read_layer_report(message, {node.name for node in model.graph.node}).layers
    assert account_int8(layers, model) is None
    classes = classify_layers(layers, quantized=[], qdq=[])
    assert classes == {"__myl_Move_myl0_0": "reformat", layers[1].name: "other",
                       "__myl_Tran_myl0_2": "reformat"}


def test_a_graph_without_its_engine_layers_is_not_accounted():
    model = onnx.parser.parse_model((DATA / "concat_pooling_int8.onnxtxt").read_text())
    assert account_int8([], model) is None


# End to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """concat_pooling compiled at INT8 and FP32 through the flow (engines built, no parity)."""
    from trtcompile.flow import CompileOptions, compile_model

    work = tmp_path_factory.mktemp("int8_accounting")
    source = work / "model.onnx"
    onnx.save(int8_models.concat_pooling(), source)
    np.savez(work / "calib.npz", **int8_models.calibration_samples("concat_pooling"))
    results = {}
    for precision in ("int8", "fp32"):
        options = CompileOptions(precision=precision, parity=False, engine_check=False,
                                 progress=False,
                                 calib_data=str(work / "calib.npz") if precision == "int8" else None)
        results[precision] = compile_model(source, work / precision, options)
    return results


def test_end_to_end_accounting_covers_the_engine(compiled):
    from trtcompile.html_report import render_html
    from trtcompile.report import render

    result = compiled["int8"]
    engine = result.report["engine"]
    accounting = engine["int8"]
    assert sum(accounting["classes"].values()) == accounting["compute_layers"] == \
        engine["compute_layers"]
    quantized = sum(1 for node in result.optimized.graph.node
                    if any(name.endswith("_dequantized") for name in node.input)
                    and node.op_type not in ("QuantizeLinear", "DequantizeLinear"))
    assert accounting["quantized_layers"] == accounting["classes"]["product"] == quantized == 7
    assert accounting["classes"]["reformat"] == 0
    assert [p["node"] for p in accounting["placements"] if p["between_int8"]] == ["after_avg"]
    assert f"  {accounting['summary']}" in render(result.report).splitlines()
    html = render_html(result.report)
    assert 'id="int8-accounting"' in html and html.count('class="int8-row') == 7
    assert 'id="int8-placements"' in html and "AveragePool avg" in html


def test_end_to_end_float_engine_has_no_accounting(compiled):
    from trtcompile.html_report import render_html
    from trtcompile.report import render

    report = compiled["fp32"].report
    assert report["engine"]["built"] and report["engine"]["compute_layers"] > 0
    assert report["engine"]["int8"] is None
    assert "INT8:" not in render(report) and "int8-accounting" not in render_html(report)


def test_a_partition_segment_engine_report_carries_its_accounting():
    from trtcompile.backend.engine_report import EngineBuild
    from trtcompile.flow.partitioning import Segment

    model = onnx.parser.parse_model((DATA / "concat_pooling_int8.onnxtxt").read_text())
    layers = read_layer_report((DATA / "concat_pooling_int8.layers.txt").read_text(),
                               {node.name for node in model.graph.node}).layers
    build = EngineBuild(plan=b"plan", backend="tensorrt_rtx", version="1.7", layers=layers,
                        build_seconds=0.1)
    segment = Segment(name="trt_segment_0", index=0, nodes=[n.name for n in model.graph.node],
                      compute_nodes=7, model=model, engine=build, engine_path="segment_0.engine")
    report = segment.to_dict()["engine_report"]
    assert report["int8"]["classes"] == {"product": 7, "epilogue": 5, "reformat": 0, "qdq": 2,
                                         "other": 4}
    assert report["int8"]["compute_layers"] == report["compute_layers"] == 18
