"""Where the docs' blocks run: a folder per document with the fixtures its blocks name, the
``trtcompile`` commands run through the command line's ``main`` in this process (one TensorFlow
import for all of them), other commands in a shell, python blocks in a namespace of their own."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.backend.models import rejected_op_model
from tests.helpers import GOLDEN, REPO
from tests.passes.precision_fp16.test_keep_by_data import overflow_model
from tests.passes.precision_fp16.test_keep_by_data import samples as overflow_samples
from tests.test_bisect import SWAP_PASS, arithmetic_chain, unique_model
from tests.test_dynamic_shapes import BATCH_BAKING_PASS, dynamic_googlenet
from tests.test_engine_check import SPLIT_CONV, two_convs_model
from tests.test_parity_on_data import _digits, _digits_cnn
from trtcompile import cli, ir


def classifier(path: Path) -> None:
    """A small image classifier: input ``input`` [N,3,224,224], output ``logits`` [N,10];
    Conv+BatchNormalization+Relu, MaxPool, Conv+bias+Relu, global mean, Flatten, Gemm."""
    rng = np.random.default_rng(0)

    def constant(name, *shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    initializers = [constant("stem_w", 8, 3, 3, 3), constant("bn_scale", 8), constant("bn_bias", 8),
                    constant("bn_mean", 8), numpy_helper.from_array(np.ones(8, np.float32), "bn_var"),
                    constant("conv_w", 16, 8, 3, 3), constant("conv_b", 16),
                    constant("fc_w", 10, 16), constant("fc_b", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "stem_w"], ["stem"], name="stem_conv", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("BatchNormalization", ["stem", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["stem_bn_out"], name="stem_bn"),
        helper.make_node("Relu", ["stem_bn_out"], ["stem_relu_out"], name="stem_relu"),
        helper.make_node("MaxPool", ["stem_relu_out"], ["pool"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["pool", "conv_w", "conv_b"], ["conv"], name="conv",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["conv_relu_out"], name="conv_relu"),
        helper.make_node("GlobalAveragePool", ["conv_relu_out"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    ir.save(model, path)


def classifier_samples(count: int) -> Callable[[Path], None]:
    """``count`` seeded samples of the classifier's input, as an .npz."""
    def write(path: Path) -> None:
        samples = np.random.default_rng(1).standard_normal((count, 3, 224, 224)).astype(np.float32)
        np.savez(path, input=samples)
    return write


def example_input(path: Path) -> None:
    """One seeded input of the built-in ONNX example (``input`` 1x3x64x64), as an .npz."""
    np.savez(path, input=np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32))


def example_savedmodel(path: Path) -> None:
    """The built-in Keras example as a TensorFlow SavedModel folder (exported once into the cache)."""
    from trtcompile.frontend import keras_example

    shutil.copytree(keras_example.cached_example_savedmodel(), path)


def small_manifest(path: Path) -> None:
    """The project's golden manifest without the built-in examples, beside copies of its models."""
    entries = (GOLDEN / "manifest.toml").read_text().split("[[model]]")
    kept = [entry for entry in entries[1:] if 'path = "builtin:' not in entry]
    path.write_text("[[model]]".join([entries[0], *kept]))
    for model in [*GOLDEN.glob("*.onnx"), *GOLDEN.glob("*.npz")]:
        shutil.copyfile(model, path.parent / model.name)


def misspelt_docs_manifest(path: Path) -> None:
    """The manifest of docs/golden.md with its key ``atol`` misspelt ``atoll``."""
    from tests.docs_blocks import document_blocks

    manifest = next(block for block in document_blocks("docs/golden.md") if block.lang == "toml")
    path.write_text(manifest.text.replace("\natol =", "\natoll ="))


def regressed_manifest(path: Path) -> None:
    """The project's googlenet-example and conv-branches entries, conv-branches expecting one layer
    fewer (2) and one fewer after horizontal-fusion (4) than the passes give."""
    entries = (GOLDEN / "manifest.toml").read_text().split("[[model]]")
    kept = [entry for entry in entries[1:] if 'name = "googlenet-example"' in entry
            or 'name = "conv-branches"' in entry]
    text = "[[model]]".join(["", *kept])
    text = text.replace("layers = 3\n", "layers = 2\n").replace('"horizontal-fusion" = 5', '"horizontal-fusion" = 4')
    path.write_text(text)
    shutil.copyfile(GOLDEN / "conv_branches.onnx", path.parent / "conv_branches.onnx")


def unknown_image_size(path: Path) -> None:
    """A Relu on ``image`` [N, 3, H, W]: height and width unknown."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["image"], ["y"], name="relu")], "unknown_size",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    ir.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def relu_of_relu(path: Path) -> None:
    """``y = Relu(Relu(x))`` on x [2, 8]."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["inner"], name="inner_relu"),
         helper.make_node("Relu", ["inner"], ["y"], name="outer_relu")], "relu_of_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    ir.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def copy_of(source: Path) -> Callable[[Path], None]:
    """A copy of a file or folder of the repository."""
    def write(path: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, path)
        else:
            shutil.copyfile(source, path)
    return write


#: Fixture name -> a function writing it at the given path.
FIXTURES: dict[str, Callable[[Path], None]] = {
    "classifier": classifier,
    "samples": classifier_samples(8),
    "one-input": classifier_samples(1),
    "chain": arithmetic_chain,
    "unique": unique_model,
    "convs-around-unique": lambda path: ir.save(rejected_op_model("Unique"), path),
    "convs-around-bitshift": lambda path: ir.save(rejected_op_model("BitShift"), path),
    "overflow": lambda path: onnx.save(overflow_model(), path),
    "overflow-samples": lambda path: np.savez(path, **overflow_samples()),
    "digits-cnn": lambda path: onnx.save(_digits_cnn(), path),
    "digits-512": lambda path: np.save(path, _digits(512)),
    "conv-branches-samples": lambda path: np.savez(path, input=np.random.default_rng(0).standard_normal(
        (48, 4, 8, 8)).astype(np.float32)),
    "dynamic-googlenet": lambda path: ir.save(dynamic_googlenet(), path),
    "bake-batch-pass": lambda path: path.write_text(BATCH_BAKING_PASS),
    "unknown-image-size": unknown_image_size,
    "relu-of-relu": relu_of_relu,
    "bitshift-input": lambda path: np.savez(path, x=np.random.default_rng(3).standard_normal(
        (1, 4, 8, 8)).astype(np.float32)),
    "swap-pass": lambda path: path.write_text(SWAP_PASS),
    "two-convs": two_convs_model,
    "split-conv-pass": lambda path: path.write_text(SPLIT_CONV),
    "conv-branches": copy_of(GOLDEN / "conv_branches.onnx"),
    "nhwc-transposes": copy_of(GOLDEN / "nhwc_transposes.onnx"),
    "golden-suite": copy_of(GOLDEN),
    "small-manifest": small_manifest,
    "misspelt-docs-manifest": misspelt_docs_manifest,
    "regressed-manifest": regressed_manifest,
    "example-input": example_input,
    "saved-model": example_savedmodel,
}


class Workspace:
    """One document's folder: its blocks run here, in order, and see what earlier blocks wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.namespace: types.ModuleType | None = None
        self.placed: dict[str, str] = {}
        self.outputs: dict[str, tuple[int, str]] = {}

    def place(self, fixtures: dict[str, str]) -> None:
        """Writes each named fixture (``name -> fixture``) unless the workspace has that fixture
        under that name already; another fixture of the same name is replaced."""
        for name, fixture in fixtures.items():
            if fixture not in FIXTURES:
                raise KeyError(f"unknown docs fixture {fixture!r} (known: {', '.join(FIXTURES)})")
            if self.placed.get(name) == fixture:
                continue
            target = self.folder / name
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.placed[name] = fixture
            FIXTURES[fixture](target)

    def run_command(self, command: str) -> tuple[int, str]:
        """(exit status, stdout and stderr as a terminal shows them) of one shell command; also
        kept as the command's latest output (``output-of`` reads it)."""
        words = shlex.split(command)
        if words[:1] == ["trtcompile"]:
            outcome = self._main(words[1:])
        elif words[:3] == ["python", "-m", "trtcompile.cli"]:
            outcome = self._main(words[3:])
        else:
            environment = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
            done = subprocess.run(command, shell=True, cwd=self.folder, env=environment, text=True,
                                  check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=600)
            outcome = done.returncode, done.stdout
        self.outputs[command] = outcome
        return outcome

    def _main(self, argv: list[str]) -> tuple[int, str]:
        output = io.StringIO()
        previous = os.getcwd()
        os.chdir(self.folder)
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                try:
                    code = cli.main(argv)
                except SystemExit as exit_:  # argparse's usage errors
                    code = exit_.code if isinstance(exit_.code, int) else 2
        finally:
            os.chdir(previous)
        return code, output.getvalue()

    def run_python(self, source: str, where: str, continues: bool) -> tuple[str | None, str]:
        """(None, output) when the code ran, else (the traceback's last lines, output); a block
        that continues runs in the namespace of the previous one."""
        if not continues or self.namespace is None:
            self.namespace = types.ModuleType("docs_block")
        module = self.namespace
        output = io.StringIO()
        previous = os.getcwd()
        os.chdir(self.folder)
        sys.modules[module.__name__] = module
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                exec(compile(source, where, "exec"), module.__dict__)  # noqa: S102 - the docs' own code
        except BaseException as error:  # noqa: BLE001 - reported as the block's failure
            lines = traceback.format_exception(error)
            return "".join(lines[-3:]).strip(), output.getvalue()
        finally:
            os.chdir(previous)
            sys.modules.pop(module.__name__, None)
        return None, output.getvalue()
