"""Build TensorRT engines from ONNX models: parse, add optimization profiles, build, report layers.

The backend works with either TensorRT package: ``tensorrt`` when it can be imported, else
``tensorrt_rtx`` (TensorRT for RTX, which builds serialized plans without a GPU). Networks are
strongly typed: precision is whatever the graph says (Cast, QuantizeLinear/DequantizeLinear), since
TensorRT 11 and TensorRT-RTX have no builder precision flags.

The backend is split by concern, and this module gathers its TensorRT-facing names in one place:
:mod:`~trtcompile.backend.loader` (which module, :func:`load_tensorrt`), :mod:`~trtcompile.backend.log`
(the process-wide logger and per-build captures, and why there is one), :mod:`~trtcompile.backend.build`
(parse, profiles, build, the layer report), :mod:`~trtcompile.backend.parser_errors` (the parser's
rejections in words) and :mod:`~trtcompile.backend.run` (deserialize and execute; needs a GPU).

Every failure a user can act on raises :class:`trtcompile.errors.BackendError` with one line.
"""

from trtcompile.backend.build import (
    Profile,
    build_engine,
    network_flags,
    save_plan,
    uses_external_data,
)
from trtcompile.backend.loader import (
    TENSORRT_MODULES,
    BackendInfo,
    backend_info,
    load_tensorrt,
)
from trtcompile.backend.log import LogCapture, capture_log, log_router
from trtcompile.backend.parser_errors import (
    UNHELPFUL_DESCRIPTIONS,
    clean_parser_description,
    parser_error_line,
    rejection_reason,
)
from trtcompile.backend.run import (
    NO_GPU_MESSAGE,
    check_targets,
    current_compute_capability,
    deserialize_engine,
    run_deserialized,
    run_engine,
)

__all__ = [
    "NO_GPU_MESSAGE", "TENSORRT_MODULES", "UNHELPFUL_DESCRIPTIONS", "BackendInfo", "LogCapture",
    "Profile", "backend_info", "build_engine", "capture_log", "check_targets",
    "clean_parser_description", "current_compute_capability",
    "deserialize_engine", "load_tensorrt", "log_router", "network_flags", "parser_error_line",
    "rejection_reason", "run_deserialized", "run_engine", "save_plan", "uses_external_data",
]
