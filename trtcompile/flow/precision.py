"""The precision policy: which pass writes ``--precision`` into the graph (with the user's own
options of that pass kept), the resources it needs (calibration data), and the tolerances parity
and engine parity use at each precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from trtcompile import verify
from trtcompile.errors import InputError
from trtcompile.flow.options import CompileOptions
from trtcompile.frontend import LoadedModel
from trtcompile.pm import PassRegistry, iter_passes, map_passes, parse_pipeline


def precision_pipeline(options: CompileOptions) -> str:
    """Pipeline text of the pass that writes ``options.precision`` into the graph ("" for fp32)."""
    from trtcompile import calibration

    calibration.parity_tolerances(options.precision)  # InputError for an unknown precision
    precision = options.precision.lower()
    if precision in HALF_DTYPES:
        if options.calib_cache is not None:
            raise InputError(f"--calib-cache applies to --precision int8 only ({precision} "
                             "measures --calib-data afresh)")
        # With data the keep-list is measured on it (precision-fp16{keep=auto}).
        has_data = options.calib_data is not None or options.inputs is not None
        written = ["keep=auto"] if has_data else []
        if precision != "fp16":
            written.append(f"dtype={HALF_DTYPES[precision]}")
        return f"precision-fp16{{{' '.join(written)}}}" if written else "precision-fp16"
    if precision == "int8":
        calibration.check_method(options.calib_method)
        if options.calib_batches < 0:
            raise InputError(f"--calib-batches must be >= 0, got {options.calib_batches}")
        if options.calib_data is None and not (options.calib_cache and Path(options.calib_cache).exists()):
            raise InputError("--precision int8 needs --calib-data (or an existing --calib-cache)")
        return f"quantize-int8{{method={options.calib_method} max-batches={options.calib_batches}}}"
    if options.calib_data is not None or options.calib_cache is not None:
        raise InputError("--calib-data and --calib-cache apply to --precision int8 only")
    return ""


#: ``--precision`` values ``precision-fp16`` writes, and its ``dtype`` option for each.
HALF_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}

#: The flag that sets each option of a precision pass (for conflict messages).
_PRECISION_FLAGS = {"method": "--calib-method", "max_batches": "--calib-batches",
                    "dtype": "--precision"}

#: Options the flow chooses rather than a flag: they fill in a pass that leaves them at their
#: defaults and never contradict one that sets them (``precision-fp16{keep=static}`` with
#: ``--calib-data`` keeps the static rules).
_CHOSEN_BY_FLOW = {"keep"}


def with_precision_pass(pipeline: Sequence, options: CompileOptions,
                        registry: PassRegistry) -> tuple:
    """``pipeline`` with the pass that writes ``options.precision`` into the graph.

    When the pipeline already runs that pass (``quantize-int8{exclude=head}``), the user's pass is
    the one that runs, with its options: the precision flags fill in only options it leaves at
    their defaults, and a flag that contradicts an option it sets is refused (InputError naming
    both). Otherwise the pass is appended after the pipeline.
    """
    text = precision_pipeline(options)
    if not text:
        return tuple(pipeline)
    (wanted,) = parse_pipeline(text, registry)
    own = [p for p in iter_passes(pipeline) if p.name == wanted.name]
    if not own:
        return (*pipeline, wanted)
    defaults = type(wanted)()
    flagged = {f.name: getattr(wanted, f.name) for f in dataclasses.fields(wanted)
               if getattr(wanted, f.name) != getattr(defaults, f.name)}
    for user_pass in own:
        given_dtype = getattr(user_pass, "dtype", None)
        if given_dtype not in (None, getattr(defaults, "dtype", None),
                               getattr(wanted, "dtype", None)):
            # Parity tolerances, the engine check and the report follow --precision: the pass
            # must write the type it names.
            raise InputError(f"--precision {options.precision} contradicts "
                             f"{user_pass.to_text()} in --pipeline (dtype={given_dtype}); give "
                             f"--precision {_precision_of(given_dtype)} or drop dtype")
        for name, value in flagged.items():
            if name in _CHOSEN_BY_FLOW:
                continue
            given = getattr(user_pass, name)
            if given != getattr(defaults, name) and given != value:
                flag = _PRECISION_FLAGS.get(name, name.replace("_", "-"))
                raise InputError(f"{flag} {value} contradicts {user_pass.to_text()} in --pipeline "
                                 f"({name.replace('_', '-')}={given}); give it in one place")

    def fill(element):
        if element.name != wanted.name:
            return element
        unset = {name: value for name, value in flagged.items()
                 if getattr(element, name) == getattr(defaults, name)}
        return dataclasses.replace(element, **unset) if unset else element

    # Through every combinator (fixed-point, engine-guided, a user's): the precision pass may sit
    # in any group, and its options must reach it wherever it is.
    return map_passes(pipeline, fill)


def _precision_of(dtype: str) -> str:
    return next((p for p, d in HALF_DTYPES.items() if d == dtype), dtype)


def precision_resources(loaded: LoadedModel, options: CompileOptions) -> dict[str, Any]:
    """``PassContext.resources`` for the precision pass: validated calibration data (INT8), the
    samples FP16's keep-list is measured on (``--calib-data``, else ``--inputs``) with the parity
    tolerances it must meet; and, below
    FP32, the engine precision for ``attention-head-layout`` and ``grouped-query-attention``
    (which leave attention to TensorRT's fused FP16 kernel then)."""
    from trtcompile import calibration

    precision = options.precision.lower()
    if precision in HALF_DTYPES:
        resources: dict[str, Any] = _attention_layouts(precision)
        samples = _fp16_samples(loaded, options)
        if samples is not None:
            resources["precision-fp16"] = samples
            # The keep-list is measured against the tolerances parity will judge by (the user's
            # --atol/--rtol when given, else the precision's: the options carry them by now).
            resources["parity-tolerances"] = calibration.PrecisionTolerances(
                options.atol, options.rtol, options.atol_range,
                f"atol={options.atol:g} rtol={options.rtol:g}")
        return resources
    if precision != "int8":
        return {}
    data = held_out = None
    if isinstance(options.calib_data, calibration.CalibrationData):  # samples given in memory
        data = options.calib_data
        data.validate(calibration.model_input_specs(loaded.model))
    elif options.calib_data is not None:
        from trtcompile.fsutil.npz import check_array_files

        # Every header is checked before calibration reads (or maps) a byte of the arrays.
        check_array_files(options.calib_data, "calibration data")
        data = calibration.load_calibration_data(options.calib_data, loaded.model)
    if data is not None:
        data, held_out = calibration.holdout_split(data)
    cache = Path(options.calib_cache) if options.calib_cache else None
    return {"quantize-int8": calibration.Calibration(data=data, cache_path=cache,
                                                     progress=options.progress, held_out=held_out),
            **_attention_layouts(precision)}


def _attention_layouts(precision: str) -> dict[str, Any]:
    """The resources of the passes that lay attention out for FP32 engines only."""
    return {name: {"precision": precision}
            for name in ("attention-head-layout", "grouped-query-attention")}


def _fp16_samples(loaded: LoadedModel, options: CompileOptions):
    """The samples ``precision-fp16{keep=auto}`` measures on: ``--calib-data`` (a file or samples
    in memory), else the one batch of ``--inputs``; None without either."""
    from trtcompile import calibration

    if isinstance(options.calib_data, calibration.CalibrationData):
        options.calib_data.validate(calibration.model_input_specs(loaded.model))
        return options.calib_data
    if options.calib_data is not None:
        from trtcompile.fsutil.npz import check_array_files

        check_array_files(options.calib_data, "calibration data")
        return calibration.load_calibration_data(options.calib_data, loaded.model)
    if options.inputs is not None:
        from trtcompile.flow.inputs import compile_inputs

        given = compile_inputs(loaded, options)
        return calibration.CalibrationData(dict(given), source=f"--inputs {options.inputs}")
    return None


def engine_parity_tolerances(options: CompileOptions, user_tolerances: bool) -> tuple[float, float, str]:
    """Tolerances ``(atol, rtol, note)`` of the engine against the optimized model.

    Both run the same graph, so precision is the graph's: FP16 and INT8 graphs use
    :func:`trtcompile.calibration.parity_tolerances` like ONNX parity does. An FP32 graph is not
    held to FP32 bounds: TensorRT runs FP32 convolutions and matrix multiplies in TF32 by default,
    whose 11-bit significand is FP16's, so it is compared with FP16's tolerances. Tolerances the
    user gave apply as given.
    """
    from trtcompile.calibration import parity_tolerances

    if user_tolerances:
        return options.atol, options.rtol, (f"user tolerances atol={options.atol:g} "
                                            f"rtol={options.rtol:g}")
    precision = options.precision.lower()
    if precision == "fp32":
        atol, rtol, _ = parity_tolerances("fp16")
        return atol, rtol, (f"fp32 graph: TensorRT may run convolutions and matrix multiplies in "
                            f"TF32 (11-bit significand, as fp16): atol={atol:g} rtol={rtol:g}")
    return parity_tolerances(precision)


def with_precision_tolerances(options: CompileOptions) -> tuple[CompileOptions,
                                                                tuple[float, float, str]]:
    """The options with the parity tolerances of their precision (unless the user gave some),
    and the engine parity tolerances."""
    user_tolerances = (options.atol, options.rtol) != (verify.DEFAULT_ATOL, verify.DEFAULT_RTOL)
    engine_tolerances = engine_parity_tolerances(options, user_tolerances)
    if options.precision.lower() != "fp32" and not user_tolerances:
        from trtcompile.calibration import precision_tolerances

        fitting = precision_tolerances(options.precision)
        options = dataclasses.replace(options, atol=fitting.atol, rtol=fitting.rtol,
                                      atol_range=fitting.atol_range)
    return options, engine_tolerances


#: ONNX element types whose arithmetic is half precision: a model computing in them is judged at
#: FP16's tolerances, since a rewrite that only reorders its arithmetic moves results by ulps.
HALF_PRECISION_TYPES = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


def half_precision_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """The model's outputs of a half-precision element type, by name -> type name."""
    return {value.name: HALF_PRECISION_TYPES[value.type.tensor_type.elem_type]
            for value in model.graph.output
            if value.type.tensor_type.elem_type in HALF_PRECISION_TYPES}


def with_model_tolerances(options: CompileOptions, model: onnx.ModelProto
                          ) -> tuple[CompileOptions, str | None]:
    """The options with FP16's tolerances when the model itself computes in half precision
    (outputs of type float16 or bfloat16) and neither the user nor ``precision`` chose tolerances;
    and the note the report gives (None when nothing changed). FP32 tolerances would fail such a
    model on a rewrite that only rounds differently (half an ulp of float16 is 2.4e-4 at 1)."""
    user_tolerances = (options.atol, options.rtol) != (verify.DEFAULT_ATOL, verify.DEFAULT_RTOL)
    half = half_precision_outputs(model)
    if not half or user_tolerances or options.precision.lower() != "fp32":
        return options, None
    from trtcompile.calibration import precision_tolerances

    fitting = precision_tolerances("fp16")
    options = dataclasses.replace(options, atol=fitting.atol, rtol=fitting.rtol,
                                  atol_range=fitting.atol_range)
    kinds = ", ".join(sorted(set(half.values())))
    return options, (f"the model computes in {kinds} ({len(half)} of its outputs): "
                     f"{fitting.note}")


def precision_parity(options: CompileOptions) -> dict[str, str]:
    """For FP16/BF16/INT8 builds: the precision and which tolerances were used and why."""
    from trtcompile.calibration import precision_tolerances

    if options.precision.lower() == "fp32":
        return {}
    fitting = precision_tolerances(options.precision)
    note = fitting.note
    if (options.atol, options.rtol, options.atol_range) != (fitting.atol, fitting.rtol,
                                                            fitting.atol_range):
        note = f"{options.precision}: user tolerances atol={options.atol:g} rtol={options.rtol:g}"
    return {"precision": options.precision, "note": note}


