"""The compile's options and all their validation, in one place.

:class:`CompileOptions` is everything a compile can be told; every face (the CLI's flags, golden
manifest entries, ``Converter`` arguments, :mod:`trtcompile.testing`) builds one and hands it to
:class:`~trtcompile.flow.Compilation`, whose constructor runs :func:`validate` before anything is
loaded or written. A new option is added here once and every face has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtcompile import checks, verify
from trtcompile.backend.options import BuildOptions
from trtcompile.errors import InputError
from trtcompile.frontend import FrontendOptions, LoadedModel
from trtcompile.shapes import ShapeOptions

#: ``--engine-parity`` values: try and carry on when the engine cannot run, insist, or skip.
ENGINE_PARITY_MODES = ("auto", "require", "off")


@dataclass
class CompileOptions:
    """Everything ``trtcompile compile`` can be told (its flags), with the CLI's defaults."""

    #: Pipeline text (``default`` is the default pipeline; ``none`` runs no pass).
    pipeline: str = "default"
    #: Python files whose passes are registered and usable in ``pipeline``.
    pass_modules: Sequence[str | Path] = ()
    atol: float = verify.DEFAULT_ATOL
    rtol: float = verify.DEFAULT_RTOL
    #: Fraction of each output's range added to ``atol`` (set by ``precision`` unless the user
    #: gives tolerances; see :func:`trtcompile.calibration.precision_tolerances`).
    atol_range: float = 0.0
    #: Seed of the parity inputs and of anything random a pass does.
    seed: int = 0
    #: Inputs the checks run the model on (parity, engine parity, the partition stage; INT8
    #: calibration when no ``calib_data`` is given): an ``.npz`` with one array per model input,
    #: strings as string arrays (``--inputs``). None: generated for every input type (see
    #: :mod:`trtcompile.flow.inputs`).
    inputs: str | Path | None = None
    #: Known range ``(low, high)`` of the model's floating-point inputs: parity draws them
    #: uniformly from it instead of from a standard normal distribution (``--data-range``).
    data_range: tuple[float, float] | None = None
    #: Check numerical parity (input vs optimized, and the TensorFlow reference when there is one).
    parity: bool = True
    #: Build the TensorRT engine.
    engine: bool = True
    #: Run the engine and compare it with the optimized model on ONNX Runtime: ``auto`` (when a
    #: GPU can run it; otherwise say why and carry on), ``require`` (exit 3 when it cannot run) or
    #: ``off``.
    engine_parity: str = "auto"
    #: Build the engine of the model as the passes received it too, and never deliver an
    #: optimized model whose engine has more compute layers (see trtcompile.flow.engine_check).
    engine_check: bool = True
    #: Write the IR after every pass to ``<output>/passes/NNN_<pass>.onnx``.
    dump_after_each: bool = False
    #: Run the onnx checker and ONNX Runtime parity after every pass.
    verify_after_each: bool = False
    frontend: FrontendOptions = field(default_factory=FrontendOptions)
    #: Optimization profiles: explicit, from a file, or by a strategy (see docs/shapes.md).
    shapes: ShapeOptions = field(default_factory=ShapeOptions)
    #: Progress on stderr (lowering, passes, parity, calibration, engine build): True when stderr is
    #: a terminal, ``"always"`` also when it is not, False never (see :mod:`trtcompile.progress`).
    progress: bool | str = True
    #: Also write the report here (besides ``<output>/report.json``).
    report_json: str | Path | None = None
    #: Also write the report as one self-contained HTML page here.
    report_html: str | Path | None = None
    #: Built-in example compiled when no model is given (None: the default example).
    example: str | None = None
    #: Receives one line per stage ("loading ...", "building engine ..."); None: silent.
    log: Callable[[str], None] | None = None
    #: Precision written into the graph: ``fp32`` (as is), ``fp16`` (``precision-fp16``), ``bf16``
    #: (``precision-fp16{dtype=bfloat16}``; refused with exit code 6 where the installed TensorRT
    #: cannot build it), ``int8`` (``quantize-int8``, calibrated on ``calib_data``). The pass is
    #: appended to the pipeline unless the pipeline already runs it, whose options are then kept
    #: (see with_precision_pass).
    precision: str = "fp32"
    #: INT8 calibration samples: .npz (input name -> samples), .npy (single input) or a folder;
    #: or samples in memory (:func:`trtcompile.calibration.calibration_data`).
    calib_data: Any = None
    #: INT8 calibration method: entropy, minmax or percentile.
    calib_method: str = "entropy"
    #: File of computed ranges: reused when it matches the model, written after calibrating.
    calib_cache: str | Path | None = None
    #: Calibrate on at most this many batches (0: all samples).
    calib_batches: int = 0
    #: Partitioning (when TensorRT rejects nodes): segments with fewer compute nodes fall back
    #: (TF-TRT's minimum_segment_size).
    min_segment_size: int = 3
    #: Op types forced to the fallback side (partitions even when TensorRT supports everything).
    exclude_ops: tuple[str, ...] = ()
    #: Dry run of partitioning: the plan and the report, no engines.
    partition_only: bool = False
    #: Limit of TensorRT's builder workspace memory pool in bytes (None: TensorRT's default).
    workspace_bytes: int | None = None
    #: Show TensorRT's whole log (every severity) on stderr while building.
    verbose: bool = False
    #: Also write the engine plan here (trtexec's ``--saveEngine``), besides ``<output>``.
    save_engine: str | Path | None = None
    #: Passes whose rejected candidates the report explains (``--why-not``); each must run in the
    #: pipeline (checked before anything is loaded).
    why_not: tuple[str, ...] = ()
    #: How TensorRT builds every engine of the compile: levels, targets, cache, refit, plugins,
    #: precision constraints (see :class:`~trtcompile.backend.options.BuildOptions`).
    build: BuildOptions = field(default_factory=BuildOptions)


def input_distribution(options: CompileOptions) -> verify.InputDistribution:
    """How parity draws the floating-point inputs of this compile (raises InputError for a bad
    ``data_range``)."""
    if options.data_range is None:
        return verify.DEFAULT_DISTRIBUTION
    try:
        low, high = (float(v) for v in options.data_range)
        return verify.InputDistribution(low, high)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--data-range {options.data_range!r}: {exc}") from None


def parity_inputs(options: CompileOptions) -> dict[str, Any]:
    """What the report says about the parity inputs: distribution, seed, integer handling."""
    return {**input_distribution(options).to_dict(), "seed": options.seed}


def check_numbers(options: CompileOptions) -> None:
    """Refuse numeric options out of range (InputError naming the flag) before any work: a nan or
    infinite tolerance would switch parity off while it reports "passed"."""
    checks.tolerance("--atol", options.atol)
    checks.tolerance("--rtol", options.rtol)
    checks.seed("--seed", options.seed)
    checks.count("--calib-batches", options.calib_batches)
    checks.workspace_bytes("--workspace-size", options.workspace_bytes)
    checks.count("--min-segment-size", options.min_segment_size, minimum=1)
    if options.frontend.opset is not None:
        checks.opset("--opset", options.frontend.opset)


def check_engine_parity_mode(options: CompileOptions) -> None:
    """Refuse an unknown ``--engine-parity`` value, and ``require`` with the engine or parity off."""
    mode = options.engine_parity
    if mode not in ENGINE_PARITY_MODES:
        raise InputError(f"--engine-parity {mode}: expected one of {', '.join(ENGINE_PARITY_MODES)}")
    if mode == "require" and not options.engine:
        raise InputError("--engine-parity require needs the engine: drop --no-engine")
    if mode == "require" and not options.parity:
        raise InputError("--engine-parity require is a parity check: drop --no-parity")


def check_partition_options(options: CompileOptions) -> None:
    """Refuse partitioning values that cannot work, before anything is loaded."""
    for op in options.exclude_ops:
        if not op or not op.replace("_", "").replace(".", "").isalnum():
            raise InputError(f"--exclude-ops {op!r}: expected op types such as TopK,"
                             "NonMaxSuppression")
    if options.partition_only and options.engine_parity == "require":
        raise InputError("--partition-only builds no engine: drop --engine-parity require")


def check_exclude_ops(options: CompileOptions, loaded: LoadedModel) -> None:
    """Refuse ``--exclude-ops`` names that are neither ONNX ops nor ops of the model (a typo
    would otherwise silently exclude nothing)."""
    present = {node.op_type for node in loaded.model.graph.node}
    present |= {node.op_type for f in loaded.model.functions for node in f.node}
    for op in options.exclude_ops:
        if op not in present and not onnx.defs.has(op):
            raise InputError(f"--exclude-ops {op}: not an ONNX op nor an op of the model")


def check_build_options(options: CompileOptions) -> None:
    """Refuse build options with bad values, and (when an engine or the parser is asked) options
    the installed TensorRT does not have: one line naming it, before anything is loaded."""
    if not isinstance(options.build, BuildOptions):
        raise InputError(f"build: expected BuildOptions, got {type(options.build).__name__}")
    options.build.validate()
    if options.build.is_default or not (options.engine or options.partition_only
                                         or options.exclude_ops):
        return
    from trtcompile.backend.build_config import check_supported
    from trtcompile.backend.loader import load_tensorrt

    check_supported(load_tensorrt(), options.build)


def check_precision_backend(options: CompileOptions) -> None:
    """Refuse a precision the installed TensorRT cannot build (UnsupportedPrecision, exit code 6),
    when an engine is asked, before anything is loaded."""
    if not isinstance(options.precision, str) or options.precision.lower() != "bf16" \
            or not options.engine or options.partition_only:
        return
    from trtcompile.backend.build_config import check_precision
    from trtcompile.backend.loader import load_tensorrt

    check_precision(load_tensorrt(), options.precision, options.build)


def validate(options: CompileOptions) -> None:
    """Every check of the options that needs no model: numbers, modes, partitioning, whether the
    installed TensorRT builds the precision (UnsupportedPrecision), the parity input distribution
    (InputError naming the flag). The precision options are checked when the precision pass is
    composed (:func:`trtcompile.flow.precision.with_precision_pass`), the output locations by
    :func:`trtcompile.flow.outputs.check_outputs`, and what needs the model (``--exclude-ops``
    names, BF16's opset) when it is loaded or its pass runs."""
    check_numbers(options)
    check_engine_parity_mode(options)
    check_partition_options(options)
    check_build_options(options)
    check_precision_backend(options)
    input_distribution(options)
