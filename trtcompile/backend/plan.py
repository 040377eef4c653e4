"""What a serialized plan says about itself: its header (readable anywhere) and, where TensorRT
can deserialize it (a supported GPU), the engine's own account through ``IEngineInspector``.

**Header** (no TensorRT call): a plan starts with a tag, ``ftrt`` for standard TensorRT and
``vtrt`` for TensorRT-RTX, then a 32-bit serialization version; for serialization version 0 the
bytes 24-27 are the TensorRT version that built it (as ``trtexec --getPlanVersionOnly`` reads
them). TensorRT-RTX plans keep their target GPUs at bytes 32-39 as a bit set, one bit per
``ComputeCapability`` member in declaration order (SM75 is bit 0); a bit this TensorRT does not
name is reported as such.

**Engine** (needs deserialization): layers with their precision, bindings, optimization profiles,
refittable, stripped weights, hardware compatibility and plugin layers. Without a GPU
deserialization fails; :func:`inspect_plan` then reports the header and says what could not be
read and why.
"""

from __future__ import annotations

import json
import struct
import types
from dataclasses import dataclass, field
from typing import Any

from trtcompile.errors import BackendError

#: Plan tags: standard TensorRT and TensorRT-RTX.
PLAN_TAGS = {b"ftrt": "TensorRT", b"vtrt": "TensorRT-RTX"}
_VERSION_OFFSET = 24
_TARGETS_OFFSET = 32


@dataclass
class PlanHeader:
    """The header of a plan file."""

    #: ``TensorRT``, ``TensorRT-RTX``, or None when the bytes are not a plan.
    kind: str | None
    #: ``1.7.1.116``; None when the serialization version is not one whose layout is known.
    version: str | None = None
    #: Compute capabilities the plan targets (``["8.9"]``); None when the header does not say.
    compute_capabilities: list[str] | None = None
    #: Target bits this TensorRT does not name.
    unnamed_targets: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version,
                "compute_capabilities": self.compute_capabilities,
                "unnamed_targets": list(self.unnamed_targets)}


def read_header(plan: bytes, trt: types.ModuleType | None = None) -> PlanHeader:
    """The header of ``plan`` (``trt``, when given, names TensorRT-RTX's target bits)."""
    kind = PLAN_TAGS.get(bytes(plan[:4]))
    if kind is None or len(plan) < 40:
        return PlanHeader(None)
    serialization = struct.unpack_from("<I", plan, 4)[0]
    header = PlanHeader(kind)
    if serialization == 0 or kind == "TensorRT-RTX":
        header.version = ".".join(str(b) for b in plan[_VERSION_OFFSET:_VERSION_OFFSET + 4])
    if kind == "TensorRT-RTX":
        bits = struct.unpack_from("<Q", plan, _TARGETS_OFFSET)[0]
        names = _target_names(trt)
        header.compute_capabilities = [names[i] for i in range(len(names)) if bits >> i & 1]
        header.unnamed_targets = [i for i in range(len(names), 64) if bits >> i & 1]
    return header


def _target_names(trt: types.ModuleType | None) -> list[str]:
    """``["7.5", "8.0", ...]``: TensorRT-RTX's ``ComputeCapability`` members in declaration order."""
    if trt is None or not hasattr(trt, "ComputeCapability"):
        from trtcompile.backend.loader import load_tensorrt

        trt = load_tensorrt()
    members = [m for m in getattr(trt, "ComputeCapability", type("E", (), {"__members__": {}})
                                  ).__members__ if m.startswith("SM")]
    return [f"{m[2:-1]}.{m[-1]}" for m in members]


def engine_properties(engine: Any, trt: types.ModuleType) -> dict[str, Any]:
    """What a deserialized engine says of itself: refittable, stripped weights, hardware
    compatibility, profiles, bindings and layers (from ``IEngineInspector``)."""
    properties: dict[str, Any] = {"refittable": bool(getattr(engine, "refittable", False))}
    if hasattr(engine, "hardware_compatibility_level"):
        properties["hardware_compatibility"] = str(engine.hardware_compatibility_level).split(".")[-1]
    stat = getattr(trt, "EngineStat", None)
    if stat is not None and hasattr(engine, "get_engine_stat"):
        total = engine.get_engine_stat(stat.TOTAL_WEIGHTS_SIZE)
        stripped = engine.get_engine_stat(stat.STRIPPED_WEIGHTS_SIZE)
        properties.update(weights_bytes=int(total), stripped_weights_bytes=int(stripped),
                          stripped=bool(stripped))
    properties["profiles"] = int(engine.num_optimization_profiles)
    properties["bindings"] = bindings(engine, trt)
    layers = inspector_layers(engine, trt)
    properties["layers"] = layers
    properties["plugin_layers"] = [layer["name"] for layer in layers
                                   if "plugin" in str(layer.get("type", "")).lower()]
    return properties


def bindings(engine: Any, trt: types.ModuleType) -> list[dict[str, Any]]:
    """Input and output tensors: name, mode, type, shape, and per profile min/opt/max of inputs."""
    records = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        record = {"name": name, "mode": "input" if is_input else "output",
                  "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
                  "shape": list(engine.get_tensor_shape(name))}
        if is_input and -1 in record["shape"]:
            record["profiles"] = [
                dict(zip(("min", "opt", "max"), (list(s) for s in
                                                 engine.get_tensor_profile_shape(name, p))))
                for p in range(engine.num_optimization_profiles)]
        records.append(record)
    return records


def inspector_layers(engine: Any, trt: types.ModuleType) -> list[dict[str, Any]]:
    """The engine's layers as its inspector gives them (name, type, precision where the plan was
    built with detailed profiling verbosity)."""
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        layers = json.loads(text).get("Layers", [])
    except (ValueError, AttributeError):
        return []
    records = []
    for layer in layers:
        if isinstance(layer, str):  # built without detailed verbosity: names only
            records.append({"name": layer, "type": None, "precision": None})
            continue
        outputs = layer.get("Outputs") or []
        precision = ",".join(str(o.get("Format/Datatype", "")).split(" ")[-1] for o in outputs)
        records.append({"name": layer.get("Name"), "type": layer.get("LayerType"),
                        "precision": precision or None,
                        "tactic": layer.get("TacticName")})
    return records


def inspect_plan(plan: bytes) -> dict[str, Any]:
    """Everything readable about ``plan`` here: the header always; the engine's properties when
    TensorRT can deserialize it (otherwise ``deserialized`` is False and ``why_not`` says why)."""
    from trtcompile.backend.build_config import tensorrt_name
    from trtcompile.backend.loader import load_tensorrt
    from trtcompile.backend.run import deserialize_engine

    trt = load_tensorrt()
    header = read_header(plan, trt)
    record: dict[str, Any] = {"bytes": len(plan), "header": header.to_dict(),
                              "tensorrt_in_use": tensorrt_name(trt), "deserialized": False}
    if header.kind is None:
        record["why_not"] = "not a TensorRT plan (no ftrt/vtrt tag at its start)"
        return record
    in_use = "TensorRT-RTX" if trt.__name__ == "tensorrt_rtx" else "TensorRT"
    if header.kind != in_use:
        record["why_not"] = f"a {header.kind} plan; the TensorRT in use is {in_use}"
        return record
    try:
        engine = deserialize_engine(plan)
    except BackendError as exc:
        record["why_not"] = str(exc)
        return record
    record["deserialized"] = True
    record["engine"] = engine_properties(engine, trt)
    return record


__all__ = ["PLAN_TAGS", "PlanHeader", "bindings", "engine_properties", "inspect_plan",
           "inspector_layers", "read_header"]
