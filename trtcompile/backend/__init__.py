"""TensorRT backend: parse the optimized ONNX model, build an engine plan, report its layers.

* :func:`build_engine` parses a model with TensorRT's ONNX parser and builds a serialized engine,
  returning an :class:`EngineBuild` with the plan and the engine's final layers (:class:`EngineLayer`);
* :func:`format_engine_layers` renders that layer report for the terminal;
* :func:`query_support` asks the parser which nodes it supports (:class:`SupportReport`, with
  a reason per rejected node), the classification the ``partition`` pass works from;
* :func:`save_plan` writes the plan atomically; :func:`run_engine` executes it (needs a GPU);
* :class:`BuildOptions` are the engine-build controls (levels, targets, builder cache, refit and
  stripped weights, plugins, precision constraints; :mod:`~trtcompile.backend.build_config` turns
  them into builder settings); :mod:`~trtcompile.backend.plan` reads a plan back,
  :mod:`~trtcompile.backend.refit` refits one.

The TensorRT module is ``tensorrt`` when importable, else ``tensorrt_rtx`` (:func:`load_tensorrt`).
What counts as an engine *compute layer* is defined in :mod:`trtcompile.backend.engine_report`.
"""

from trtcompile.backend.engine_report import (
    NON_COMPUTE_LAYER_TYPES,
    EngineBuild,
    EngineLayer,
    LayerReport,
    format_engine_layers,
    format_engine_summary,
    layer_type_histogram,
    parse_layer_report,
    precision_histogram,
    read_layer_report,
)
from trtcompile.backend.options import BuildOptions
from trtcompile.backend.support import SupportReport, query_support
from trtcompile.backend.tensorrt import (
    NO_GPU_MESSAGE,
    BackendInfo,
    backend_info,
    build_engine,
    check_targets,
    current_compute_capability,
    deserialize_engine,
    load_tensorrt,
    run_deserialized,
    run_engine,
    save_plan,
)

__all__ = [
    "NON_COMPUTE_LAYER_TYPES", "NO_GPU_MESSAGE", "BackendInfo", "BuildOptions", "EngineBuild",
    "EngineLayer", "check_targets", "current_compute_capability",
    "LayerReport", "SupportReport", "backend_info", "build_engine", "deserialize_engine",
    "format_engine_layers", "format_engine_summary", "layer_type_histogram", "load_tensorrt",
    "parse_layer_report", "precision_histogram", "query_support", "read_layer_report",
    "run_deserialized", "run_engine", "save_plan",
]
