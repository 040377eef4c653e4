"""Refitting plans: put an ONNX model's weights into a refittable or weight-stripped plan
(``trtcompile refit ENGINE MODEL.onnx -o ENGINE2``, trtexec's ``--refit`` with
``--loadEngine``), and read a refitted plan's weights back.

TensorRT refits a deserialized engine (``IRefitter`` with ``IParserRefitter``, which matches the
ONNX initializers to the engine's weights by name), so refitting needs what deserialization needs:
the TensorRT the plan was built with and a supported GPU. Without one :func:`refit_plan` raises
BackendError with the CUDA runtime's reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trtcompile.backend.loader import load_tensorrt
from trtcompile.backend.log import capture_log, log_router
from trtcompile.errors import BackendError, InputError


def _parser_errors(parser_refitter) -> str:
    texts = [parser_refitter.get_error(i).desc() for i in range(parser_refitter.num_errors)]
    return "; ".join(" ".join(t.split()) for t in texts[:3]) or "no reason given"


def refit_plan(plan: bytes, onnx_path: str | os.PathLike) -> bytes:
    """``plan`` with the weights of the ONNX model at ``onnx_path``, serialized with its weights
    (a stripped plan comes back whole). InputError when the plan is not refittable or the model's
    weights do not fit it; BackendError when TensorRT cannot deserialize or refit it."""
    from trtcompile.backend.run import deserialize_engine

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: no such ONNX file")
    trt = load_tensorrt()
    engine = deserialize_engine(plan)
    if not engine.refittable:
        raise InputError("the plan is not refittable: build it with --refittable or "
                         "--strip-weights")
    router = log_router(trt)
    with capture_log(trt) as capture:
        refitter = trt.Refitter(engine, router)
        parser_refitter = trt.OnnxParserRefitter(refitter, router)
        if not parser_refitter.refit_from_file(os.fspath(onnx_path)):
            raise InputError(f"{onnx_path}: its weights do not fit the plan "
                             f"({_parser_errors(parser_refitter)})")
        missing = list(refitter.get_missing_weights())
        if missing:
            raise InputError(f"{onnx_path} lacks weights the plan needs: "
                             f"{', '.join(missing[:8])}")
        if not refitter.refit_cuda_engine():
            detail = "; ".join(capture.errors()[-2:]) or "no reason given"
            raise BackendError(f"TensorRT could not refit the plan: {detail}")
    serialization = engine.create_serialization_config()
    flags = trt.SerializationFlag.__members__
    if "EXCLUDE_WEIGHTS" in flags:
        serialization.clear_flag(flags["EXCLUDE_WEIGHTS"])
    if "INCLUDE_REFIT" in flags:
        serialization.set_flag(flags["INCLUDE_REFIT"])
    serialized = engine.serialize_with_config(serialization)
    if serialized is None:
        raise BackendError("TensorRT could not serialize the refitted plan")
    return bytes(memoryview(serialized))


def plan_weights(plan: bytes, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The named weights of a refittable plan as the refitter reads them back (all of them when
    ``names`` is None)."""
    from trtcompile.backend.run import deserialize_engine

    trt = load_tensorrt()
    engine = deserialize_engine(plan)
    refitter = trt.Refitter(engine, log_router(trt))
    names = list(refitter.get_all_weights()) if names is None else names
    weights = {}
    for name in names:
        value = refitter.get_named_weights(name)
        weights[name] = np.array(value.numpy() if hasattr(value, "numpy") else value, copy=True)
    return weights


__all__ = ["plan_weights", "refit_plan"]
