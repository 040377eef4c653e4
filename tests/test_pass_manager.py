"""The pass manager: pipeline text, records, fixed points, instruments and their errors; the
combinator protocol, registries, and the layering of the pass infrastructure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.dead_layer_elimination import DeadLayerElimination
from tests.helpers import registry_with
from trtcompile import ir
from trtcompile.errors import EXIT_PASS_FAILED, PassFailed, PipelineError
from trtcompile.pass_manager import (
    Combinator,
    DumpInstrument,
    FixedPoint,
    Pass,
    PassContext,
    PassManager,
    PassRegistry,
    PassResult,
    PipelineRun,
    VerifyInstrument,
    default_pipeline_text,
    iter_passes,
    map_passes,
    parse_pipeline,
    print_pipeline,
)

# --------------------------------------------------------------------------------------------
# Passes used by these tests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoveOneIdentity(Pass):
    """Remove the first Identity node (one per run), so a fixed point needs several iterations."""

    name: ClassVar[str] = "remove-one-identity"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Identity" and node.outputs[0].name not in ir.output_names(graph):
                ir.replace_uses(node.outputs[0], node.inputs[0])
                node.inputs.clear()
                node.outputs.clear()
                graph.cleanup()
                result.count("removed_identity")
                break
        return result


@dataclass(frozen=True)
class CountRelus(Pass):
    """Count Relu nodes without changing anything."""

    name: ClassVar[str] = "count-relus"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Relu":
                result.count("relus_seen")
        return result


@dataclass(frozen=True)
class ScaleWeights(Pass):
    """Deliberately wrong: doubles the weight of every Conv (a new array, as passes must)."""

    name: ClassVar[str] = "scale-weights"
    factor: float = 2.0

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in graph.nodes:
            if node.op == "Conv":
                weight = node.inputs[1]
                node.inputs[1] = gs.Constant(weight.name + "_scaled", weight.values * self.factor)
                result.count("scaled_conv")
        return result


@dataclass(frozen=True)
class WithListOption(Pass):
    """Has options of every supported type."""

    name: ClassVar[str] = "with-list-option"
    activations: tuple[str, ...] = ("relu",)
    limit: int = 4
    ratio: float = 0.5
    enabled: bool = True
    mode: str = "fast"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return PassResult()


@dataclass(frozen=True)
class Raises(Pass):
    """Raises, as a buggy pass would."""

    name: ClassVar[str] = "raises"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        raise RuntimeError("boom")


@dataclass(frozen=True)
class ReturnsNothing(Pass):
    """Forgets to return its result."""

    name: ClassVar[str] = "returns-nothing"

    def run(self, graph, ctx):  # type: ignore[override]
        return None


REGISTRY = PassRegistry([DeadLayerElimination, RemoveOneIdentity, CountRelus, ScaleWeights,
                         WithListOption, Raises, ReturnsNothing])


def identity_chain_model() -> onnx.ModelProto:
    """x -> Identity -> Relu -> Identity -> Identity -> Relu -> y (3 Identities, 2 Relus)."""
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,4] x) => (float[1,4] y) {
            a = Identity(x)
            b = Relu(a)
            c = Identity(b)
            d = Identity(c)
            y = Relu(d)
        }
    """)
    onnx.checker.check_model(model)
    return model


def conv_model() -> onnx.ModelProto:
    """x -> Identity -> Conv(W, B) -> Relu -> y."""
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W")
    bias = onnx.numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "B")
    nodes = [
        onnx.helper.make_node("Identity", ["x"], ["x1"], name="identity"),
        onnx.helper.make_node("Conv", ["x1", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    graph = onnx.helper.make_graph(
        nodes, "conv", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[weight, bias])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = ir.IR_VERSION
    return model


# --------------------------------------------------------------------------------------------
# Pipeline text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "dead-layer-elimination",
    "dead-layer-elimination{identity=false}",
    "count-relus,dead-layer-elimination{identity=false dropout=false}",
    "with-list-option{activations=relu,clip,tanh limit=2 ratio=0.25 enabled=false mode=exact}",
    "fixed-point(remove-one-identity,dead-layer-elimination)",
    "fixed-point{max-iterations=3}(remove-one-identity,fixed-point{max-iterations=2}(count-relus))",
])
def test_pipeline_text_round_trips(text: str) -> None:
    pipeline = parse_pipeline(text, REGISTRY)
    printed = print_pipeline(pipeline)
    assert printed == text
    assert parse_pipeline(printed, REGISTRY) == pipeline


def test_pipeline_text_values_become_typed_options() -> None:
    (pass_,) = parse_pipeline(
        "with-list-option{activations=relu, clip limit=7 ratio=1e-3 enabled=off}", REGISTRY)
    assert pass_ == WithListOption(activations=("relu", "clip"), limit=7, ratio=0.001, enabled=False)
    assert pass_.non_default_options() == {"activations": ["relu", "clip"], "limit": 7,
                                           "ratio": 0.001, "enabled": False}


def test_pipeline_text_prints_only_non_default_options_and_tolerates_spaces() -> None:
    pipeline = parse_pipeline(" dead-layer-elimination{identity=true} , count-relus ", REGISTRY)
    assert print_pipeline(pipeline) == "dead-layer-elimination,count-relus"


def test_fixed_point_parses_into_a_group() -> None:
    (group,) = parse_pipeline("fixed-point{max-iterations=5}(remove-one-identity,count-relus)",
                              REGISTRY)
    assert isinstance(group, FixedPoint)
    assert group.max_iterations == 5
    assert group.elements == (RemoveOneIdentity(), CountRelus())


def test_default_expands_to_the_default_pipeline() -> None:
    registry = registry_with(REGISTRY)
    expanded = parse_pipeline("default,count-relus", registry)
    assert print_pipeline(expanded) == print_pipeline(
        parse_pipeline(default_pipeline_text(), registry)) + ",count-relus"


@pytest.mark.parametrize("text, message", [
    ("no-such-pass", "unknown pass 'no-such-pass' in pipeline (known passes: count-relus,"),
    ("dead-layer-elimination{colour=red}",
     "pass 'dead-layer-elimination' has no option 'colour' (options: identity, dropout, no-op)"),
    ("with-list-option{limit=many}", "option 'limit' of pass 'with-list-option' expects int, got 'many'"),
    ("with-list-option{ratio=half}", "expects float, got 'half'"),
    ("dead-layer-elimination{identity=maybe}", "expects bool, got 'maybe'"),
    ("with-list-option{limit=1,2}", "option 'limit' of pass 'with-list-option' takes one value"),
    ("dead-layer-elimination{identity=false", "missing '}'"),
    ("dead-layer-elimination{false}", "option 'false' has no value (write key=value)"),
    ("fixed-point", "fixed-point needs a nested pipeline in parentheses"),
    ("fixed-point()", "fixed-point needs at least one pass"),
    ("fixed-point{max-iterations=0}(count-relus)", "max-iterations must be at least 1"),
    ("fixed-point{limit=2}(count-relus)", "fixed-point has one option, max-iterations"),
    ("count-relus count-relus", "expected ',' or 'end of text'"),
    ("count-relus,,count-relus", "expected a pass name"),
])
def test_pipeline_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, REGISTRY)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_registry_refuses_a_second_pass_with_the_same_name() -> None:
    @dataclass(frozen=True)
    class Impostor(Pass):
        """Same name as a built-in."""

        name: ClassVar[str] = "dead-layer-elimination"

    registry = PassRegistry([DeadLayerElimination])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Impostor)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def test_records_derive_layers_changed_and_histogram_delta() -> None:
    graph = ir.import_model(identity_chain_model())
    report = PassManager("count-relus,dead-layer-elimination,count-relus", registry=REGISTRY).run(graph)
    counting, eliminating, recounting = report.records
    assert (counting.name, counting.layers_before, counting.layers_after) == ("count-relus", 5, 5)
    assert counting.changed is False
    assert counting.counts == {"relus_seen": 2}
    assert counting.histogram_delta == {}
    assert eliminating.changed is True
    assert (eliminating.layers_before, eliminating.layers_after, eliminating.delta) == (5, 2, -3)
    assert eliminating.histogram_delta == {"Identity": -3}
    assert eliminating.counts == {"removed_identity": 3}
    assert recounting.changed is False
    assert [r.index for r in report.records] == [1, 2, 3]
    assert (report.layers_before, report.layers_after) == (5, 2)
    assert report.histogram_before == {"Identity": 3, "Relu": 2}
    assert report.histogram_after == {"Relu": 2}
    as_dict = report.to_dict()
    assert as_dict["layers"] == {"input": 5, "optimized": 2}
    assert [p["name"] for p in as_dict["passes"]] == ["count-relus", "dead-layer-elimination",
                                                      "count-relus"]
    assert as_dict["passes"][1]["delta"] == -3


def test_fixed_point_runs_until_an_iteration_changes_nothing() -> None:
    graph = ir.import_model(identity_chain_model())
    report = PassManager("fixed-point(remove-one-identity,count-relus)", registry=REGISTRY).run(graph)
    removing = [r for r in report.records if r.name == "remove-one-identity"]
    # Three Identities: three iterations remove one each, the fourth finds nothing and converges.
    assert [r.iteration for r in removing] == [1, 2, 3, 4]
    assert [r.changed for r in removing] == [True, True, True, False]
    assert report.fixed_points == [{"pipeline": "fixed-point(remove-one-identity,count-relus)",
                                    "iterations": 4, "converged": True}]
    assert report.layers_after == 2


def test_fixed_point_that_does_not_converge_is_reported_and_logged() -> None:
    graph = ir.import_model(identity_chain_model())
    messages: list[str] = []
    manager = PassManager("fixed-point{max-iterations=2}(remove-one-identity)", registry=REGISTRY,
                          ctx=PassContext(log=messages.append))
    report = manager.run(graph)
    assert report.fixed_points[0]["iterations"] == 2
    assert report.fixed_points[0]["converged"] is False
    assert any("did not converge" in m for m in messages)
    assert report.layers_after == 3  # one Identity left


def test_rejections_are_recorded_with_reasons() -> None:
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[1,4] x) => (float[1,4] y) {
            y = Identity(x)
        }
    """)
    graph = ir.import_model(model)
    report = PassManager("dead-layer-elimination", registry=REGISTRY).run(graph)
    (rejection,) = report.rejections("dead-layer-elimination")
    assert "is a graph output and its input cannot take that name" in rejection.reason


def test_a_raising_pass_is_named_with_the_passes_before_it() -> None:
    graph = ir.import_model(identity_chain_model())
    manager = PassManager("count-relus,dead-layer-elimination{dropout=false},raises",
                          registry=REGISTRY)
    with pytest.raises(PassFailed) as info:
        manager.run(graph)
    error = info.value
    assert error.exit_code == EXIT_PASS_FAILED
    assert error.pass_text == "raises"
    assert error.previous == ["count-relus", "dead-layer-elimination{dropout=false}"]
    assert "RuntimeError: boom" in str(error)
    assert "passes run before it: count-relus, dead-layer-elimination{dropout=false}" in str(error)


def test_a_pass_returning_no_result_fails_by_name() -> None:
    graph = ir.import_model(identity_chain_model())
    with pytest.raises(PassFailed, match="pass 'returns-nothing' failed: run\\(\\) returned NoneType"):
        PassManager("returns-nothing", registry=REGISTRY).run(graph)


# --------------------------------------------------------------------------------------------
# Instruments
# --------------------------------------------------------------------------------------------


def test_verify_instrument_catches_a_pass_that_breaks_numerics() -> None:
    graph = ir.import_model(conv_model())
    manager = PassManager("dead-layer-elimination,count-relus,scale-weights", registry=REGISTRY,
                          instruments=[VerifyInstrument(seed=0)])
    with pytest.raises(PassFailed) as info:
        manager.run(graph)
    message = str(info.value)
    assert message.startswith("pass 'scale-weights' failed: output differs from the pass input")
    assert "'y'" in message
    assert message.endswith("(passes run before it: dead-layer-elimination, count-relus)")


def test_verify_instrument_accepts_correct_passes() -> None:
    graph = ir.import_model(conv_model())
    report = PassManager("dead-layer-elimination,scale-weights{factor=1.0}", registry=REGISTRY,
                         instruments=[VerifyInstrument(seed=0)]).run(graph)
    assert [r.changed for r in report.records] == [True, True]


def test_verify_instrument_runs_the_onnx_checker() -> None:
    @dataclass(frozen=True)
    class DanglingInput(Pass):
        """Makes the Relu read a tensor nobody produces."""

        name: ClassVar[str] = "dangling-input"

        def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
            relu = next(n for n in graph.nodes if n.op == "Relu")
            relu.inputs[0] = gs.Variable("nowhere", np.float32, [1, 4, 8, 8])
            return PassResult({"broke": 1})

    registry = REGISTRY.copy()
    registry.register(DanglingInput)
    graph = ir.import_model(conv_model())
    with pytest.raises(PassFailed, match="pass 'dangling-input' failed: onnx checker"):
        PassManager("dangling-input", registry=registry,
                    instruments=[VerifyInstrument()]).run(graph)


def test_dump_instrument_writes_the_model_after_each_pass(tmp_path) -> None:
    graph = ir.import_model(identity_chain_model())
    dump = DumpInstrument(tmp_path / "passes")
    PassManager("count-relus,fixed-point(remove-one-identity)", registry=REGISTRY,
                instruments=[dump]).run(graph)
    names = sorted(p.name for p in (tmp_path / "passes").iterdir())
    assert names == ["000_input.onnx", "001_count-relus.onnx", "002_remove-one-identity.onnx",
                     "003_remove-one-identity.onnx", "004_remove-one-identity.onnx",
                     "005_remove-one-identity.onnx"]
    assert [p.name for p in dump.paths] == names
    identities = [sum(n.op_type == "Identity" for n in onnx.load(tmp_path / "passes" / name).graph.node)
                  for name in names]
    assert identities == [3, 3, 2, 1, 0, 0]
    for name in names:
        model = onnx.load(tmp_path / "passes" / name)
        assert model.ir_version == ir.IR_VERSION
        onnx.checker.check_model(model)


# Passes that break a graph in the ways verification must name ---------------------------------


@dataclass(frozen=True)
class HalveOutputShape(Pass):
    """Deliberately wrong: reshapes the graph output [1, 4, 8, 8] to [1, 2, 16, 8]."""

    name: ClassVar[str] = "halve-output-shape"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        output = graph.outputs[0]
        inner = gs.Variable("before_reshape", np.float32)
        producer = output.inputs[0]
        producer.outputs[0] = inner
        target = gs.Constant("target", np.array([1, 2, 16, 8], np.int64))
        graph.nodes.append(gs.Node("Reshape", "reshape", inputs=[inner, target], outputs=[output]))
        return PassResult({"reshaped": 1})


@dataclass(frozen=True)
class DoubleOutput(Pass):
    """Deliberately wrong: casts the graph output to float64 (the declared type stays float)."""

    name: ClassVar[str] = "double-output"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        output = graph.outputs[0]
        inner = gs.Variable("before_cast", np.float32)
        output.inputs[0].outputs[0] = inner
        output.dtype = np.float64
        graph.nodes.append(gs.Node("Cast", "cast", attrs={"to": onnx.TensorProto.DOUBLE},
                                   inputs=[inner], outputs=[output]))
        return PassResult({"cast": 1})


@dataclass(frozen=True)
class BadGather(Pass):
    """Deliberately wrong: makes the Relu a Gather of its float input by itself, which passes
    the checker (no full check) but which ONNX Runtime refuses to load."""

    name: ClassVar[str] = "bad-gather"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        relu = next(n for n in graph.nodes if n.op == "Relu")
        relu.op = "Gather"
        relu.inputs.append(relu.inputs[0])
        return PassResult({"gathered": 1})


@dataclass(frozen=True)
class ReluToAbs(Pass):
    """Deliberately wrong where inputs are negative: Relu becomes Abs."""

    name: ClassVar[str] = "relu-to-abs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Abs"
        return PassResult({"abs": 1})


@dataclass(frozen=True)
class BakeBatchOne(Pass):
    """Deliberately wrong for batches other than 1: reshapes the output to [1, -1]."""

    name: ClassVar[str] = "bake-batch-one"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        output = graph.outputs[0]
        inner = gs.Variable("before_reshape", np.float32)
        output.inputs[0].outputs[0] = inner
        target = gs.Constant("target", np.array([1, -1], np.int64))
        graph.nodes.append(gs.Node("Reshape", "reshape", inputs=[inner, target], outputs=[output]))
        return PassResult({"reshaped": 1})


BREAKING = REGISTRY.copy()
for _cls in (HalveOutputShape, DoubleOutput, BadGather, ReluToAbs, BakeBatchOne):
    BREAKING.register(_cls)


def relu_model(batch: str | int = 1) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f"""
        <ir_version: 10, opset_import: ["" : 17]>
        g (float[{batch},4] x) => (float[{batch},4] y) {{
            a = Identity(x)
            y = Relu(a)
        }}
    """)
    model.ir_version = ir.IR_VERSION
    return model


def test_verify_instrument_words_a_shape_change_as_a_shape_change() -> None:
    graph = ir.import_model(conv_model())
    with pytest.raises(PassFailed) as info:
        PassManager("dead-layer-elimination,halve-output-shape", registry=BREAKING,
                    instruments=[VerifyInstrument()]).run(graph)
    message = str(info.value)
    assert message.startswith("pass 'halve-output-shape' failed: output 'y' changed shape: "
                              "[1, 4, 8, 8] in the pass input model, [1, 2, 16, 8] in the pass "
                              "output model")
    assert message.endswith("(passes run before it: dead-layer-elimination)")


def test_verify_instrument_words_an_element_type_change() -> None:
    graph = ir.import_model(conv_model())
    with pytest.raises(PassFailed, match="pass 'double-output' failed: output 'y' changed element "
                                         "type: float32 in the pass input model, float64"):
        PassManager("double-output", registry=BREAKING, instruments=[VerifyInstrument()]).run(graph)


def test_verify_instrument_turns_onnx_runtime_errors_into_pass_failed() -> None:
    graph = ir.import_model(conv_model())
    with pytest.raises(PassFailed) as info:
        PassManager("count-relus,bad-gather", registry=BREAKING,
                    instruments=[VerifyInstrument()]).run(graph)
    message = str(info.value)
    assert message.startswith("pass 'bad-gather' failed: the pass output does not run on ONNX "
                              "Runtime at x:1x3x8x8: ")
    assert "Gather" in message
    assert info.value.previous == ["count-relus"]


def test_verify_instrument_sees_sign_errors() -> None:
    """Inputs in [0, 1) cannot tell Relu from Abs; the default signed inputs can."""
    graph = ir.import_model(relu_model())
    with pytest.raises(PassFailed, match="pass 'relu-to-abs' failed: output differs"):
        PassManager("relu-to-abs", registry=BREAKING, instruments=[VerifyInstrument()]).run(graph)
    # With inputs known to be non-negative, Abs is Relu: the user's range is respected.
    from trtcompile.verify import InputDistribution

    graph = ir.import_model(relu_model())
    PassManager("relu-to-abs", registry=BREAKING,
                instruments=[VerifyInstrument(distribution=InputDistribution(0.0, 1.0))]).run(graph)


def test_verify_instrument_checks_two_sizes_of_a_dynamic_dimension() -> None:
    graph = ir.import_model(relu_model("N"))
    with pytest.raises(PassFailed) as info:
        PassManager("bake-batch-one", registry=BREAKING, instruments=[VerifyInstrument()]).run(graph)
    assert "x:3x4" in str(info.value)
    assert "changed shape" in str(info.value)


def test_an_instrument_that_raises_becomes_pass_failed() -> None:
    from trtcompile.pass_manager import Instrument

    class Broken(Instrument):
        def after_pass(self, pass_, graph, ctx, record):
            raise KeyError("missing")

    graph = ir.import_model(identity_chain_model())
    with pytest.raises(PassFailed, match="pass 'count-relus' failed: Broken raised KeyError"):
        PassManager("count-relus", registry=REGISTRY, instruments=[Broken()]).run(graph)


def test_a_pass_leaving_an_unreadable_graph_fails_by_name() -> None:
    @dataclass(frozen=True)
    class NoneInput(Pass):
        """Puts None where a node input should be."""

        name: ClassVar[str] = "none-input"

        def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
            graph.nodes[0].inputs.append(None)
            return PassResult({"broke": 1})

    registry = REGISTRY.copy()
    registry.register(NoneInput)
    graph = ir.import_model(identity_chain_model())
    with pytest.raises(PassFailed) as info:
        PassManager("count-relus,none-input", registry=registry).run(graph)
    assert str(info.value).startswith("pass 'none-input' failed: ")
    assert info.value.previous == ["count-relus"]


def test_ir_load_of_a_bad_file_is_an_input_error(tmp_path) -> None:
    from trtcompile.errors import InputError

    with pytest.raises(InputError, match="model not found"):
        ir.load(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x96\x01garbage")
    with pytest.raises(InputError, match="is not an ONNX model"):
        ir.load(tmp_path / "junk.onnx")


def test_compare_models_raises_the_projects_error_when_a_model_does_not_run() -> None:
    from trtcompile import verify
    from trtcompile.errors import CheckFailed

    broken = relu_model()
    broken.graph.node[1].op_type = "Gather"
    broken.graph.node[1].input.append("x")
    with pytest.raises(CheckFailed) as info:
        verify.compare_models(relu_model(), broken)
    assert isinstance(info.value, verify.ModelRunError) and info.value.which == "optimized"


# --------------------------------------------------------------------------------------------
# Combinators, registries, layering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeat(Combinator):
    """Runs its nested pipeline ``times`` times, changed or not (a user's combinator)."""

    times: int = 2
    name: ClassVar[str] = "repeat"
    report_section: ClassVar[str] = "repeats"

    def __post_init__(self) -> None:
        if self.times < 1:
            raise ValueError("times must be at least 1")

    def run(self, graph: gs.Graph, run: PipelineRun, iteration: int | None) -> bool:
        changed = [run.run_elements(self.elements, graph, number)
                   for number in range(1, self.times + 1)]
        run.section(self).append({"pipeline": self.to_text(), "changed": changed})
        return any(changed)


WITH_REPEAT = REGISTRY.copy()
WITH_REPEAT.register_combinator(Repeat)


def test_a_users_combinator_parses_prints_and_runs_through_the_protocol() -> None:
    text = "count-relus,repeat{times=3}(remove-one-identity,fixed-point(count-relus))"
    pipeline = parse_pipeline(text, WITH_REPEAT)
    assert print_pipeline(pipeline) == text
    assert pipeline[1] == Repeat((RemoveOneIdentity(), FixedPoint((CountRelus(),))), times=3)
    assert [p.name for p in iter_passes(pipeline)] == ["count-relus", "remove-one-identity",
                                                       "count-relus"]
    graph = ir.import_model(identity_chain_model())
    report = PassManager(text, registry=WITH_REPEAT).run(graph)
    assert [(r.name, r.iteration, r.changed) for r in report.records] == [
        ("count-relus", None, False),
        ("remove-one-identity", 1, True), ("count-relus", 1, False),
        ("remove-one-identity", 2, True), ("count-relus", 1, False),
        ("remove-one-identity", 3, True), ("count-relus", 1, False)]
    assert report.section("repeats") == [{"pipeline": "repeat{times=3}(remove-one-identity,"
                                                      "fixed-point(count-relus))",
                                          "changed": [True, True, True]}]
    assert len(report.fixed_points) == 3
    as_dict = report.to_dict()
    assert as_dict["repeats"] == report.section("repeats")
    assert list(as_dict)[4:6] == ["fixed_points", "repeats"]
    assert report.layers_after == 2


@pytest.mark.parametrize("text, message", [
    ("repeat(count-relus)", ("unknown pass 'repeat' in pipeline (known passes: count-relus, "
                             "dead-layer-elimination, raises, remove-one-identity, returns-nothing, "
                             "scale-weights, with-list-option; combinators: fixed-point)")),
])
def test_an_unregistered_combinator_is_an_unknown_name(text: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, REGISTRY)
    assert str(info.value) == message


@pytest.mark.parametrize("text, message", [
    ("repeat{times=0}(count-relus)", "repeat: times must be at least 1"),
    ("repeat{count=2}(count-relus)", "repeat has one option, times; got 'count'"),
    ("repeat{times=two}(count-relus)", "option 'times' of pass 'repeat' expects int, got 'two'"),
    ("repeat", "repeat needs a nested pipeline in parentheses"),
    ("repeat()", "repeat needs at least one pass"),
])
def test_a_users_combinator_gets_the_same_errors_as_built_in_ones(text: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, WITH_REPEAT)
    assert message in str(info.value)


def test_map_passes_reaches_passes_inside_every_combinator_and_keeps_their_options() -> None:
    pipeline = parse_pipeline("scale-weights,fixed-point{max-iterations=3}(count-relus,"
                              "repeat{times=4}(scale-weights{factor=5.0}))", WITH_REPEAT)

    def triple(pass_: Pass) -> Pass:
        return ScaleWeights(factor=3.0) if pass_.name == "scale-weights" else pass_

    mapped = map_passes(pipeline, triple)
    assert print_pipeline(mapped) == ("scale-weights{factor=3.0},fixed-point{max-iterations=3}("
                                      "count-relus,repeat{times=4}(scale-weights{factor=3.0}))")
    assert isinstance(mapped[1], FixedPoint) and isinstance(mapped[1].elements[1], Repeat)
    assert map_passes(pipeline, lambda pass_: pass_) == pipeline
    assert print_pipeline(pipeline).startswith("scale-weights,")  # the input is left alone


def test_named_pipelines_come_from_the_registry() -> None:
    registry = REGISTRY.copy()
    registry.register_pipeline("tidy", "fixed-point(remove-one-identity),count-relus")
    pipeline = parse_pipeline("count-relus,tidy", registry)
    assert print_pipeline(pipeline) == "count-relus,fixed-point(remove-one-identity),count-relus"
    assert registry.copy().pipelines() == {"tidy": "fixed-point(remove-one-identity),count-relus"}
    with pytest.raises(PipelineError, match="unknown pass 'tidy'"):
        parse_pipeline("tidy", REGISTRY)  # the copy's pipeline is not the original's
    with pytest.raises(PipelineError, match="named pipeline 'tidy' takes no options"):
        parse_pipeline("tidy{x=1}", registry)
    registry.register_pipeline("loop", "count-relus,loop")
    with pytest.raises(PipelineError, match="named pipeline 'loop' refers to itself"):
        parse_pipeline("loop", registry)


def test_passes_combinators_and_named_pipelines_share_one_namespace() -> None:
    @dataclass(frozen=True)
    class FixedPointPass(Pass):
        """A pass taking a combinator's name."""

        name: ClassVar[str] = "fixed-point"

    registry = REGISTRY.copy()
    registry.register_pipeline("tidy", "count-relus")
    with pytest.raises(ValueError, match="combinator name 'fixed-point' is already registered by "
                                         "trtcompile.pm.pipeline.FixedPoint"):
        registry.register(FixedPointPass)
    with pytest.raises(ValueError, match="pass name 'count-relus' is already registered"):
        registry.register_pipeline("count-relus", "dead-layer-elimination")
    with pytest.raises(ValueError, match="name 'tidy' is already a named pipeline"):
        registry.register_pipeline("tidy", "dead-layer-elimination")
    registry.register_combinator(FixedPoint)  # the same class again is no clash
    assert [cls.name for cls in registry.combinators()] == ["fixed-point"]


USER_COMBINATOR_MODULE = '''
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pm import Combinator, Pass, PassResult


@dataclass(frozen=True)
class Once(Combinator):
    """Runs its nested pipeline once."""

    name: ClassVar[str] = "once"

    def run(self, graph, run, iteration):
        return run.run_elements(self.elements, graph, iteration)


@dataclass(frozen=True)
class Nothing(Pass):
    """Does nothing."""

    name: ClassVar[str] = "nothing"

    def run(self, graph, ctx):
        return PassResult({"nothing": 1})
'''


def test_a_users_module_brings_passes_and_combinators_and_clashes_name_the_module(tmp_path) -> None:
    from trtcompile.errors import InputError
    from trtcompile.flow.registry import build_registry, builtin_registry

    module = tmp_path / "user_passes.py"
    module.write_text(USER_COMBINATOR_MODULE)
    registry = build_registry([module])
    assert "nothing" in registry and registry.combinator("once").__name__ == "Once"
    graph = ir.import_model(identity_chain_model())
    report = PassManager("once(nothing),default", registry=registry).run(graph)
    assert report.records[0].counts == {"nothing": 1}
    assert "once" not in [cls.name for cls in builtin_registry().combinators()]
    clash = tmp_path / "clash.py"
    clash.write_text(USER_COMBINATOR_MODULE.replace('"once"', '"engine-guided"'))
    with pytest.raises(InputError) as info:
        build_registry([clash])
    assert str(info.value) == (f"pass module {clash}: combinator name 'engine-guided' is already "
                               "registered by trtcompile.flow.engine_guided.EngineGuided")


def test_the_builtin_registry_holds_passes_combinators_and_named_pipelines() -> None:
    import passes
    from trtcompile.flow.engine_guided import EngineGuided
    from trtcompile.flow.registry import builtin_registry
    from trtcompile.pass_manager import default_registry, named_pipelines

    registry = builtin_registry()
    assert list(registry) == list(passes.BUILTIN_PASSES)
    assert registry.combinators() == [FixedPoint, EngineGuided]
    assert registry.pipelines() == passes.PIPELINES == named_pipelines()
    assert default_pipeline_text() == passes.DEFAULT_PIPELINE
    assert registry is not builtin_registry()
    assert default_registry().pipelines() == registry.pipelines()


def test_the_api_face_runs_the_default_pipeline_with_the_builtin_registry() -> None:
    graph = ir.import_model(conv_model())
    report = PassManager("default", instruments=[VerifyInstrument()]).run(graph)
    assert report.pipeline == print_pipeline(parse_pipeline(default_pipeline_text()))
    assert report.pipeline.startswith("dead-layer-elimination,fold-constants,")
    assert report.layers_after == 1  # Identity gone, Conv+bias+Relu fused into one layer
    assert set(report.to_dict()) >= {"fixed_points", "engine_guided"}


def test_the_infrastructures_manager_needs_a_registry_for_text() -> None:
    from trtcompile import pm

    with pytest.raises(PipelineError, match="pipeline text needs a registry to look its names up "
                                            "in: 'default'"):
        pm.PassManager("default")
    graph = ir.import_model(identity_chain_model())
    report = pm.PassManager((FixedPoint((RemoveOneIdentity(),)),)).run(graph)
    assert report.layers_after == 2
    assert list(report.to_dict())[4:6] == ["fixed_points", "seconds"]


#: Modules the pass infrastructure must never import: built-in passes, the frontend, the backend,
#: the arithmetic of engine-guided, the compile flow and the faces above it.
ABOVE_PM = ("passes", "trtcompile.backend", "trtcompile.frontend", "trtcompile.flow",
            "trtcompile.cost", "trtcompile.compiler", "trtcompile.pass_manager")


def test_the_pass_infrastructure_imports_nothing_above_it() -> None:
    import subprocess
    import sys

    from tests.helpers import REPO

    probe = ("import sys, trtcompile.pm; "
             f"print(sorted(m for m in {ABOVE_PM!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False, env={**__import__("os").environ,
                                                         "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_pass_infrastructure_does_not_import_them_lazily_either() -> None:
    """Every import statement of trtcompile/pm, inside functions too, names an allowed module."""
    import ast

    from tests.helpers import REPO

    allowed_own = {"trtcompile.ir", "trtcompile.errors", "trtcompile.verify", "trtcompile.progress",
                   "trtcompile.interrupts"}
    seen = set()
    for path in sorted((REPO / "trtcompile" / "pm").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ([f"{node.module}.{alias.name}" for alias in node.names]
                         if node.module == "trtcompile" else [node.module])
            else:
                continue
            for name in names:
                seen.add(name)
                if name.startswith(("trtcompile.", "passes")) or name == "trtcompile":
                    assert any(name == own or name.startswith(own + ".")
                               for own in ("trtcompile.pm", *allowed_own)), \
                        f"{path.name} imports {name}"
    assert {"trtcompile.ir", "trtcompile.errors", "trtcompile.pm.base"} <= seen
