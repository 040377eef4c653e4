"""A TF-TRT-shaped Python API for users migrating from ``TrtGraphConverterV2``.

::

    converter = trtcompile.Converter(input_saved_model_dir="my_model", precision_mode="FP16",
                                     minimum_segment_size=3, max_workspace_size_bytes=1 << 30)
    converter.convert()                     # lower, run the pass pipeline, check parity
    converter.build(input_fn=my_input_fn)   # profiles from the shapes input_fn yields; engine
    print(converter.summary())
    converter.save("my_model_trt")          # optimized.onnx, model.engine, report.json

The Converter is a face over the compile flow of :mod:`trtcompile.flow`: each method calls the
flow's stages (load, optimize, parity, profiles, engine, engine parity, write) in the same order
``trtcompile compile`` does, so the outputs and the report are the command's. What differs from
TF-TRT: the result is an ONNX model and a TensorRT engine plan, not a SavedModel with TRT ops; and
``convert`` already checks numerical parity (raising :class:`~trtcompile.errors.CheckFailed`).
See docs/migrating-from-tf-trt.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from trtcompile import checks
from trtcompile.errors import InputError

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
        **options: any other :class:`~trtcompile.flow.CompileOptions` field (``atol``,
            ``rtol``, ``seed``, ``calib_method``, ``exclude_ops``, ``engine_parity``, ...), or a
            :class:`~trtcompile.backend.options.BuildOptions` field given flat
            (``strip_weights=True``: :meth:`save` writes a weight-stripped plan beside the
            ``optimized.onnx`` that refills it, see ``trtcompile refit``).
    """

    def __init__(self, input_saved_model_dir: str | Path | None = None,
                 input_saved_model_signature_key: str = "serving_default",
                 precision_mode: str = "FP32", minimum_segment_size: int = 3,
                 max_workspace_size_bytes: int | None = None, *, pipeline: str = "default",
                 **options: Any):
        from trtcompile.flow import CompileOptions
        from trtcompile.frontend.model import FrontendOptions

        if input_saved_model_dir is None:
            raise InputError("Converter needs input_saved_model_dir (a SavedModel folder, a "
                             ".keras/.h5 file or an .onnx file)")
        mode = str(precision_mode).upper()
        if mode not in PRECISION_MODES:
            raise InputError(f"precision_mode {precision_mode!r}: expected one of "
                             f"{', '.join(PRECISION_MODES)}")
        checks.count("minimum_segment_size", minimum_segment_size, minimum=1)
        checks.workspace_bytes("max_workspace_size_bytes", max_workspace_size_bytes)
        from trtcompile.backend.options import BuildOptions

        # Build options may be given flat (strip_weights=True) or as build=BuildOptions(...).
        flat = {k: options.pop(k) for k in [k for k in options if k in BuildOptions.__annotations__]}
        if flat:
            options["build"] = dataclasses.replace(options.get("build") or BuildOptions(), **flat)
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
        self._compilation = None  # trtcompile.flow.Compilation, after convert()
        self._built = False

    # ----------------------------------------------------------------------------------------

    @property
    def compilation(self):
        """The :class:`~trtcompile.flow.Compilation` behind this converter (None before
        :meth:`convert`): its stages' results, e.g. ``pipeline_report`` and ``parity``."""
        return self._compilation

    def convert(self, calibration_input_fn: Callable[[], Iterable] | Iterable | Mapping | Any = None
                ) -> Converter:
        """Lower the model, run the pass pipeline (with the precision pass) and check parity on
        ONNX Runtime. For INT8, ``calibration_input_fn`` gives the calibration samples: a
        function returning a generator of batches (as TF-TRT), a generator or list of batches,
        a dict of arrays by input name, or one array; each batch a tuple of arrays in input order,
        a dict, or an array. Raises CheckFailed when parity fails."""
        from trtcompile.flow import Compilation

        options = self.options
        if options.precision == "int8" and calibration_input_fn is None \
                and not options.calib_data and not options.calib_cache:
            raise InputError('precision_mode="INT8" needs calibration_input_fn (or calib_data)')
        if calibration_input_fn is not None and options.precision != "int8":
            raise InputError("calibration_input_fn applies to precision_mode=\"INT8\" only")
        compilation = Compilation(self.source, options, calibration_input=calibration_input_fn)
        compilation.load()
        compilation.optimize()
        if options.parity:
            compilation.check_parity()
            if compilation.error is not None:
                raise compilation.error
        self._compilation = compilation
        self._built = False
        return self

    def build(self, input_fn: Callable[[], Iterable] | Iterable | None = None) -> Converter:
        """Build the TensorRT engine, as ``trtcompile compile`` does: one engine, or, where
        TensorRT's parser rejects nodes, one engine per supported segment with the rest on ONNX
        Runtime. The optimization profiles come from the input shapes the batches of ``input_fn``
        have (TF-TRT's build: one range covering them all, the ``range`` strategy of
        docs/shapes.md); parity is checked again at the profile's shapes. Without ``input_fn``,
        the model's own shapes (or the default profile) are used."""
        compilation = self._require_converted("build")
        if input_fn is not None:
            compilation.set_profiles(self._shape_sets(input_fn, compilation.loaded))
            if compilation.options.parity:
                compilation.check_parity()
                if compilation.error is not None:
                    raise compilation.error
        compilation.partition()
        compilation.build_engine()
        compilation.check_engine_parity()
        if compilation.error is not None:
            raise compilation.error
        self._built = True
        return self

    def summary(self) -> str:
        """The compile report as ``trtcompile compile`` prints it: passes, parity, engine layers."""
        from trtcompile import report

        return report.render(self._require_converted("summary").report())

    def save(self, output_saved_model_dir: str | Path) -> Path:
        """Write ``optimized.onnx``, ``model.engine`` (after :meth:`build`; for a partitioned
        model ``partitioned.onnx``, ``segments/`` and ``partitioned_ctx.onnx``), ``report.json``
        (and ``lowered.onnx`` for TensorFlow input) into the folder, atomically: nothing partial
        is left if writing fails. Returns the folder."""
        compilation = self._require_converted("save")
        compilation.write(output_saved_model_dir)
        return Path(output_saved_model_dir)

    # ----------------------------------------------------------------------------------------

    def _require_converted(self, method: str):
        if self._compilation is None:
            raise InputError(f"Converter.{method}() needs convert() first")
        return self._compilation

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


