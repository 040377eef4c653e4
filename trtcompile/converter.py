"""A TF-TRT-shaped Python API for users migrating from ``TrtGraphConverterV2``.

::

    converter = trtcompile.Converter(input_saved_model_dir="my_model", precision_mode="FP16",
                                     minimum_segment_size=3, max_workspace_size_bytes=1 << 30)
    converter.convert()                     # lower, run the pass pipeline, check parity
    converter.build(input_fn=my_input_fn)   # profiles from the shapes input_fn yields; engine
    print(converter.summary())
    converter.save("my_model_trt")          # optimized.onnx, model.engine, report.json

The Converter is a face over the compile flow of :mod:`trtcompile.compiler`: each method calls the
flow's stages (load, optimize, parity, profiles, engine, engine parity, write) in the same order
``trtcompile compile`` does, so the outputs and the report are the command's. What differs from
TF-TRT: the result is an ONNX model and a TensorRT engine plan, not a SavedModel with TRT ops; and
``convert`` already checks numerical parity (raising :class:`~trtcompile.errors.CheckFailed`).
See docs/migrating-from-tf-trt.md.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trtcompile import checks
from trtcompile.errors import CheckFailed, InputError

#: TF-TRT's ``precision_mode`` values and the precision written into the graph for each.
PRECISION_MODES = {"FP32": "fp32", "FP16": "fp16", "INT8": "int8"}


class Converter:
    """Convert a TensorFlow model (or an ONNX file) the way ``TrtGraphConverterV2`` does.

    Args:
        input_saved_model_dir: the SavedModel folder (a .keras/.h5 file or an .onnx file work too).
        input_saved_model_signature_key: the signature to convert (default ``serving_default``).
        precision_mode: ``"FP32"``, ``"FP16"`` or ``"INT8"`` (INT8 needs ``calibration_input_fn``
            in :meth:`convert`).
        minimum_segment_size: the smallest run of supported nodes worth an engine segment
            (``CompileOptions.min_segment_size``).
        max_workspace_size_bytes: limit of TensorRT's builder workspace (None: TensorRT's default).
        pipeline: pass pipeline text (default: the default pipeline).
        **options: any other :class:`~trtcompile.compiler.CompileOptions` field (``atol``,
            ``rtol``, ``seed``, ``calib_method``, ``exclude_ops``, ``engine_parity``, ...).
    """

    def __init__(self, input_saved_model_dir: str | Path | None = None,
                 input_saved_model_signature_key: str = "serving_default",
                 precision_mode: str = "FP32", minimum_segment_size: int = 3,
                 max_workspace_size_bytes: int | None = None, *, pipeline: str = "default",
                 **options: Any):
        from trtcompile.compiler import CompileOptions
        from trtcompile.frontend import FrontendOptions

        if input_saved_model_dir is None:
            raise InputError("Converter needs input_saved_model_dir (a SavedModel folder, a "
                             ".keras/.h5 file or an .onnx file)")
        mode = str(precision_mode).upper()
        if mode not in PRECISION_MODES:
            raise InputError(f"precision_mode {precision_mode!r}: expected one of "
                             f"{', '.join(PRECISION_MODES)}")
        checks.count("minimum_segment_size", minimum_segment_size, minimum=1)
        checks.workspace_bytes("max_workspace_size_bytes", max_workspace_size_bytes)
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(CompileOptions)})
        if unknown:
            raise InputError(f"Converter: unknown option(s) {', '.join(unknown)}")
        frontend = options.pop("frontend", None) or FrontendOptions()
        self.source = Path(input_saved_model_dir)
        self.options = CompileOptions(
            pipeline=pipeline, precision=PRECISION_MODES[mode],
            min_segment_size=minimum_segment_size, workspace_bytes=max_workspace_size_bytes,
            frontend=dataclasses.replace(frontend, signature=input_saved_model_signature_key),
            progress=options.pop("progress", False), **options)
        self._converted: dict[str, Any] | None = None
        self._built: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------

    def convert(self, calibration_input_fn: Callable[[], Iterable] | Iterable | Mapping | Any = None
                ) -> Converter:
        """Lower the model, run the pass pipeline (with the precision pass) and check parity on
        ONNX Runtime. For INT8, ``calibration_input_fn`` gives the calibration samples: a
        function returning a generator of batches (as TF-TRT), a generator or list of batches,
        a dict of arrays by input name, or one array; each batch a tuple of arrays in input order,
        a dict, or an array. Raises CheckFailed when parity fails."""
        from trtcompile import calibration, compiler
        from trtcompile.pass_manager import parse_pipeline
        from trtcompile.shapes import resolve_profiles

        options = self.options
        compiler.check_numbers(options)
        if options.precision == "int8":
            if calibration_input_fn is None and not options.calib_data and not options.calib_cache:
                raise InputError('precision_mode="INT8" needs calibration_input_fn (or calib_data)')
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        # INT8: the pipeline is composed once the samples are known (they need the loaded model).
        probe = dataclasses.replace(options, calib_data=options.calib_data or "in memory")
        registry = compiler.build_registry(options.pass_modules)
        pipeline = compiler.with_precision_pass(parse_pipeline(options.pipeline, registry),
                                                probe, registry)
        loaded = compiler.load_source(self.source, options)
        seconds["load"] = time.perf_counter() - started
        if options.precision == "int8" and calibration_input_fn is not None:
            aliases = {b.feed_key: b.onnx_name for b in getattr(loaded.reference, "inputs", [])}
            options = dataclasses.replace(options, calib_data=calibration.calibration_data(
                calibration_input_fn, loaded.model, aliases=aliases))
        options, engine_tolerances = compiler.with_precision_tolerances(options)
        resources = compiler.precision_resources(loaded, options)
        t0 = time.perf_counter()
        optimized, pipeline_report = compiler.optimize(loaded, pipeline, registry, options, None,
                                                       resources)
        seconds["optimize"] = time.perf_counter() - t0
        plan = resolve_profiles(loaded.model, options.shapes)
        parity = None
        if options.parity:
            t0 = time.perf_counter()
            parity = compiler.check_parity_at_shapes(loaded, optimized, options, plan)
            seconds["parity"] = time.perf_counter() - t0
            if not parity.passed:
                raise CheckFailed(parity.error_message())
        self.options = options
        self._converted = {"loaded": loaded, "optimized": optimized, "plan": plan,
                           "pipeline_report": pipeline_report, "parity": parity,
                           "engine_tolerances": engine_tolerances, "seconds": seconds}
        self._built = None
        return self

    def build(self, input_fn: Callable[[], Iterable] | Iterable | None = None) -> Converter:
        """Build the TensorRT engine. The optimization profiles come from the input shapes the
        batches of ``input_fn`` have (TF-TRT's build: one range covering them all, the
        ``range`` strategy of docs/shapes.md); parity is checked again at the profile's shapes.
        Without ``input_fn``, the model's own shapes (or the default profile) are used."""
        from trtcompile import compiler
        from trtcompile.shapes import ShapeOptions, resolve_profiles

        converted = self._require_converted("build")
        loaded, optimized, options = converted["loaded"], converted["optimized"], self.options
        plan, parity = converted["plan"], converted["parity"]
        seconds = dict(converted["seconds"])
        if input_fn is not None:
            shape_sets = self._shape_sets(input_fn, loaded)
            plan = resolve_profiles(loaded.model, ShapeOptions(
                representative_shapes=shape_sets, strategy="range"))
            if options.parity:
                t0 = time.perf_counter()
                parity = compiler.check_parity_at_shapes(loaded, optimized, options, plan)
                seconds["parity"] = seconds.get("parity", 0.0) + time.perf_counter() - t0
                if not parity.passed:
                    raise CheckFailed(parity.error_message())
        t0 = time.perf_counter()
        engine = compiler.build_engine(optimized, loaded, options, plan)  # BackendError
        seconds["engine"] = time.perf_counter() - t0
        engine_status = {"built": True, **engine.to_dict(compiler.ENGINE_PLAN)}
        engine_parity, error = compiler.engine_parity_stage(
            engine, engine_status, loaded, optimized, options, plan,
            converted["engine_tolerances"])
        if error is not None:
            raise error
        self._built = {"engine": engine, "engine_status": engine_status, "plan": plan,
                       "parity": parity, "engine_parity": engine_parity, "seconds": seconds}
        return self

    def summary(self) -> str:
        """The compile report as ``trtcompile compile`` prints it: passes, parity, engine layers."""
        from trtcompile import report

        return report.render(self._report(files={}))

    def save(self, output_saved_model_dir: str | Path) -> Path:
        """Write ``optimized.onnx``, ``model.engine`` (after :meth:`build`), ``report.json`` (and
        ``lowered.onnx`` for TensorFlow input) into the folder, atomically: nothing partial is
        left if writing fails. Returns the folder."""
        from trtcompile import backend, compiler

        self._require_converted("save")
        output_dir = Path(output_saved_model_dir)
        compiler.check_output_location(output_dir, self.source, None)
        staging = compiler.make_staging(output_dir)
        try:
            files: dict[str, str] = {}
            converted = self._converted
            compiler.stage_models(staging, converted["loaded"], converted["optimized"], files)
            if self._built is not None:
                backend.save_plan(self._built["engine"], staging / compiler.ENGINE_PLAN)
                files["engine"] = compiler.ENGINE_PLAN
            state = self._state()
            compiler.write_outputs(staging, output_dir, self.options, files=files, **state)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return output_dir

    # ----------------------------------------------------------------------------------------

    def _require_converted(self, method: str) -> dict[str, Any]:
        if self._converted is None:
            raise InputError(f"Converter.{method}() needs convert() first")
        return self._converted

    def _state(self) -> dict[str, Any]:
        """The stage results :func:`trtcompile.compiler.write_outputs` reports."""
        from trtcompile import compiler

        converted = self._require_converted("summary")
        built = self._built or {}
        engine_status = built.get("engine_status", {"built": False, "reason": "build() not called"})
        engine_parity = built.get("engine_parity") or compiler.EngineParity.not_run(
            self.options.engine_parity, "no engine (build() not called)")
        seconds = dict(built.get("seconds", converted["seconds"]))
        seconds["total"] = sum(v for k, v in seconds.items() if k != "total")
        return {"loaded": converted["loaded"], "pipeline_report": converted["pipeline_report"],
                "optimized": converted["optimized"],
                "parity": built.get("parity", converted["parity"]),
                "engine": built.get("engine"), "engine_status": engine_status,
                "engine_parity": engine_parity, "plan": built.get("plan", converted["plan"]),
                "seconds": seconds, "error": None}

    def _report(self, files: dict[str, str]) -> dict[str, Any]:
        from trtcompile import compiler

        state = self._state()
        state.pop("engine")
        return compiler.compile_report(self.options, files=files, **state)

    @staticmethod
    def _shape_sets(input_fn: Callable[[], Iterable] | Iterable, loaded) -> list[dict[str, list[int]]]:
        """Input shapes of every batch ``input_fn`` yields, by the model's input names."""
        from trtcompile.calibration import model_input_specs

        names = [spec.name for spec in model_input_specs(loaded.model)]
        aliases = {b.feed_key: b.onnx_name for b in getattr(loaded.reference, "inputs", [])}
        nchw = {b.onnx_name for b in getattr(loaded.reference, "inputs", []) if b.nchw}
        batches = input_fn() if callable(input_fn) else input_fn
        sets = []
        for index, batch in enumerate(batches):
            if isinstance(batch, Mapping):
                named = {aliases.get(key, key): value for key, value in batch.items()}
            else:
                values = list(batch) if isinstance(batch, (tuple, list)) else [batch]
                if len(values) != len(names):
                    raise InputError(f"input_fn batch {index} has {len(values)} array(s); the "
                                     f"model has {len(names)} input(s) ({', '.join(names)})")
                named = dict(zip(names, values))
            shapes = {}
            for name, value in named.items():
                shape = [int(d) for d in getattr(value, "shape", ())]
                if name in nchw and len(shape) == 4:  # TensorFlow feeds NHWC; the graph is NCHW
                    shape = [shape[0], shape[3], shape[1], shape[2]]
                shapes[name] = shape
            sets.append(shapes)
        if not sets:
            raise InputError("input_fn yielded no batch")
        return sets


