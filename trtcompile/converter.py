"""A TF-TRT-shaped Python API for users migrating from ``TrtGraphConverterV2``.

::

    converter = trtcompile.Converter(input_saved_model_dir="my_model", precision_mode="FP16",
                                     minimum_segment_size=3, max_workspace_size_bytes=1 << 30)
    converter.convert()                     # lower, run the pass pipeline, check parity
    converter.build(input_fn=my_input_fn)   # profiles from the shapes input_fn yields; engines
    converter.summary()                     # TF-TRT's summary: one entry per engine segment
    converter.save("my_model_trt")          # optimized.onnx, model.engine, report.json

Every argument and method of ``TrtGraphConverterV2`` is accepted: mapped to the compile option
that does the same, or, where it has no meaning here, accepted with a one-line note; the
call-order errors are TF-TRT's (``convert`` twice, ``build`` before ``convert`` or twice or
without ``input_fn``, ``calibration_input_fn`` outside INT8...), raised as exceptions of TF-TRT's
types that are also :class:`~trtcompile.errors.InputError`.

The Converter is a face over the compile flow of :mod:`trtcompile.flow`: each method calls the
flow's stages (load, optimize, parity, profiles, partition, engine, engine parity, write) in the
same order ``trtcompile compile`` does, so the outputs and the report are the command's. What
differs from TF-TRT: the result is an ONNX model and TensorRT engine plans, not a SavedModel with
TRT ops; and ``convert`` already checks numerical parity (raising
:class:`~trtcompile.errors.CheckFailed`). See docs/migrating-from-tf-trt.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from trtcompile import checks
from trtcompile.errors import InputError

#: TF-TRT's ``precision_mode`` values and the precision written into the graph for each. TF-TRT
#: has no BF16; ``"BF16"`` is accepted here as ``--precision bf16`` (refused with exit code 6, as
#: there, where the installed TensorRT cannot build it).
PRECISION_MODES = {"FP32": "fp32", "FP16": "fp16", "BF16": "bf16", "INT8": "int8"}

#: TF-TRT's ``dynamic_shape_profile_strategy`` values and the profile strategy of each
#: (docs/shapes.md); ``ImplicitBatchModeCompatible`` is TF-TRT's range over the batch dimension.
PROFILE_STRATEGIES = {"range": "range", "optimal": "optimal", "range+optimal": "range+optimal",
                      "implicitbatchmodecompatible": "range"}

#: TF-TRT's defaults of the arguments that only matter to TF-TRT's runtime.
_TFTRT_DEFAULTS = {"maximum_cached_engines": 1, "allow_build_at_runtime": True}

#: Fields of TF-TRT's ``TrtConversionParams`` (``conversion_params``), in its order.
CONVERSION_PARAMS = ("max_workspace_size_bytes", "precision_mode", "minimum_segment_size",
                     "maximum_cached_engines", "use_calibration", "allow_build_at_runtime")


class ConverterStateError(InputError, RuntimeError):
    """A method called out of order (TF-TRT raises RuntimeError for these)."""


class ConvertedAlready(InputError, AssertionError):
    """``convert`` called twice, or ``save`` before ``convert`` (TF-TRT asserts these)."""


class ConverterArgumentError(InputError, ValueError):
    """An argument TF-TRT refuses with ValueError (``calibration_input_fn`` where INT8 needs
    none or needs one)."""


class Converter:
    """Convert a TensorFlow model (or an ONNX file) the way ``TrtGraphConverterV2`` does.

    Args:
        input_saved_model_dir: the SavedModel folder (a .keras/.h5 file or an .onnx file work too).
        input_saved_model_tags: accepted; the SavedModel is loaded with its ``serve`` tag set (a
            note says so for other tags).
        input_saved_model_signature_key: the signature to convert (default ``serving_default``).
        use_dynamic_shape: accepted; engines always have optimization profiles here (from
            :meth:`build`'s ``input_fn``), so ``False`` (implicit batch) is a note.
        dynamic_shape_profile_strategy: ``Range``, ``Optimal``, ``Range+Optimal`` or
            ``ImplicitBatchModeCompatible``: how :meth:`build` makes profiles from the shapes its
            ``input_fn`` yields (docs/shapes.md).
        max_workspace_size_bytes: limit of TensorRT's builder workspace (None: TensorRT's default).
        precision_mode: ``"FP32"``, ``"FP16"``, ``"BF16"`` (not TF-TRT's: ``--precision bf16``)
            or ``"INT8"`` (INT8 needs ``calibration_input_fn`` in :meth:`convert` unless
            ``use_calibration=False``).
        minimum_segment_size: the smallest run of supported nodes worth an engine segment
            (``CompileOptions.min_segment_size``).
        maximum_cached_engines, allow_build_at_runtime: accepted; engines are built ahead of
            time for the profiles, never at run time (a note says so for other values).
        use_calibration: with INT8, ``False`` keeps the model's own quantization (Q/DQ nodes,
            as quantization-aware training leaves them) instead of calibrating.
        conversion_params: TF-TRT's ``TrtConversionParams`` (or a dict of its fields): its
            fields are read as the arguments of the same names.
        pipeline: pass pipeline text (default: the default pipeline).
        **options: any other :class:`~trtcompile.flow.CompileOptions` field (``atol``,
            ``rtol``, ``seed``, ``calib_method``, ``exclude_ops``, ``inputs``, ...), or a
            :class:`~trtcompile.backend.options.BuildOptions` field given flat
            (``strip_weights=True``: :meth:`save` writes a weight-stripped plan beside the
            ``optimized.onnx`` that refills it, see ``trtcompile refit``).

    Notes (an argument with no meaning here, how many calibration samples were held out) go to
    ``options["log"]`` when given, else to stderr; :attr:`notes` keeps them.
    """

    def __init__(self, input_saved_model_dir: str | Path | None = None,
                 input_saved_model_tags: Iterable[str] | None = None,
                 input_saved_model_signature_key: str | None = None,
                 use_dynamic_shape: bool | None = None,
                 dynamic_shape_profile_strategy: str | None = None,
                 max_workspace_size_bytes: int | None = None,
                 precision_mode: str = "FP32", minimum_segment_size: int = 3,
                 maximum_cached_engines: int = 1, use_calibration: bool = True,
                 allow_build_at_runtime: bool = True, conversion_params: Any = None, *,
                 pipeline: str = "default", **options: Any):
        from trtcompile.flow import CompileOptions
        from trtcompile.frontend.model import FrontendOptions

        self.notes: list[str] = []
        self._log = options.get("log")
        if input_saved_model_dir is None:
            raise InputError("Converter needs input_saved_model_dir (a SavedModel folder, a "
                             ".keras/.h5 file or an .onnx file)")
        if conversion_params is not None:  # TF-TRT reads these fields over the arguments
            params = _conversion_params(conversion_params)
            max_workspace_size_bytes = params.get("max_workspace_size_bytes",
                                                  max_workspace_size_bytes)
            precision_mode = params.get("precision_mode", precision_mode)
            minimum_segment_size = params.get("minimum_segment_size", minimum_segment_size)
            maximum_cached_engines = params.get("maximum_cached_engines", maximum_cached_engines)
            use_calibration = params.get("use_calibration", use_calibration)
            allow_build_at_runtime = params.get("allow_build_at_runtime", allow_build_at_runtime)
        mode = str(getattr(precision_mode, "value", precision_mode)).upper()
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
        checks.count("maximum_cached_engines", maximum_cached_engines, minimum=1)
        strategy = None
        if dynamic_shape_profile_strategy is not None:
            strategy = PROFILE_STRATEGIES.get(str(dynamic_shape_profile_strategy).lower())
            if strategy is None:
                raise ConverterArgumentError(
                    f"dynamic_shape_profile_strategy {dynamic_shape_profile_strategy!r}: expected "
                    "one of Range, Optimal, Range+Optimal, ImplicitBatchModeCompatible")
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(CompileOptions)})
        if unknown:
            raise InputError(f"Converter: unknown option(s) {', '.join(unknown)} (TF-TRT's "
                             "arguments and CompileOptions fields are accepted)")
        precision = PRECISION_MODES[mode]
        if precision == "int8" and not use_calibration:
            precision = "fp32"
            self._note("use_calibration=False: the model's own quantization (Q/DQ nodes) is "
                       "kept as the graph says; nothing is calibrated")
        self._notes_for_runtime_arguments(input_saved_model_tags, use_dynamic_shape,
                                          maximum_cached_engines, allow_build_at_runtime)
        frontend = options.pop("frontend", None) or FrontendOptions()
        self.source = Path(input_saved_model_dir)
        self.profile_strategy = strategy or "range"
        self.options = CompileOptions(
            pipeline=pipeline, precision=precision,
            min_segment_size=minimum_segment_size, workspace_bytes=max_workspace_size_bytes,
            frontend=dataclasses.replace(
                frontend, signature=input_saved_model_signature_key or "serving_default"),
            progress=options.pop("progress", False), **options)
        self._compilation = None  # trtcompile.flow.Compilation, after convert()
        self._converted = False
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
        ONNX Runtime. For INT8, ``calibration_input_fn`` gives the calibration samples, any
        number of them: a function returning a generator of batches (as TF-TRT), a generator or
        list of batches, a dict of arrays by input name, or one array; each batch a tuple of
        arrays in input order, a dict, or an array. A note says how many samples were held out
        for the top-1 agreement check (none below 40). Raises CheckFailed when parity fails, and
        TF-TRT's errors: ValueError for ``calibration_input_fn`` outside INT8 or missing in INT8,
        AssertionError when called twice."""
        from trtcompile.flow import Compilation

        if self._converted:
            raise ConvertedAlready("convert() was already called: a Converter converts once "
                                   "(make a new one to convert again)")
        options = self.options
        if options.precision == "int8" and calibration_input_fn is None \
                and not options.calib_data and not options.calib_cache:
            raise ConverterArgumentError('precision_mode="INT8" needs calibration_input_fn (or '
                                         "calib_data): INT8 calibration is needed")
        if calibration_input_fn is not None and options.precision != "int8":
            raise ConverterArgumentError("calibration_input_fn applies to precision_mode=\"INT8\" "
                                         "only: INT8 calibration is not needed")
        compilation = Compilation(self.source, options, calibration_input=calibration_input_fn)
        compilation.load()
        self._note_calibration(compilation)
        compilation.optimize()
        if options.parity:
            compilation.check_parity()
            if compilation.error is not None:
                raise compilation.error
        self._compilation = compilation
        self._converted = True
        self._built = False
        return self

    def build(self, input_fn: Callable[[], Iterable] | Iterable | None | object = ...
              ) -> Converter:
        """Build the TensorRT engines, as ``trtcompile compile`` does: one engine, or, where
        TensorRT's parser rejects nodes or its builder fails on some, one engine per segment with
        the rest on ONNX Runtime. The optimization profiles come from the input shapes the
        batches of ``input_fn`` have (``dynamic_shape_profile_strategy``: one range covering
        them all by default, docs/shapes.md); parity is checked again at the profile's shapes.
        Called with no argument at all, the compile's own profiles are used (the ``shapes``
        option, else the model's shapes), as ``trtcompile compile`` builds. Raises RuntimeError
        as TF-TRT does: before :meth:`convert`, a second time, or with ``input_fn=None``."""
        if not self._converted:
            raise ConverterStateError("Need to call convert() before build()")
        if self._built:
            raise ConverterStateError("build() is already called. It is not supported to call "
                                      "build() more than once.")
        if input_fn is None:
            raise ConverterStateError("input_fn is None. Method build() needs input_fn to be "
                                      "specified in order to build TensorRT engines")
        compilation = self._compilation
        shape_sets = None if input_fn is ... else self._shape_sets(input_fn, compilation.loaded)
        if shape_sets is None:
            pass  # the profiles resolved at load
        elif self.profile_strategy == "range":
            compilation.set_profiles(shape_sets)
        else:
            from trtcompile.shapes import ShapeOptions, resolve_profiles

            compilation.options = dataclasses.replace(compilation.options, shapes=ShapeOptions(
                representative_shapes=shape_sets, strategy=self.profile_strategy))
            compilation.plan = resolve_profiles(compilation.loaded.model,
                                                compilation.options.shapes)
        if shape_sets is not None and compilation.options.parity:
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

    def summary(self, line_length: int | None = None, detailed: bool = True,
                print_fn: Callable[[str], Any] | None = None) -> None:
        """Print what was converted as TF-TRT's ``summary`` does: the number of engines and the
        share of ops in them, then (``detailed``) one entry per engine segment with its inputs,
        outputs, nodes, engine layers and their precision, and the ops left to ONNX Runtime with
        why. ``print_fn`` receives each line (default ``print``); lines are cut to
        ``line_length`` characters (default 160, TF-TRT's). Returns nothing."""
        if not self._converted:
            raise ConverterStateError(f"Impossible to call {type(self).__name__}.summary() "
                                      "before calling convert()")
        print_fn = print_fn or print
        width = 160 if line_length is None else int(line_length)
        for line in summary_lines(self._compilation, detailed=detailed):
            print_fn(line[:width] if width > 0 else line)

    def save(self, output_saved_model_dir: str | Path, save_gpu_specific_engines: bool = True,
             options: Any = None, *, triton: bool | str | Path = False) -> Path:
        """Write ``optimized.onnx``, ``model.engine`` (after :meth:`build`; for a partitioned
        model ``partitioned.onnx``, ``segments/`` and ``partitioned_ctx.onnx``), ``report.json``
        (and ``lowered.onnx`` for TensorFlow input) into the folder, atomically: nothing partial
        is left if writing fails. ``save_gpu_specific_engines=False`` and ``options`` (a
        ``tf.saved_model.SaveOptions``) are accepted with a note: engine plans are what this
        compiler makes, and nothing is written as a SavedModel. Returns the folder.

        ``triton``: also write the model into a Triton model repository, as ``trtcompile export
        OUT --triton REPO`` does (:mod:`trtcompile.flow.triton`): a path names the repository,
        ``True`` means ``<folder>/triton``. TF Serving cannot load what this compiler writes;
        Triton serves plans and ONNX models."""
        if not self._converted:
            raise ConvertedAlready("save() needs convert() first")
        if not save_gpu_specific_engines:
            self._note("save_gpu_specific_engines=False: the engines built by build() are "
                       "saved; they run on GPUs of the kind they were built for")
        if options is not None:
            self._note("save(options=...) applies to SavedModels; the outputs here are ONNX "
                       "models and engine plans, written as they are")
        repo = None if triton is False or triton is None else (
            Path(output_saved_model_dir) / "triton" if triton is True else Path(triton))
        if repo is not None:
            from trtcompile.flow.triton import check_repository, export_triton

            check_repository(output_saved_model_dir, repo)  # before the folder is written
        self._compilation.write(output_saved_model_dir)
        if repo is not None:

            export_triton(output_saved_model_dir, repo,
                          log=self._log or (lambda line: print(line, file=sys.stderr)))
        return Path(output_saved_model_dir)

    # ----------------------------------------------------------------------------------------

    def _note(self, line: str) -> None:
        self.notes.append(line)
        if self._log is not None:
            self._log(line)
        else:
            print(f"trtcompile: note: {line}", file=sys.stderr)

    def _notes_for_runtime_arguments(self, tags, use_dynamic_shape, maximum_cached_engines,
                                     allow_build_at_runtime) -> None:
        if tags is not None and set(tags) != {"serve"}:
            self._note(f"input_saved_model_tags={sorted(tags)}: the SavedModel's serving graph "
                       "is loaded (tags are not selected here)")
        if use_dynamic_shape is False:
            self._note("use_dynamic_shape=False: engines always have optimization profiles "
                       "here (from build's input_fn); there is no implicit batch mode")
        if maximum_cached_engines != _TFTRT_DEFAULTS["maximum_cached_engines"]:
            self._note(f"maximum_cached_engines={maximum_cached_engines}: engines are built "
                       "ahead of time, one per segment, with a profile for every shape "
                       "build's input_fn yields; nothing is cached at run time")
        if allow_build_at_runtime is not _TFTRT_DEFAULTS["allow_build_at_runtime"]:
            self._note("allow_build_at_runtime=False: engines are never built at run time here "
                       "(build() builds them)")

    def _note_calibration(self, compilation) -> None:
        resource = compilation.resources.get("quantize-int8")
        data = getattr(resource, "data", None)
        if data is None:
            return
        held_out = getattr(resource, "held_out", None)
        if held_out is None:
            from trtcompile import calibration

            needed = next(n for n in range(1, 100_000)
                          if int(n * calibration.HOLDOUT_FRACTION) >= calibration.MIN_HOLDOUT_SAMPLES
                          and n - int(n * calibration.HOLDOUT_FRACTION) >= calibration.MIN_SAMPLES)
            self._note(f"INT8: calibrating on all {data.num_samples} samples; none held out for "
                       f"the top-1 agreement check (that needs {needed} or more)")
        else:
            self._note(f"INT8: calibrating on {data.num_samples} samples; {held_out.num_samples} "
                       "held out for the top-1 agreement check")

    # ----------------------------------------------------------------------------------------

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




def _conversion_params(params: Any) -> dict[str, Any]:
    """The fields of a ``TrtConversionParams`` (a namedtuple) or of a dict of them."""
    if isinstance(params, Mapping):
        values = dict(params)
    elif hasattr(params, "_asdict"):
        values = dict(params._asdict())
    else:
        values = {name: getattr(params, name) for name in CONVERSION_PARAMS if hasattr(params, name)}
    unknown = sorted(set(values) - set(CONVERSION_PARAMS) - {"rewriter_config_template",
                                                             "is_dynamic_op", "max_batch_size"})
    if unknown:
        raise InputError(f"conversion_params: unknown field(s) {', '.join(unknown)} (fields: "
                         f"{', '.join(CONVERSION_PARAMS)})")
    return {name: values[name] for name in CONVERSION_PARAMS if name in values}


def summary_lines(compilation, *, detailed: bool = True) -> list[str]:
    """TF-TRT's summary of a converted model, as lines: engines, converted share, and
    (``detailed``) each engine segment and the ops left to ONNX Runtime."""
    from trtcompile import ir
    from trtcompile.backend.engine_report import precision_histogram

    outcome = compilation.partition_outcome
    engine = compilation.engine
    total = ir.compute_node_count(ir.import_model(compilation.optimized).nodes)
    entries = []  # (name, nodes, inputs, outputs, engine)
    if outcome is not None:
        for segment in outcome.segments:
            entries.append((segment.name, segment.compute_nodes, segment.inputs, segment.outputs,
                            segment.engine, segment.why_not_engine))
    else:
        model = compilation.optimized
        initializers = {t.name for t in model.graph.initializer}
        entries.append(("engine", total,
                        [v.name for v in model.graph.input if v.name not in initializers],
                        [v.name for v in model.graph.output], engine,
                        None if engine is not None else compilation.engine_status.get("reason")))
    converted = sum(nodes for _, nodes, _, _, built, _ in entries if built is not None)
    built_count = sum(1 for entry in entries if entry[4] is not None)
    share = converted / total if total else 0.0
    lines = [f"[*] Total number of TensorRT engines: {built_count}",
             f"[*] % of OPs Converted: {share * 100:.2f}% [{converted}/{total}]"]
    if not detailed:
        return lines
    lines.append("")
    for name, nodes, inputs, outputs, built, why_not in entries:
        lines.append(f"[{name}]")
        lines.append(f"  - Nodes: {nodes}")
        lines.append(f"  - Inputs: {len(inputs)}: {', '.join(inputs)}")
        lines.append(f"  - Outputs: {len(outputs)}: {', '.join(outputs)}")
        if built is None:
            lines.append(f"  - Engine: not built ({why_not})")
            continue
        layers = [layer for layer in built.layers if layer.profile == 0]
        precision = ", ".join(f"{kind} {count}" for kind, count in
                              precision_histogram(layers).items() if count) or "unknown"
        lines.append(f"  - Layers: {built.compute_layers} compute layers")
        lines.append(f"  - Precision: {precision}")
    if outcome is not None and outcome.fallback:
        lines.append("")
        lines.append(f"[ONNX Runtime] {len(outcome.fallback)} node(s) outside engines:")
        for entry in outcome.fallback:
            lines.append(f"  - {entry['node']} ({entry['op']}): {entry['reason']}")
    return lines
