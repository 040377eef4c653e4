"""The engine stage: TensorRT builds the optimized model with the compile's profiles and builder
options; the same build judges ``engine-guided`` groups."""

from __future__ import annotations

import onnx

from trtcompile import ir
from trtcompile.flow.options import CompileOptions
from trtcompile.frontend import LoadedModel
from trtcompile.shapes import ProfilePlan


def builder_settings(options: CompileOptions, plan: ProfilePlan | None,
                     loaded: LoadedModel) -> dict:
    """The builder arguments every engine of a compile is built with (the engine itself, the
    engine-guided judge's candidates, bisect's builds), so all of them are built alike."""
    return {"model_dir": loaded.model_dir,
            "profiles": plan.backend_profiles() if plan is not None else None,
            "workspace_bytes": options.workspace_bytes, "build": options.build}


def support_settings(options: CompileOptions) -> dict:
    """The parser-support query's arguments: the build's plugins are loaded, so a node a plugin
    implements counts as supported and stays inside an engine."""
    return {"plugin_libraries": options.build.plugin_libraries,
            "plugin_modules": options.build.plugin_modules}


def engine_summary(build, model: onnx.ModelProto, path: str | None) -> dict:
    """A built engine's summary and layers and, when ``model`` (the graph it was built from) is
    quantized, its INT8 layer accounting (``int8``, see
    :mod:`trtcompile.backend.int8_accounting`; None for a model with no quantized layer)."""
    from trtcompile.backend.int8_accounting import account_int8

    accounting = account_int8(build.layers, model)
    return {**build.to_dict(path), "int8": accounting.to_dict() if accounting is not None else None}


def engine_record(build, optimized: onnx.ModelProto, path: str | None) -> dict:
    """``report.json``'s ``engine`` section of a built engine (:func:`engine_summary`)."""
    return {"built": True, **engine_summary(build, optimized, path)}


def build_engine(optimized: onnx.ModelProto, loaded: LoadedModel, options: CompileOptions,
                 plan: ProfilePlan | None = None):
    """Build the TensorRT engine of the optimized model with ``plan``'s optimization profiles
    (raises BackendError)."""
    from trtcompile import backend

    return backend.build_engine(optimized, progress=options.progress,
                                echo_log="all" if options.verbose else False,
                                **builder_settings(options, plan, loaded))


def engine_judge(loaded: LoadedModel, plan: ProfilePlan | None, options: CompileOptions):
    """The judge ``engine-guided`` uses in a compile: a graph's engine compute layers, built as
    the compile builds its engine (raises BackendError when TensorRT cannot build it)."""

    def compute_layers(graph) -> int:
        from trtcompile import backend
        from trtcompile.errors import BackendError

        build = backend.build_engine(ir.export_model(graph.copy()), progress=False,
                                     **builder_settings(options, plan, loaded))
        if not build.layer_report_available:
            raise BackendError("the builder reported no engine layers, so engines cannot be compared")
        return build.compute_layers

    return compute_layers
