"""Shape specs, profile flags and files, profile strategies, the default profile and every error."""

from __future__ import annotations

import json

import onnx
import onnx.parser
import pytest

from trtcompile import shapes
from trtcompile.errors import InputError
from trtcompile.shapes import ShapeOptions, resolve_profiles


def model(signature: str) -> onnx.ModelProto:
    """A model with the given inputs (``float[N,3,8,8] x, float[2] k``) whose outputs copy them."""
    graph = onnx.parser.parse_graph(f"g ({signature}) => () {{}}")
    outputs, nodes = [], []
    for value in graph.input:
        outputs.append(onnx.helper.make_tensor_value_info(f"{value.name}_out", onnx.TensorProto.FLOAT, None))
        nodes.append(onnx.helper.make_node("Identity", [value.name], [f"{value.name}_out"]))
    return onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", list(graph.input), outputs))


def dynamic_batch() -> onnx.ModelProto:
    return model("float[N,3,8,8] x")


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------------


def test_model_inputs_reads_symbols_unnamed_dims_and_static_inputs() -> None:
    m = model("float[N,3,?,8] x, float[2,4] y")
    inputs = shapes.model_inputs(m)
    assert list(inputs) == ["x", "y"]
    assert inputs["x"].dims == ("N", 3, None, 8)
    assert inputs["x"].dynamic_axes == [0, 2]
    assert inputs["x"].text() == "[N,3,?,8]"
    assert not inputs["y"].is_dynamic and inputs["y"].static_shape() == (2, 4)


# --------------------------------------------------------------------------------------------
# Parsing: every spelling
# --------------------------------------------------------------------------------------------


def test_shape_spec_trtexec_spelling() -> None:
    assert shapes.parse_shape_spec("x:1x3x224x224,mask:1X16", "--min-shapes") == {
        "x": (1, 3, 224, 224), "mask": (1, 16)}


def test_shape_spec_tensorflow_and_quoted_names() -> None:
    assert shapes.parse_shape_spec("input_1:0:8x4", "--opt-shapes") == {"input_1:0": (8, 4)}
    assert shapes.parse_shape_spec("'input_1:0':8x4, \"b\":2", "--opt-shapes") == {
        "input_1:0": (8, 4), "b": (2,)}


@pytest.mark.parametrize("spec, message", [
    ("x", "--min-shapes 'x': expected NAME:DIMS such as input:1x3x224x224"),
    (":1x3", "--min-shapes ':1x3': expected NAME:DIMS"),
    ("x:", "--min-shapes 'x:': expected NAME:DIMS"),
    ("x:1x?x3", "--min-shapes 'x:1x?x3': dimensions must be integers separated by 'x'"),
    ("x:1x0", "--min-shapes 'x:1x0': dimensions must be positive"),
    ("x:-1x3", "--min-shapes 'x:-1x3': dimensions must be positive"),
    ("x:1x3,x:2x3", "--min-shapes gives 'x' twice in 'x:1x3,x:2x3'"),
    (",", "--min-shapes ',': no shapes given"),
])
def test_shape_spec_errors(spec: str, message: str) -> None:
    assert message in error(shapes.parse_shape_spec, spec, "--min-shapes")


def test_flag_groups_form_profiles_in_order() -> None:
    profiles = shapes.profiles_from_flags(
        min_shapes=[{"x": (1, 3)}, {"x": (16, 3)}], opt_shapes=[{"x": (4, 3)}, {"x": (16, 3)}],
        max_shapes=[{"x": (8, 3)}, {"x": (32, 3)}])
    assert profiles == [{"x": ((1, 3), (4, 3), (8, 3))}, {"x": ((16, 3), (16, 3), (32, 3))}]


def test_flag_groups_opt_alone_is_one_shape_and_missing_opt_is_max() -> None:
    assert shapes.profiles_from_flags(opt_shapes=[{"x": (4, 3)}]) == [{"x": ((4, 3),) * 3}]
    assert shapes.profiles_from_flags(min_shapes=[{"x": (1, 3)}], max_shapes=[{"x": (8, 3)}]) == [
        {"x": ((1, 3), (8, 3), (8, 3))}]
    assert shapes.profiles_from_flags() == []


@pytest.mark.parametrize("kwargs, message", [
    ({"min_shapes": [{"x": (1,)}, {"x": (2,)}], "max_shapes": [{"x": (8,)}]},
     "profile flags given unevenly (--min-shapes 2 times, --opt-shapes 0 times, --max-shapes 1 time)"),
    ({"min_shapes": [{"x": (1,)}]}, "--min-shapes needs --max-shapes"),
    ({"max_shapes": [{"x": (1,)}], "opt_shapes": [{"x": (1,)}]}, "--max-shapes needs --min-shapes"),
    ({"min_shapes": [{"x": (1,)}], "max_shapes": [{"x": (8,)}, ]} | {"opt_shapes": [{"y": (2,)}]},
     "profile 0: 'y' is in --opt-shapes but not in --min-shapes"),
    ({"min_shapes": [{"x": (1,), "y": (1,)}], "max_shapes": [{"x": (8,), "y": (8,)}],
      "opt_shapes": [{"x": (2,)}]},
     "profile 0: 'y' is in --min-shapes but not in --opt-shapes"),
])
def test_flag_group_errors(kwargs: dict, message: str) -> None:
    assert message in error(shapes.profiles_from_flags, **kwargs)


def test_representative_shapes_sets_and_files(tmp_path) -> None:
    assert shapes.parse_representative_shapes("x:1x224x224x3;x:8x224x224x3;") == [
        {"x": (1, 224, 224, 3)}, {"x": (8, 224, 224, 3)}]
    text = tmp_path / "shapes.txt"
    text.write_text("# sizes seen in serving\nx:1x4,m:1x2\nx:2x4,m:2x2; x:4x4,m:4x2  # peak\n")
    assert shapes.parse_representative_shapes(f"@{text}") == [
        {"x": (1, 4), "m": (1, 2)}, {"x": (2, 4), "m": (2, 2)}, {"x": (4, 4), "m": (4, 2)}]
    js = tmp_path / "shapes.json"
    js.write_text(json.dumps([{"x": [1, 4]}, {"x": "3x4"}]))
    assert shapes.parse_representative_shapes(f"@{js}") == [{"x": (1, 4)}, {"x": (3, 4)}]


def test_representative_shapes_errors(tmp_path) -> None:
    assert "--representative-shapes ';': no shapes given" in error(
        shapes.parse_representative_shapes, ";")
    assert "no such file" in error(shapes.parse_representative_shapes, f"@{tmp_path}/none.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert "the file holds no shapes" in error(shapes.parse_representative_shapes, f"@{empty}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": [1, 4]}')
    assert "expected a list of {input name: shape} objects" in error(
        shapes.parse_representative_shapes, f"@{bad}")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    assert "not valid JSON" in error(shapes.parse_representative_shapes, f"@{broken}")


SECRET = "root:$6$not-for-your-terminal:19000:0:99999:7:::"


@pytest.mark.parametrize("name, content, message", [
    ("shadow", f"{SECRET}\nx:1x4\n", "@{path}, line 1: not a shape set; expected sets such as "
                                     "input:1x224x224x3 separated by ';', one or more per line"),
    ("later.txt", f"x:1x4\n# fine\nx:2x4;{SECRET}\n", "@{path}, line 3: not a shape set"),
    ("binary", b"\x7fELF\x02\x01\x01\x00\xff\xfe" + SECRET.encode(),
     "@{path}: not a text file (expected UTF-8 text)"),
    ("sets.json", json.dumps([{"x": SECRET}]), "@{path}, set 0, input 'x': dimensions must be "
                                               "integers"),
    ("list.json", json.dumps([{"x": [SECRET]}]), "@{path}, set 0, input 'x': expected a shape such "
                                                 "as \"1x3x224x224\" or [1, 3, 224, 224], got a "
                                                 "list"),
], ids=["first-line", "later-line", "binary", "json-string", "json-list"])
def test_a_representative_shapes_file_is_never_echoed(tmp_path, name: str, content, message: str
                                                      ) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    text = error(shapes.parse_representative_shapes, f"@{path}")
    assert message.format(path=path) in text, text
    assert "not-for-your-terminal" not in text and "root:" not in text


def test_a_profiles_file_is_never_echoed(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"profiles": [{"x": {"min": "1x3", "max": "2x3"}}],
                                SECRET: SECRET}))
    assert error(shapes.load_profiles_file, path) == (
        f"--profiles {path}: 1 unknown key; the file holds a 'profiles' list only")
    path.write_text(json.dumps([{"x": SECRET}]))
    assert error(shapes.load_profiles_file, path) == (
        "--profiles p.json: profile 0, input 'x': expected min, opt and max shapes, got a string")
    path.write_text(json.dumps([SECRET]))
    assert error(shapes.load_profiles_file, path) == (
        "--profiles p.json: profile 0: expected a table of input names, got a string")
    path.write_text(json.dumps([{"x": {"opt": [SECRET]}}]))
    assert SECRET not in error(shapes.load_profiles_file, path)


# --------------------------------------------------------------------------------------------
# A declared size of 0
# --------------------------------------------------------------------------------------------


def test_a_declared_zero_size_is_static() -> None:
    m = model("float[2,0,4] x")
    assert shapes.model_inputs(m)["x"].dims == (2, 0, 4)
    plan = resolve_profiles(m)
    assert plan.source == "static" and plan.profiles == []
    assert plan.parity_shapes == [{"x": (2, 0, 4)}]


def test_a_model_with_a_zero_size_input_compiles_and_builds(tmp_path, capsys) -> None:
    from trtcompile import cli

    onnx.save(onnx.parser.parse_model('<ir_version: 10, opset_import: ["" : 17]>\n'
                                      "g (float[2,0,4] x) => (float[2,0,4] y) { y = Relu(x) }"),
              tmp_path / "empty.onnx")
    code = cli.main(["compile", "-q", str(tmp_path / "empty.onnx"), "-o", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["shapes"]["parity_shapes"] == [{"x": [2, 0, 4]}]
    assert report["parity"]["passed"] and report["engine"]["built"]


# --------------------------------------------------------------------------------------------
# Profile files
# --------------------------------------------------------------------------------------------


def test_toml_profile_file(tmp_path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[[profiles]]\nx = { min = "1x3x8x8", opt = "4x3x8x8", max = "8x3x8x8" }\n'
                    '[[profiles]]\n"input_1:0" = { opt = [16, 2] }\n'
                    '[[profiles]]\nx = { min = [1, 3, 8, 8], max = [2, 3, 8, 8] }\n')
    assert shapes.load_profiles_file(path) == [
        {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))},
        {"input_1:0": ((16, 2),) * 3},
        {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))},
    ]


def test_json_profile_file_takes_report_json_form(tmp_path) -> None:
    recorded = [{"x": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}}]
    for name, data in (("a.json", {"profiles": recorded}), ("b.json", recorded)):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        assert shapes.load_profiles_file(path) == [{"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}]


@pytest.mark.parametrize("name, text, message", [
    ("p.yaml", "x: 1", "expected a .toml or .json file"),
    ("p.toml", "[[profiles]\n", "not valid TOML"),
    ("p.json", "{", "not valid JSON"),
    ("p.json", '{"profile": []}', "1 unknown key; the file holds a 'profiles' list only"),
    ("p.json", '{"profiles": []}', "no profiles; expected a non-empty 'profiles' list"),
    ("p.json", '[[1]]', "profile 0: expected a table of input names"),
    ("p.json", '[{"x": "1x3"}]', "profile 0, input 'x': expected min, opt and max shapes"),
    ("p.json", '[{"x": {"min": "1x3", "mx": "2x3"}}]', "input 'x': 1 unknown key (expected min, opt, max)"),
    ("p.json", '[{"x": {"min": "1x3", "opt": "2x3"}}]', "give both min and max (or opt alone)"),
    ("p.json", '[{"x": {"min": [1, 0], "max": [2, 3]}}]', "input 'x', min: dimensions must be positive"),
    ("p.json", '[{"x": {"opt": [1.5]}}]', "expected a shape such as \"1x3x224x224\""),
])
def test_profile_file_errors(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert message in error(shapes.load_profiles_file, path)


def test_profile_file_missing(tmp_path) -> None:
    assert "--profiles" in error(shapes.load_profiles_file, tmp_path / "none.toml")


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

REPRESENTATIVE = [{"x": (1, 224, 224, 3)}, {"x": (8, 224, 224, 3)}, {"x": (1, 224, 224, 3)},
                  {"x": (4, 200, 224, 3)}]


def test_range_strategy_spans_min_to_max_with_opt_at_max() -> None:
    assert shapes.derive_profiles("range", REPRESENTATIVE) == [
        {"x": ((1, 200, 224, 3), (8, 224, 224, 3), (8, 224, 224, 3))}]


def test_optimal_strategy_one_exact_profile_per_distinct_shape() -> None:
    assert shapes.derive_profiles("optimal", REPRESENTATIVE) == [
        {"x": ((1, 224, 224, 3),) * 3}, {"x": ((8, 224, 224, 3),) * 3}, {"x": ((4, 200, 224, 3),) * 3}]


def test_range_optimal_puts_exact_profiles_first_then_the_range() -> None:
    profiles = shapes.derive_profiles("Range+Optimal", REPRESENTATIVE)
    assert profiles == [*shapes.derive_profiles("optimal", REPRESENTATIVE),
                        *shapes.derive_profiles("range", REPRESENTATIVE)]
    # One distinct shape: the range profile equals the exact one and is not repeated.
    assert shapes.derive_profiles("range+optimal", [{"x": (2, 3)}] * 3) == [{"x": ((2, 3),) * 3}]


def test_strategy_errors() -> None:
    assert "expected one of range, optimal, range+optimal" in error(
        shapes.derive_profiles, "fastest", REPRESENTATIVE)
    assert "set 1 names x, y, set 0 names x; every set gives the same inputs" in error(
        shapes.derive_profiles, "range", [{"x": (1,)}, {"x": (2,), "y": (2,)}])
    assert "input 'x' has rank 1 in set 0 and 2 in set 1" in error(
        shapes.derive_profiles, "range", [{"x": (1,)}, {"x": (2, 2)}])


def test_strategy_through_resolve_checks_sets_against_the_model() -> None:
    plan = resolve_profiles(dynamic_batch(), ShapeOptions(
        strategy="range+optimal", representative_shapes=[{"x": (1, 3, 8, 8)}, {"x": (4, 3, 8, 8)}]))
    assert plan.source == "strategy:range+optimal"
    assert len(plan.profiles) == 3
    assert plan.parity_shapes == [{"x": (1, 3, 8, 8)}, {"x": (4, 3, 8, 8)}]
    assert plan.description.startswith("3 profiles by strategy range+optimal from 2 representative "
                                       "shape sets")
    # Representative shapes alone use range (TF-TRT's default strategy).
    plan = resolve_profiles(dynamic_batch(), ShapeOptions(
        representative_shapes=[{"x": (2, 3, 8, 8)}, {"x": (6, 3, 8, 8)}]))
    assert plan.profiles == [{"x": ((2, 3, 8, 8), (6, 3, 8, 8), (6, 3, 8, 8))}]
    assert "needs --representative-shapes" in error(
        resolve_profiles, dynamic_batch(), ShapeOptions(strategy="optimal"))
    assert "--representative-shapes, set 1, input 'x' [N,3,8,8]: dimension 1 is fixed at 3" in error(
        resolve_profiles, dynamic_batch(),
        ShapeOptions(strategy="range", representative_shapes=[{"x": (1, 3, 8, 8)}, {"x": (1, 4, 8, 8)}]))


# --------------------------------------------------------------------------------------------
# Default profile
# --------------------------------------------------------------------------------------------


def test_default_profile_sets_an_unknown_batch_to_one() -> None:
    plan = resolve_profiles(model("float[N,3,8,8] x, float[batch,5] m, float[2] k"))
    assert plan.source == "default"
    assert plan.profiles == [{"x": ((1, 3, 8, 8),) * 3, "m": ((1, 5),) * 3}]
    assert plan.parity_shapes == [{"x": (1, 3, 8, 8), "m": (1, 5), "k": (2,)}]
    assert plan.description == ("default profile (unknown batch dimension set to 1): x 1x3x8x8, "
                                "m 1x5; set shapes with --min-shapes/--opt-shapes/--max-shapes")
    assert plan.dynamic_inputs == {"x": ["N", 3, 8, 8], "m": ["batch", 5]}


def test_default_profile_refuses_other_unknown_dimensions() -> None:
    message = error(resolve_profiles, model("float[N,3,H,W] image"))
    assert message == (
        "input 'image' [N,3,H,W] has unknown dimensions 2, 3 that cannot be defaulted (only an "
        "unknown first dimension defaults to batch 1); give a profile with "
        "--min-shapes/--opt-shapes/--max-shapes image:1x3x8x8 or fix the shape with "
        "--input-shape image:1x3x8x8")
    assert "input 'tokens' [1,?] has unknown dimension 1 that cannot be defaulted" in error(
        resolve_profiles, model("float[1,?] tokens"))


def test_static_model_needs_no_profile() -> None:
    plan = resolve_profiles(model("float[2,3] x"))
    assert (plan.source, plan.profiles, plan.backend_profiles()) == ("static", [], None)
    assert plan.parity_shapes == [{"x": (2, 3)}]
    # Shapes that agree with a static model are accepted; the engine still needs no profile.
    plan = resolve_profiles(model("float[2,3] x"), ShapeOptions(opt_shapes=[{"x": (2, 3)}]))
    assert plan.source == "static" and plan.profiles == []


# --------------------------------------------------------------------------------------------
# Validation against the model
# --------------------------------------------------------------------------------------------

FLAGS = "--min-shapes/--opt-shapes/--max-shapes"


def flags(low, opt, high) -> ShapeOptions:
    return ShapeOptions(min_shapes=[low], opt_shapes=[opt], max_shapes=[high])


@pytest.mark.parametrize("options, message", [
    (flags({"x": (8, 3, 8, 8)}, {"x": (8, 3, 8, 8)}, {"x": (4, 3, 8, 8)}),
     f"{FLAGS}, input 'x': min 8x3x8x8 exceeds max 4x3x8x8 at dimension 0"),
    (flags({"x": (1, 3, 8, 8)}, {"x": (16, 3, 8, 8)}, {"x": (8, 3, 8, 8)}),
     f"{FLAGS}, input 'x': opt 16x3x8x8 lies outside [min 1x3x8x8, max 8x3x8x8] at dimension 0"),
    (flags({"y": (1, 3, 8, 8)}, {"y": (1, 3, 8, 8)}, {"y": (1, 3, 8, 8)}),
     f"{FLAGS} names 'y', which is not an input of the model (inputs: x)"),
    (flags({"x": (1, 3, 8)}, {"x": (1, 3, 8)}, {"x": (1, 3, 8)}),
     f"{FLAGS}, input 'x' [N,3,8,8]: min shape 1x3x8 has rank 3, the input has rank 4"),
    (flags({"x": (1, 4, 8, 8)}, {"x": (1, 4, 8, 8)}, {"x": (1, 4, 8, 8)}),
     f"{FLAGS}, input 'x' [N,3,8,8]: dimension 1 is fixed at 3 in the model, the min shape "
     "1x4x8x8 gives 4"),
    # An NHWC image for an NCHW input (a TensorFlow model lowered with --inputs-as-nchw): the
    # error names the layout profiles take and the shape meant.
    (flags({"x": (1, 8, 8, 3)}, {"x": (4, 8, 8, 3)}, {"x": (8, 8, 8, 3)}),
     f"{FLAGS}, input 'x' [N,3,8,8]: dimension 1 is fixed at 3 in the model, the min shape "
     "1x8x8x3 gives 8; profile shapes take the layout the ONNX model declares, here NCHW: "
     "x:1x3x8x8"),
    (ShapeOptions(profiles=[{"x": ((1, 3, 8, 8),) * 3}, {"x": ((1, 3, 8, 8), (2, 3, 8, 8))}]),
     "profiles, profile 1, input 'x': expected three shapes (min, opt, max) of integers"),
    (ShapeOptions(opt_shapes=[{"x": (1, 3, 8, 8)}], profiles_file="p.toml"),
     f"give optimization profiles one way, not with {FLAGS} and --profiles"),
])
def test_profile_errors(options: ShapeOptions, message: str) -> None:
    assert message in error(resolve_profiles, dynamic_batch(), options)


def test_profile_must_give_every_dynamic_input_and_agree_on_shared_symbols() -> None:
    two = model("float[N,4] a, float[N,6] b")
    assert (f"{FLAGS} gives no shapes for dynamic input 'b' [N,6]; add it" in
            error(resolve_profiles, two, ShapeOptions(opt_shapes=[{"a": (2, 4)}])))
    assert (f"{FLAGS}: dimension 0 of 'a' and dimension 0 of 'b' are both 'N' in the model, the "
            "max shapes give 8 and 4" in
            error(resolve_profiles, two, flags({"a": (1, 4), "b": (1, 6)}, {"a": (2, 4), "b": (2, 6)},
                                               {"a": (8, 4), "b": (4, 6)})))


def test_static_input_shapes_must_agree_with_the_model() -> None:
    m = model("float[N,4] a, float[2,6] b")
    plan = resolve_profiles(m, ShapeOptions(opt_shapes=[{"a": (3, 4), "b": (2, 6)}]))
    assert plan.profiles == [{"a": ((3, 4),) * 3, "b": ((2, 6),) * 3}]
    assert ("input 'b' [2,6]: dimension 0 is fixed at 2 in the model, the min shape 3x6 gives 3" in
            error(resolve_profiles, m, ShapeOptions(opt_shapes=[{"a": (3, 4), "b": (3, 6)}])))


def test_plan_lists_parity_shapes_of_every_profile_and_backend_form() -> None:
    m = model("float[N,4] a, float[2,6] b")
    plan = resolve_profiles(m, ShapeOptions(
        min_shapes=[{"a": (1, 4)}, {"a": (16, 4)}], opt_shapes=[{"a": (4, 4)}, {"a": (16, 4)}],
        max_shapes=[{"a": (8, 4)}, {"a": (16, 4)}]))
    assert plan.parity_shapes == [{"a": (n, 4), "b": (2, 6)} for n in (1, 4, 8, 16)]
    assert plan.backend_profiles() == [{"a": ([1, 4], [4, 4], [8, 4])},
                                       {"a": ([16, 4], [16, 4], [16, 4])}]
    assert plan.to_dict()["profiles"][0] == {"a": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}}
    assert plan.description == (f"2 profiles from {FLAGS}: a 1x4..8x4 (opt 4x4); a 16x4")


def test_unknown_rank_input_needs_input_shape() -> None:
    m = dynamic_batch()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    assert error(resolve_profiles, m) == ("input 'x' has an unknown rank; fix its shape with "
                                          "--input-shape x:DIMS")
