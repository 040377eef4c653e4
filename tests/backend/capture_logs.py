"""Capture the builder's ``Layers:`` message of the test models into ``data/`` for the parser tests.

Run ``python -m tests.backend.capture_logs`` to refresh the small captures. With ``--onnx MODEL
--name NAME --lines N`` it captures the first N layer lines of any model (the InceptionV3 excerpt was
taken this way from tf2onnx's lowering of Keras InceptionV3, 299x299, batch 1, opset 17).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from tests.backend import models
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", type=Path)
    parser.add_argument("--name")
    parser.add_argument("--lines", type=int, default=20)
    args = parser.parse_args()
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
