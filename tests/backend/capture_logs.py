"""Capture the builder's ``Layers:`` message of the test models into ``data/`` for the parser tests.

Run ``python -m tests.backend.capture_logs`` to refresh the small captures. With ``--onnx MODEL
--name NAME --lines N`` it captures the first N layer lines of any model (the InceptionV3 excerpt was
taken this way from tf2onnx's lowering of Keras InceptionV3, 299x299, batch 1, opset 17).

With ``--int8`` it compiles the models of :mod:`tests.backend.int8_models` at ``--precision int8``
and records, per model and per Q/DQ placement variant, the layer message (``<name>.layers.txt``) and
the quantized graph the engine was built from without its weights (``<name>.onnxtxt``, ONNX text):
what the INT8 layer accounting tests read.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from tests.backend import int8_models, models
from trtcompile.backend import tensorrt as backend
from trtcompile.backend.engine_report import find_layer_report

DATA = Path(__file__).resolve().parent / "data"


def layer_message(model: onnx.ModelProto, **build_options) -> str:
    """The raw ``Layers:`` message of building ``model``."""
    build = backend.build_engine(model, progress=False, **build_options)
    texts = [line.split("] ", 1)[1] for line in build.log_lines if "] " in line]
    message = find_layer_report(texts)
    assert message is not None, "the builder logged no layer report"
    return message


def excerpt(message: str, lines: int) -> str:
    """The header and the first ``lines`` layer lines of a message."""
    layer_lines = message.split("\n")[1:]
    body = []
    for line in layer_lines:
        if not line.strip() or len(body) >= lines:
            break
        body.append(line)
    return "\n".join(["Layers:", *body])


def quantized_graph(name: str) -> onnx.ModelProto:
    """The graph ``trtcompile compile --precision int8`` builds the engine of model ``name``
    from (default pipeline, seeded calibration samples)."""
    from trtcompile.flow import CompileOptions, compile_model

    build, _ = int8_models.MODELS[name]
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / f"{name}.onnx"
        onnx.save(build(), source)
        np.savez(Path(work) / "calib.npz", **int8_models.calibration_samples(name))
        options = CompileOptions(precision="int8", calib_data=str(Path(work) / "calib.npz"),
                                 parity=False, engine=False, engine_check=False, progress=False)
        return compile_model(source, Path(work) / "out", options).optimized


def save_int8_capture(name: str, model: onnx.ModelProto) -> None:
    """Write the layer message of ``model``'s engine and its graph without weights."""
    (DATA / f"{name}.layers.txt").write_text(layer_message(model))
    structure = onnx.ModelProto()
    structure.CopyFrom(model)
    del structure.graph.initializer[:]
    (DATA / f"{name}.onnxtxt").write_text(onnx.printer.to_text(structure) + "\n")


def capture_int8() -> None:
    """The INT8 captures: each model as quantize-int8 places its Q/DQ, and three variants."""
    graphs = {name: quantized_graph(name) for name in int8_models.MODELS}
    for name, model in graphs.items():
        save_int8_capture(f"{name}_int8", model)
    save_int8_capture("residual_blocks_skip_dq_int8",
                      int8_models.skip_reads_dequantized(graphs["residual_blocks"]))
    save_int8_capture("concat_pooling_avg_pair_int8",
                      int8_models.pair_before_average_pool(graphs["concat_pooling"]))
    save_int8_capture("split_heads_pair_before_reshape_int8",
                      int8_models.pair_before_reshape(graphs["split_heads"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--name")
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args()
    if args.int8:
        capture_int8()
        return
    if args.onnx:
        text = excerpt(layer_message(onnx.load(args.onnx)), args.lines)
        (DATA / f"{args.name}.layers.txt").write_text(text)
        return
    (DATA / "conv_relu.layers.txt").write_text(layer_message(models.conv_relu_model()))
    profiles = [{"input": ([1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8])},
                {"input": ([8, 3, 8, 8], [8, 3, 8, 8], [8, 3, 8, 8])}]
    (DATA / "function_calls_two_profiles.layers.txt").write_text(
        layer_message(models.function_call_model(batch="N"), profiles=profiles))


if __name__ == "__main__":
    main()
