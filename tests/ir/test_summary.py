"""The structural fingerprint and the graph summary the pass manager takes after every pass: what
changes the fingerprint (in-place writes included), what does not, and that one walk gives the
same layer count and op histogram as the helpers that count them."""

from __future__ import annotations

import gc

import numpy as np
import onnx.parser
import onnx_graphsurgeon as gs

from trtcompile import ir


def _graph() -> gs.Graph:
    """x -> Conv(W, B, pads) -> Relu -> Identity -> y, with a local function in the graph."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17, "local" : 1]>
        g (float[1,3,8,8] x) => (float[1,4,8,8] y) {
            c = Conv<pads = [1, 1, 1, 1]>(x, W, B)
            r = Relu(c)
            y = local.Same(r)
        }
        <domain: "local", opset_import: ["" : 17]>
        Same (a) => (b) {
            b = Identity(a)
        }
    """)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([
        onnx.numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "B")])
    return ir.import_model(model)


def _conv(graph: gs.Graph) -> gs.Node:
    return next(node for node in graph.nodes if node.op == "Conv")


def test_reading_a_graph_leaves_its_fingerprint_alone() -> None:
    graph = _graph()
    before = ir.fingerprint(graph)
    ir.export_model(graph.copy())
    ir.op_histogram(graph)
    assert ir.fingerprint(graph) == before == ir.summarize(graph).fingerprint


def test_a_weight_written_in_place_changes_the_fingerprint() -> None:
    graph = _graph()
    before = ir.fingerprint(graph)
    weight = _conv(graph).inputs[1].values
    weight[0, 0, 0, 0] += 1.0  # the same array object, other bytes
    assert ir.fingerprint(graph) != before


def test_a_weight_replaced_by_an_equal_new_array_changes_it_too() -> None:
    """Identity still counts, as it always did: a pass that makes new weights changed the graph."""
    graph = _graph()
    before = ir.fingerprint(graph)
    constant = _conv(graph).inputs[1]
    constant.values = constant.values.copy()
    assert ir.fingerprint(graph) != before


def test_a_change_past_the_first_bytes_of_an_array_attribute_is_seen() -> None:
    graph = _graph()
    relu = next(node for node in graph.nodes if node.op == "Relu")
    relu.attrs["table"] = np.zeros(1000, dtype=np.float32)
    before = ir.fingerprint(graph)
    relu.attrs["table"][999] = 1.0
    assert ir.fingerprint(graph) != before


def test_structural_changes_change_the_fingerprint() -> None:
    edits = [
        lambda g: _conv(g).attrs["pads"].__setitem__(0, 0),   # an attribute list, in place
        lambda g: setattr(_conv(g), "name", "renamed"),
        lambda g: setattr(g.outputs[0], "shape", [1, 4, 8, None]),
        lambda g: g.nodes.reverse(),
        lambda g: g.functions[0].nodes[0].__setattr__("op", "Relu"),  # inside a function body
        lambda g: _conv(g).inputs.pop(),
    ]
    for edit in edits:
        graph = _graph()
        before = ir.fingerprint(graph)
        edit(graph)
        assert ir.fingerprint(graph) != before, edit


def test_the_summary_counts_as_the_helpers_do() -> None:
    graph = _graph()
    summary = ir.summarize(graph)
    assert summary.layers == ir.layer_count(graph) == 3
    assert summary.histogram == ir.op_histogram(graph) == {"Conv": 1, "Relu": 1, "local.Same": 1}
    assert list(summary.histogram) == sorted(summary.histogram)


def test_a_summary_leaves_no_garbage_for_the_cyclic_collector() -> None:
    """Every object the walk builds is freed when it returns: with the collector off for a whole
    pipeline, cyclic garbage from 25 walks of a 100k-node graph cost seconds at the end."""
    graph = _graph()
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            ir.summarize(graph)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_constants_of_any_layout_or_element_type_are_keyed_by_content() -> None:
    """A transposed view (not C-contiguous) and an array of strings (no byte buffer) are keyed
    too: writing into either changes the fingerprint."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    transposed = gs.Constant("t", base.T)
    strings = gs.Constant("s", np.array(["a", "b"], dtype=object))
    out_t, out_s = gs.Variable("out_t", np.float32, [4, 3]), gs.Variable("out_s")
    graph = gs.Graph(nodes=[gs.Node("Identity", "i", inputs=[transposed], outputs=[out_t]),
                            gs.Node("Identity", "j", inputs=[strings], outputs=[out_s])],
                     outputs=[out_t, out_s], opset=17)
    before = ir.fingerprint(graph)
    base[2, 3] = -1.0  # through the view's base
    after_view = ir.fingerprint(graph)
    strings.values[1] = "c"
    assert len({before, after_view, ir.fingerprint(graph)}) == 3
