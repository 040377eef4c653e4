"""Inputs for every type (trtcompile.flow.inputs): generated valid values, given .npz files, and
the one-line error for a type nothing can generate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.helpers import run_main
from trtcompile import ir, verify
from trtcompile.errors import InputError
from trtcompile.flow import inputs


def model_with(inputs_: list, nodes: list, outputs: list, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs_, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 10
    return model


def lookup_model() -> onnx.ModelProto:
    """ids = Gather(table[7, 2], indices); words -> CategoryMapper; text -> Cast(float); a bool mask."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [7, 2], list(range(14)))
    return model_with(
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [3, 5]),
         helper.make_tensor_value_info("words", TensorProto.STRING, [4]),
         helper.make_tensor_value_info("text", TensorProto.STRING, [2, 3]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, [2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_node("Identity", ["indices"], ["same_indices"]),
         helper.make_node("Gather", ["table", "same_indices"], ["rows"], axis=0),
         helper.make_node("CategoryMapper", ["words"], ["ids"], domain="ai.onnx.ml",
                          cats_strings=["red", "green", "blue"], cats_int64s=[1, 2, 3]),
         helper.make_node("Cast", ["text"], ["numbers"], to=TensorProto.FLOAT),
         helper.make_node("Not", ["mask"], ["flipped"]),
         helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info(name, elem, None) for name, elem in (
            ("rows", TensorProto.FLOAT), ("ids", TensorProto.INT64),
            ("numbers", TensorProto.FLOAT), ("flipped", TensorProto.BOOL),
            ("y", TensorProto.FLOAT))],
        [table])


def test_generated_inputs_are_valid_for_every_reader() -> None:
    model = lookup_model()
    feeds = inputs.feed_data(model, seed=3, input_shapes={"x": [4, 2]})
    assert list(feeds) == ["indices", "words", "text", "mask", "x"]
    indices = feeds["indices"]
    assert indices.dtype == np.int64 and indices.shape == (3, 5)
    assert indices.min() >= 0 and indices.max() < 7 and len(np.unique(indices)) > 2
    assert feeds["words"].dtype.kind == "U" and set(feeds["words"]) <= {"red", "green", "blue"}
    assert [float(v) for v in feeds["text"].ravel()]  # numbers written as text
    assert feeds["mask"].dtype == np.bool_ and feeds["x"].shape == (4, 2)
    # Floats stay what verify.feed_data draws: same seed, same values.
    np.testing.assert_array_equal(feeds["x"], verify.feed_data(
        model_with([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                   [helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        seed=3, input_shapes={"x": [4, 2]})["x"])
    results = inputs.run_model(model, feeds, "input")
    ((name, (iteration,)),) = list(results)
    assert name == "input" and iteration["ids"].min() >= 1  # every word is a key


def test_a_type_nothing_generates_asks_for_given_inputs(tmp_path: Path, capsys) -> None:
    model = model_with([helper.make_tensor_value_info("z", TensorProto.COMPLEX64, [2])],
                       [helper.make_node("Identity", ["z"], ["w"])],
                       [helper.make_tensor_value_info("w", TensorProto.COMPLEX64, [2])])
    with pytest.raises(InputError, match=r"input 'z' is complex64, which the checks cannot "
                                         r"generate values of: give them with --inputs"):
        inputs.feed_data(model)
    path = ir.save(model, tmp_path / "complex.onnx")
    code, _, err = run_main(["compile", str(path), "-o", str(tmp_path / "out"), "-q",
                             "--no-engine"], capsys)
    assert code == 2 and "give them with --inputs data.npz" in err
    assert len(err.strip().splitlines()) == 1


def test_given_inputs_are_checked_against_the_model(tmp_path: Path) -> None:
    model = lookup_model()
    good = {"indices": np.zeros((3, 5), np.int64), "words": np.array(["red"] * 4),
            "text": np.array([["1", "2", "3"]] * 2), "mask": np.ones(2, bool),
            "x": np.ones((6, 2), np.float32)}
    np.savez(tmp_path / "good.npz", **good)
    given = inputs.load_inputs(tmp_path / "good.npz", model)
    assert given["words"].dtype.kind == "U" and given["x"].shape == (6, 2)
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "mask"}, "(missing mask)"),
        "dtype": ({**good, "x": good["x"].astype(np.float64)},
                  "'x' is float64, the model's input is float: save it as float32"),
        "shape": ({**good, "indices": np.zeros((3, 4), np.int64)},
                  "'indices' has shape [3, 4], the model's input has 5 on axis 1"),
        "strings": ({**good, "words": np.zeros(4, np.float32)},
                    "'words' is float32, the model's input is a string tensor"),
    }
    for case, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{case}.npz", **arrays)
        with pytest.raises(InputError) as caught:
            inputs.load_inputs(tmp_path / f"{case}.npz", model)
        assert message in str(caught.value), case
    with pytest.raises(InputError, match="no such file"):
        inputs.load_inputs(tmp_path / "absent.npz", model)
