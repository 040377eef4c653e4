"""Datatypes of a built engine's layers, read from the builder's DETAILED ``Layers:`` message.

``trtcompile.backend`` reports each layer's output datatypes; precision tests also need the input and
constant (weight) datatypes, which tell whether TensorRT runs a convolution in Int8 or Half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from trtcompile.backend.engine_report import find_layer_report
from trtcompile.backend.tensorrt import build_engine

_DATATYPE = re.compile(r"Datatype: (\w+)")


@dataclass
class LayerDatatypes:
    """One engine layer: type, datatypes of its inputs, constants and outputs, ONNX metadata."""

    name: str
    type: str
    inputs: list[str]
    constants: list[str]
    outputs: list[str]
    metadata: str


def _section(line: str, key: str, next_key: str) -> str:
    start = line.find(f"{key}: [")
    end = line.find(f"{next_key}: [", start)
    return line[start:end] if start >= 0 else ""


def engine_layers(model: onnx.ModelProto) -> list[LayerDatatypes]:
    """Build ``model`` with TensorRT and return its layers' datatypes."""
    build = build_engine(model, progress=False)
    report = find_layer_report(line[4:] if line.startswith("[") else line
                               for line in build.log_lines)
    assert report, "the builder logged no Layers: message"
    layers = []
    for line in report.splitlines():
        if not line.startswith("Name:"):
            continue
        name = line.split(",", 1)[0][len("Name: "):]
        layer_type = re.search(r"LayerType: (\w+)", line).group(1)
        layers.append(LayerDatatypes(
            name=name, type=layer_type,
            inputs=_DATATYPE.findall(_section(line, "Inputs", "Constants")),
            constants=_DATATYPE.findall(_section(line, "Constants", "Outputs")),
            outputs=_DATATYPE.findall(_section(line, "Outputs", "TacticName")),
            metadata=line.split("Metadata:", 1)[1] if "Metadata:" in line else ""))
    return layers


def layers_running(layers: list[LayerDatatypes], onnx_node: str,
                   layer_type: str = "correlation") -> list[LayerDatatypes]:
    """Engine layers of ``layer_type`` whose metadata names ``onnx_node``."""
    pattern = re.compile(rf"(ONNX Layer: |\| ){re.escape(onnx_node)}[\] ]")
    return [layer for layer in layers if layer.type == layer_type and pattern.search(layer.metadata)]
