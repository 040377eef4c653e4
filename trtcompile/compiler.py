"""The compile flow: load -> import to IR -> pass pipeline -> export -> parity -> engine -> outputs.

:func:`compile_model` is what ``trtcompile compile`` runs. Each stage is a function of the previous
stage's result, so the flow reads top to bottom:

1. *validate* the output location and the pipeline (bad input fails here, before anything is
   created);
2. *load* the model with :func:`trtcompile.frontend.load_model` (or build the built-in example);
3. *optimize*: import to the IR, run the :class:`~trtcompile.pass_manager.PassManager` with its
   instruments (progress, dump-after-each, verify-after-each), export;
4. *parity*: the input ONNX model against the optimized one on ONNX Runtime; when the frontend
   lowered a TensorFlow model and kept a reference runner, also TensorFlow against the lowered and
   against the optimized model, all on the same seeded inputs;
5. *engine*: build a TensorRT engine plan from the optimized model (skipped when parity failed: an
   engine of a model that computes something else is of no use);
6. *engine parity*: run the plan on the same seeded inputs as parity (every profile shape set)
   and compare its outputs with the optimized model's on ONNX Runtime. Executing an engine needs a
   supported NVIDIA GPU: where there is none, the stage records "not run" and why, and the compile
   carries on (``engine_parity="auto"``) or fails with exit code 3 (``"require"``);
7. *write*: every file goes to a temporary folder next to the output folder, then is moved in, so
   an interrupted or failed run never leaves a half-written output behind. Files a previous run
   left that this run does not produce (``model.engine`` after ``--no-engine``) are removed so the
   folder always matches its ``report.json``.

Parity failures (on ONNX Runtime or of the engine) and backend failures still write the outputs
and the report (for inspection) and return a :class:`CompileResult` whose ``error`` is set; input
errors and pass failures raise and write nothing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtcompile import checks, ir, verify
from trtcompile import progress as progress_display
from trtcompile.errors import CheckFailed, InputError, TrtcompileError
from trtcompile.frontend import FrontendOptions, LoadedModel
from trtcompile.shapes import ProfilePlan, ShapeOptions, format_shape_set
from trtcompile.pass_manager import (
    DumpInstrument,
    FixedPoint,
    Instrument,
    Pass,
    PassContext,
    PassManager,
    PassRecord,
    PassRegistry,
    PipelineReport,
    VerifyInstrument,
    default_registry,
    iter_passes,
    parse_pipeline,
)

#: Names of the files a compile writes into its output folder.
OPTIMIZED_ONNX = "optimized.onnx"
LOWERED_ONNX = "lowered.onnx"
ENGINE_PLAN = "model.engine"
REPORT_JSON = "report.json"
PASS_DUMPS = "passes"
OUTPUT_NAMES = (OPTIMIZED_ONNX, LOWERED_ONNX, ENGINE_PLAN, PASS_DUMPS, REPORT_JSON,
                "partitioned.onnx", "segments", "partitioned_ctx.onnx")

#: ``--engine-parity`` values: try and carry on when the engine cannot run, insist, or skip.
ENGINE_PARITY_MODES = ("auto", "require", "off")

#: Runner names of the engine parity comparison.
ENGINE_RUNNER = "engine"
ENGINE_REFERENCE = "optimized"


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
    #: Precision written into the graph: ``fp32`` (as is), ``fp16`` (``precision-fp16``), ``int8``
    #: (``quantize-int8``, calibrated on ``calib_data``). The pass is appended to the pipeline
    #: unless the pipeline already runs it, whose options are then kept (see with_precision_pass).
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


@dataclass
class ParityVerdict:
    """All parity comparisons of a compile.

    ``primary`` is the end-to-end comparison: the source model (TensorFlow when a reference runner
    exists, else the input ONNX) against the optimized model.
    """

    comparisons: list[verify.ParityResult]
    primary: verify.ParityResult
    #: Input shape sets compared (a profile's min, opt and max), one entry per set.
    input_shapes: list[dict[str, list[int]]] = field(default_factory=list)

    @classmethod
    def combine(cls, verdicts: Sequence[ParityVerdict]) -> ParityVerdict:
        """One verdict over checks at several input shapes: every comparison is kept (each
        records its shapes); the primary holds, per output, the worst error over all shapes."""
        if len(verdicts) == 1:
            return verdicts[0]
        first = verdicts[0].primary
        primary = verify.ParityResult(
            reference=first.reference, candidate=first.candidate, atol=first.atol, rtol=first.rtol,
            note=f"worst over {len(verdicts)} input shape sets", atol_range=first.atol_range)
        for verdict in verdicts:
            for name, stats in verdict.primary.outputs.items():
                seen = primary.outputs.get(name)
                primary.outputs[name] = stats if seen is None else verify.OutputParity(
                    max(seen.max_abs, stats.max_abs), max(seen.max_rel, stats.max_rel),
                    seen.passed and stats.passed)
            if not verdict.primary.outputs:  # nothing compared at these shapes is a failure
                primary.outputs.setdefault("(no outputs)", verify.OutputParity(
                    float("inf"), float("inf"), False))
        return cls([c for v in verdicts for c in v.comparisons], primary,
                   [shapes for v in verdicts for shapes in v.input_shapes])

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def failures(self) -> list[tuple[verify.ParityResult, str]]:
        """(comparison, output name) of every output that failed, in order."""
        return [(c, name) for c in self.comparisons for name, o in c.outputs.items() if not o.passed]

    def error_message(self, check: str = "parity") -> str:
        """One line naming the failed comparisons and outputs (``check`` names the check)."""
        parts = []
        for comparison in self.comparisons:
            failed = [name for name, o in comparison.outputs.items() if not o.passed]
            if comparison.outputs and not failed:
                continue
            label = f"{comparison.candidate} vs {comparison.reference}"
            if len(self.input_shapes) > 1:  # say at which of the profile shapes it failed
                label += f" at {format_shape_set(comparison.input_shapes)}"
            if not comparison.outputs:
                parts.append(f"{label}: no outputs compared")
                continue
            changed = [comparison.outputs[name].describe(name) for name in failed
                       if comparison.outputs[name].change]
            if changed:  # values that cannot be compared: say what changed
                parts.append(f"{label}: output {'; '.join(changed)}")
                continue
            worst = max(failed, key=lambda name: comparison.outputs[name].max_abs)
            stats = comparison.outputs[worst]
            parts.append(f"{label}: output"
                         f"{'s' if len(failed) > 1 else ''} {', '.join(repr(n) for n in failed)} "
                         f"(max_abs={stats.max_abs:.3g}, max_rel={stats.max_rel:.3g})"
                         + (f" [{comparison.note}]" if comparison.note else ""))
        tolerances = f"atol={self.primary.atol:g}, rtol={self.primary.rtol:g}"
        if self.primary.atol_range:
            tolerances += f", atol_range={self.primary.atol_range:g}"
        return f"{check} failed ({tolerances}): " + "; ".join(parts)


@dataclass
class EngineParity:
    """The engine parity stage: the engine against the optimized model on ONNX Runtime.

    ``status`` is ``passed``, ``failed`` or ``not run`` (``reason`` says why: no engine, the stage
    is off, or the engine could not be executed, e.g. no supported GPU).
    """

    mode: str
    status: str
    reason: str | None = None
    atol: float = verify.DEFAULT_ATOL
    rtol: float = verify.DEFAULT_RTOL
    #: Why these tolerances (precision, TF32, user tolerances).
    note: str = ""
    #: Every comparison, worst per output over the shape sets as primary; None when not run.
    verdict: ParityVerdict | None = None

    @classmethod
    def not_run(cls, mode: str, reason: str, **tolerances: Any) -> EngineParity:
        return cls(mode=mode, status="not run", reason=reason, **tolerances)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def error_message(self) -> str:
        """One line naming the outputs the engine got wrong."""
        assert self.verdict is not None
        return self.verdict.error_message("engine parity")

    def to_dict(self) -> dict[str, Any]:
        """``report.json``'s ``parity.engine``."""
        verdict = self.verdict
        return {
            "mode": self.mode,
            "status": self.status,
            "reason": self.reason,
            "reference": ENGINE_REFERENCE,
            "candidate": ENGINE_RUNNER,
            "atol": self.atol,
            "rtol": self.rtol,
            "note": self.note,
            "outputs": {name: o.to_dict() for name, o in verdict.primary.outputs.items()}
            if verdict else {},
            "comparisons": [c.to_dict() for c in verdict.comparisons] if verdict else [],
            "input_shapes": list(verdict.input_shapes) if verdict else [],
            "failed": list(dict.fromkeys(name for _, name in verdict.failures())) if verdict else [],
        }


@dataclass
class CompileResult:
    """What a compile produced. ``error`` is set when a check or the engine build failed after the
    model was optimized (the outputs and report were still written)."""

    output_dir: Path
    files: dict[str, Path]
    report: dict[str, Any]
    loaded: LoadedModel
    pipeline_report: PipelineReport
    optimized: onnx.ModelProto
    parity: ParityVerdict | None = None
    engine: Any = None  # trtcompile.backend.EngineBuild
    engine_parity: EngineParity | None = None
    error: TrtcompileError | None = None
    #: The partition stage's outcome (trtcompile.partitioning.PartitionOutcome), when it ran.
    partition: Any = None

    @property
    def exit_code(self) -> int:
        """The exit code the command returns for this result (0 when nothing failed)."""
        return self.error.exit_code if self.error else 0

    def check(self) -> CompileResult:
        """Raise ``error`` if there is one (for Python callers that want exceptions)."""
        if self.error is not None:
            raise self.error
        return self

    def why_not(self, pass_name: str) -> list:
        """Every candidate ``pass_name`` considered and left alone, once each, in order: a list of
        :class:`~trtcompile.pass_manager.Rejection` (``nodes``, ``reason``). Raises InputError when
        the pass did not run."""
        if not any(record.name == pass_name for record in self.pipeline_report.records):
            raise InputError(f"pass '{pass_name}' did not run (pipeline: "
                             f"{self.pipeline_report.pipeline or 'no passes'})")
        return self.pipeline_report.rejections(pass_name)


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def build_registry(pass_modules: Sequence[str | Path]) -> PassRegistry:
    """The built-in passes plus the passes of the user's modules."""
    registry = default_registry().copy()
    for module in pass_modules:
        try:
            registry.load_module(module)
        except ValueError as exc:  # a name clash with a built-in pass: the user's to fix
            raise InputError(f"pass module {module}: {exc}") from None
    return registry


def check_output_location(output_dir: Path, source: Path | None,
                          report_json: Path | None) -> None:
    """Refuse output locations that cannot be written or would overwrite the input model."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"output {output_dir} exists and is not a folder")
    ancestor = output_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create output folder {output_dir}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {ancestor} (permission denied); choose another -o folder")
    try:  # access() says yes to root everywhere; /proc, read-only mounts: try for real
        os.rmdir(tempfile.mkdtemp(prefix=".trtcompile-probe.", dir=ancestor))
    except OSError as exc:
        raise InputError(f"cannot write to {ancestor} ({exc.strerror or exc}); choose another "
                         "output folder") from None
    if source is None or not source.exists():
        return
    source_real = source.resolve()
    targets = [output_dir / name for name in OUTPUT_NAMES]
    if report_json is not None:
        targets.append(report_json)
    if output_dir.resolve() == source_real:
        raise InputError(f"output folder {output_dir} is the input model itself; choose another -o")
    for target in targets:
        if target.resolve() == source_real:
            raise InputError(f"writing {target} would overwrite the input model; choose another "
                             "output folder")


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


def load_source(source: str | Path | None, options: CompileOptions) -> LoadedModel:
    """Load the model (or build the built-in example)."""
    from trtcompile import frontend

    if options.progress != options.frontend.progress:  # the frontend shows lowering's progress
        options = dataclasses.replace(
            options, frontend=dataclasses.replace(options.frontend, progress=options.progress))
    if source is None:
        from trtcompile import examples

        return examples.load_example(options.example, options.frontend)
    return frontend.load_model(source, options.frontend)


class ProgressInstrument(Instrument):
    """A progress bar on stderr advancing once per pass run, showing the pass running."""

    def __init__(self, total: int, requested: bool | str = True):
        from tqdm import tqdm

        from trtcompile import progress

        # No bar when stderr is not a terminal (logs, CI), where it is only noise, unless asked.
        self.bar = tqdm(total=total, desc="passes", unit="pass", leave=False, dynamic_ncols=True,
                        disable=progress.tqdm_disable(requested))

    def before_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, index: int) -> None:
        if index > self.bar.total:  # fixed-point groups run more passes than the pipeline lists
            self.bar.total = index
        self.bar.set_postfix_str(pass_.name, refresh=True)

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def precision_pipeline(options: CompileOptions) -> str:
    """Pipeline text of the pass that writes ``options.precision`` into the graph ("" for fp32)."""
    from trtcompile import calibration

    calibration.parity_tolerances(options.precision)  # InputError for an unknown precision
    precision = options.precision.lower()
    if precision == "fp16":
        return "precision-fp16"
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


#: The flag that sets each option of a precision pass (for conflict messages).
_PRECISION_FLAGS = {"method": "--calib-method", "max_batches": "--calib-batches"}


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
        for name, value in flagged.items():
            given = getattr(user_pass, name)
            if given != getattr(defaults, name) and given != value:
                flag = _PRECISION_FLAGS.get(name, name.replace("_", "-"))
                raise InputError(f"{flag} {value} contradicts {user_pass.to_text()} in --pipeline "
                                 f"({name.replace('_', '-')}={given}); give it in one place")

    def fill(element):
        if isinstance(element, FixedPoint):
            return dataclasses.replace(element, elements=tuple(fill(e) for e in element.elements))
        if element.name != wanted.name:
            return element
        unset = {name: value for name, value in flagged.items()
                 if getattr(element, name) == getattr(defaults, name)}
        return dataclasses.replace(element, **unset) if unset else element

    return tuple(fill(element) for element in pipeline)


def precision_resources(loaded: LoadedModel, options: CompileOptions) -> dict[str, Any]:
    """``PassContext.resources`` for the precision pass: validated calibration data (INT8); and,
    below FP32, the engine precision for ``attention-head-layout`` (which leaves attention to
    TensorRT's fused FP16 kernel then)."""
    from trtcompile import calibration

    precision = options.precision.lower()
    if precision == "fp16":
        return {"attention-head-layout": {"precision": precision}}
    if precision != "int8":
        return {}
    data = held_out = None
    if isinstance(options.calib_data, calibration.CalibrationData):  # samples given in memory
        data = options.calib_data
        data.validate(calibration.model_input_specs(loaded.model))
    elif options.calib_data is not None:
        data = calibration.load_calibration_data(options.calib_data, loaded.model)
    if data is not None:
        data, held_out = calibration.holdout_split(data)
    cache = Path(options.calib_cache) if options.calib_cache else None
    return {"quantize-int8": calibration.Calibration(data=data, cache_path=cache,
                                                     progress=options.progress, held_out=held_out),
            "attention-head-layout": {"precision": precision}}


def check_top1_agreement(loaded: LoadedModel, optimized: onnx.ModelProto,
                         held_out: Any, options: CompileOptions) -> dict[str, Any]:
    """Top-1 agreement of the optimized model with the input model on held-out samples.

    For every output shaped ``[batch, classes]`` (classes > 1), the share of samples whose arg-max
    class is the same in both models; the check passes at
    :data:`trtcompile.calibration.MIN_TOP1_AGREEMENT` or more. Models without such an output get
    ``{"checked": False, "reason": ...}``.
    """
    import onnxruntime as ort

    from trtcompile import calibration

    specs = calibration.model_input_specs(loaded.model)
    batch = held_out.batch_size(specs)
    sessions = [ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                for model in (loaded.model, optimized)]
    names = [output.name for output in sessions[0].get_outputs()]
    predictions: dict[str, list[np.ndarray]] = {}
    for feeds in held_out.batches(batch, drop_last=calibration.has_fixed_batch(specs)):
        reference, candidate = (session.run(names, feeds) for session in sessions)
        for name, ref, cand in zip(names, reference, candidate):
            if ref.ndim == 2 and ref.shape[1] > 1:
                predictions.setdefault(name, []).append(ref.argmax(1) == cand.argmax(1))
    if not predictions:
        return {"checked": False, "reason": "no output is shaped [batch, classes]"}
    outputs = {}
    for name, matches in predictions.items():
        agreement = float(np.concatenate(matches).mean())
        outputs[name] = {"agreement": round(agreement, 4), "samples": int(sum(m.size for m in matches)),
                         "passed": agreement >= calibration.MIN_TOP1_AGREEMENT}
    return {"checked": True, "threshold": calibration.MIN_TOP1_AGREEMENT,
            "source": held_out.source, "outputs": outputs,
            "passed": all(o["passed"] for o in outputs.values())}


def optimize(loaded: LoadedModel, pipeline: Sequence, registry: PassRegistry,
             options: CompileOptions, dump_dir: Path | None,
             resources: dict[str, Any] | None = None, rewrite_limit: int | None = None,
             instruments: Sequence[Instrument] = (),
             plan: ProfilePlan | None = None) -> tuple[onnx.ModelProto, PipelineReport]:
    """Run the pipeline on the loaded model; return the optimized model and the manager's report.

    ``rewrite_limit`` grants passes only that many rewrites (:meth:`PassContext.may_rewrite`);
    ``instruments`` run after the stage's own (progress, verify, dump). With
    ``verify_after_each``, every pass is checked at the shapes parity uses (``plan``'s)."""
    from trtcompile.pass_manager import iter_passes

    graph = ir.import_model(loaded.model)
    stage_instruments: list[Instrument] = []
    progress = None
    if options.progress:
        progress = ProgressInstrument(total=sum(1 for _ in iter_passes(pipeline)),
                                      requested=options.progress)
        stage_instruments.append(progress)
    if options.verify_after_each:
        stage_instruments.append(VerifyInstrument(
            atol=options.atol, rtol=options.rtol, seed=options.seed,
            input_shapes=dict(options.frontend.input_shapes) or None,
            distribution=input_distribution(options),
            shape_sets=[shapes for shapes, _ in onnx_parity_shape_sets(plan)]
            if plan is not None else None))
    if dump_dir is not None:
        stage_instruments.append(DumpInstrument(dump_dir))
    ctx = PassContext(model_dir=loaded.model_dir, seed=options.seed, resources=dict(resources or {}),
                      log=options.log or (lambda message: None), rewrite_limit=rewrite_limit)
    manager = PassManager(pipeline, registry=registry, instruments=[*stage_instruments, *instruments],
                          ctx=ctx)
    try:
        report = manager.run(graph)
    finally:
        if progress is not None:
            progress.close()
    return ir.export_model(graph), report


def check_parity(loaded: LoadedModel, optimized: onnx.ModelProto,
                 options: CompileOptions,
                 feeds: dict[str, np.ndarray] | None = None) -> ParityVerdict:
    """Compare the input model, the optimized model and (if any) the reference on one seeded batch
    (or on ``feeds``, one batch of given inputs by input name).

    Without a reference runner: input ONNX vs optimized. With one (TensorFlow): reference vs
    lowered, lowered vs optimized and reference vs optimized, the last being the verdict's primary
    comparison.
    """
    from polygraphy.comparator import IterationResult, RunResults

    shapes = dict(options.frontend.input_shapes) or None
    if feeds is None:
        feeds = verify.feed_data(loaded.model, seed=options.seed, input_shapes=shapes,
                                 distribution=input_distribution(options))
    tolerance = {"atol": options.atol, "rtol": options.rtol, "atol_range": options.atol_range}
    input_name = "lowered" if loaded.lowering is not None else "input"

    onnx_results = RunResults([*verify.run_model(loaded.model, feeds, input_name),
                               *verify.run_model(optimized, feeds, "optimized")])
    input_vs_optimized = verify.compare_run_results(
        onnx_results, reference_name=input_name, candidate_name="optimized", **tolerance)
    input_vs_optimized.input_shapes = {k: list(v.shape) for k, v in feeds.items()}
    if loaded.reference is None:
        return ParityVerdict([input_vs_optimized], input_vs_optimized)

    reference_name = loaded.reference_name or "reference"
    reference_outputs = loaded.reference({k: np.array(v) for k, v in feeds.items()})
    reference_result = (reference_name,
                        [IterationResult(dict(reference_outputs), runner_name=reference_name)])
    comparisons = []
    for runner_name, iterations in onnx_results:
        pair = RunResults([reference_result, (runner_name, iterations)])
        comparison = verify.compare_run_results(
            pair, reference_name=reference_name, candidate_name=runner_name, **tolerance)
        comparison.input_shapes = input_vs_optimized.input_shapes
        missing = set(iterations[0].keys()) - set(reference_outputs)
        if missing:
            comparison.note = f"outputs without a {reference_name} value: {sorted(missing)}"
            for name in missing:
                comparison.outputs[name] = verify.OutputParity(float("inf"), float("inf"), False)
        comparisons.append(comparison)
    reference_vs_lowered, reference_vs_optimized = comparisons
    return ParityVerdict([reference_vs_lowered, input_vs_optimized, reference_vs_optimized],
                         reference_vs_optimized)


def build_engine(optimized: onnx.ModelProto, loaded: LoadedModel, options: CompileOptions,
                 plan: ProfilePlan | None = None):
    """Build the TensorRT engine of the optimized model with ``plan``'s optimization profiles
    (raises BackendError)."""
    from trtcompile import backend

    return backend.build_engine(optimized, model_dir=loaded.model_dir, progress=options.progress,
                                profiles=plan.backend_profiles() if plan is not None else None,
                                workspace_bytes=options.workspace_bytes,
                                echo_log="all" if options.verbose else False)


def engine_judge(loaded: LoadedModel, plan: ProfilePlan | None):
    """The judge ``engine-guided`` uses in a compile: a graph's engine compute layers, built with
    the compile's optimization profiles (raises BackendError when TensorRT cannot build it)."""

    def compute_layers(graph) -> int:
        from trtcompile import backend
        from trtcompile.errors import BackendError

        build = backend.build_engine(ir.export_model(graph.copy()), model_dir=loaded.model_dir,
                                     progress=False,
                                     profiles=plan.backend_profiles() if plan is not None else None)
        if not build.layer_report_available:
            raise BackendError("the builder reported no engine layers, so engines cannot be compared")
        return build.compute_layers

    return compute_layers


def onnx_parity_shape_sets(plan: ProfilePlan) -> list[tuple[dict, bool]]:
    """The input shape sets ONNX Runtime parity runs at, each with whether it was added here.

    Every profile's min, opt and max (``plan.parity_shapes``). The default profile fixes an
    unknown batch to 1 for the engine only; ONNX Runtime runs any size, so parity also runs at
    the last of :data:`verify.DYNAMIC_SIZES` there, where a batch size baked into the graph shows.
    """
    sets = [(dict(shapes), False) for shapes in plan.parity_shapes]
    if plan.source == "default" and sets:
        size = verify.DYNAMIC_SIZES[-1]
        extra = {}
        for name, shape in sets[0][0].items():
            dims = plan.dynamic_inputs.get(name)
            extra[name] = tuple(size if dims is not None and not isinstance(dims[axis], int) else d
                                for axis, d in enumerate(shape))
        if extra != sets[0][0]:
            sets.append((extra, True))
    return sets


def check_parity_at_shapes(loaded: LoadedModel, optimized: onnx.ModelProto,
                           options: CompileOptions, plan: ProfilePlan) -> ParityVerdict:
    """:func:`check_parity` at every input shape set of :func:`onnx_parity_shape_sets` (each
    profile's min, opt and max; a second batch size with the default profile), one seeded batch
    each, combined into one verdict. A size added here that the input model itself does not run
    at is skipped."""
    if not plan.parity_shapes:
        return check_parity(loaded, optimized, options)
    distribution = input_distribution(options)
    verdicts = []
    for shapes, added in onnx_parity_shape_sets(plan):
        feeds = verify.feed_data(loaded.model, seed=options.seed, input_shapes=shapes,
                                 distribution=distribution)
        try:
            verdict = check_parity(loaded, optimized, options, feeds=feeds)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class
            try:
                verdict = _failed_run_verdict(loaded, optimized, options, feeds, shapes, exc)
            except InputError:
                if added:
                    continue  # the model's batch does not take this size after all
                raise
        verdict.input_shapes = [{name: list(shape) for name, shape in shapes.items()}]
        verdicts.append(verdict)
    return ParityVerdict.combine(verdicts)


# Operator domains some runtime here implements: ONNX's own, ONNX Runtime's contrib ops (which the
# TensorRT parser also takes in part) and the compiler's local functions.
_KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft",
                  "com.microsoft.nchwc", "ai.onnx.contrib"}
_ORT_MIN_OPSET = 7  # ONNX Runtime's documented minimum for the ai.onnx domain


def _proto_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _proto_nodes(sub)


def unrunnable_model_reason(model: onnx.ModelProto, error: str = "") -> str | None:
    """Why ONNX Runtime cannot run ``model`` at any shape, if the model itself says so: an ai.onnx
    opset outside what ONNX Runtime and onnx support, or an operator of a domain no runtime here
    implements (neither a model-local function nor a known domain). None when neither holds."""
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    match = re.search(r"support for domain ai\.onnx is till opset (\d+)", error)
    if match:
        newest = min(newest, int(match.group(1)))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not _ORT_MIN_OPSET <= opset <= newest:
        return (f"it uses ai.onnx opset {opset}, outside the opsets ONNX Runtime and onnx support "
                f"({_ORT_MIN_OPSET} to {newest}); convert it to a supported opset "
                f"(e.g. onnx.version_converter.convert_version)")
    local = {(f.domain, f.name) for f in model.functions}
    for node in _proto_nodes(model.graph):
        if node.domain in _KNOWN_DOMAINS or (node.domain, node.op_type) in local:
            continue
        return (f"no runtime implements op {node.op_type} of domain {node.domain} (node "
                f"'{node.name or node.output[0]}'): ONNX Runtime has no kernel for it and TensorRT "
                f"would need a plugin; replace it with standard ONNX ops")
    return None


def _failed_run_verdict(loaded: LoadedModel, optimized: onnx.ModelProto, options: CompileOptions,
                        feeds: dict[str, np.ndarray], shapes: dict, exc: Exception) -> ParityVerdict:
    """A model did not run at a profile's shapes. If the input model itself fails, its dynamic
    dimensions do not really take these sizes (the user's to fix: InputError); if only the
    optimized model fails, a pass fixed a size it must not have (a parity failure)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    at = format_shape_set(shapes)
    try:
        verify.compare_models(loaded.model, loaded.model, data=[feeds])
    except Exception as own:  # noqa: BLE001
        cause = unrunnable_model_reason(loaded.model, str(own))
        if cause is not None:
            raise InputError(f"the input model does not run on ONNX Runtime: {cause}") from None
        raise InputError(f"the input model does not run on ONNX Runtime at {at} ({reason}); its "
                         "dynamic dimensions do not take these sizes: give profile shapes it runs "
                         "at") from None
    failed = verify.ParityResult(reference="lowered" if loaded.lowering is not None else "input",
                                 candidate="optimized", atol=options.atol, rtol=options.rtol,
                                 note=f"the optimized model failed on ONNX Runtime: {reason}")
    failed.input_shapes = {name: list(shape) for name, shape in shapes.items()}
    for value in optimized.graph.output:
        failed.outputs[value.name] = verify.OutputParity(float("inf"), float("inf"), False)
    return ParityVerdict([failed], failed)


def run_engine(plan: bytes, feeds: dict[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
    """Execute the engine plan once with optimization profile ``profile`` (raises BackendError
    when no GPU can run it)."""
    from trtcompile import backend

    return backend.run_engine(plan, feeds, profile=profile)


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


def profile_index(plan: ProfilePlan, shapes: dict[str, Sequence[int]]) -> int:
    """The first optimization profile whose [min, max] range holds ``shapes`` (0 when the engine
    has no profile or none does)."""
    for index, profile in enumerate(plan.profiles):
        if all(name in shapes and len(shapes[name]) == len(low)
               and all(lo <= dim <= hi for dim, lo, hi in zip(shapes[name], low, high))
               for name, (low, _, high) in profile.items()):
            return index
    return 0


def check_engine_parity(plan_bytes: bytes, loaded: LoadedModel, optimized: onnx.ModelProto,
                        options: CompileOptions, plan: ProfilePlan, *, mode: str = "auto",
                        tolerances: tuple[float, float, str] | None = None) -> EngineParity:
    """Run the engine on the seeded inputs parity used (one batch per shape set of ``plan``, each
    with the profile holding it) and compare every output with the optimized model's on ONNX
    Runtime (Polygraphy's comparison). An engine that cannot be executed (no supported GPU, a plan
    the runtime refuses) yields status ``not run`` with the backend's one-line reason."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, IterationResult, RunResults

    from trtcompile.errors import BackendError

    from trtcompile.calibration import precision_tolerances

    atol, rtol, note = tolerances or engine_parity_tolerances(options, user_tolerances=False)
    settings = {"atol": atol, "rtol": rtol, "note": note}
    # FP16/INT8 graphs: the engine's rounding differs from ONNX Runtime's by amounts that grow with
    # the outputs' range, as in ONNX parity; tolerances the user gave apply as given.
    atol_range = 0.0
    if options.precision.lower() != "fp32" and not note.startswith("user tolerances"):
        atol_range = precision_tolerances(options.precision).atol_range
    shape_sets = list(plan.parity_shapes) or [dict(options.frontend.input_shapes) or None]
    session = SessionFromOnnx(optimized.SerializeToString(), providers=["CPUExecutionProvider"])
    expected_outputs = [value.name for value in optimized.graph.output]
    verdicts = []
    for shapes in shape_sets:
        # The same generator, seed and shapes as check_parity_at_shapes: the same inputs.
        feeds = verify.feed_data(loaded.model, seed=options.seed, input_shapes=shapes,
                                 distribution=input_distribution(options))
        at = {name: list(array.shape) for name, array in feeds.items()}
        try:
            engine_outputs = run_engine(plan_bytes, feeds, profile_index(plan, at))
        except (BackendError, InputError) as exc:
            reason = " ".join(str(exc).split())
            if len(shape_sets) > 1:
                reason += f" (at {format_shape_set(at)})"
            return EngineParity.not_run(mode, reason, **settings)
        missing = [name for name in expected_outputs if name not in engine_outputs]
        if len(missing) < len(expected_outputs):
            with verify.quiet_polygraphy():
                reference = Comparator.run([OnnxrtRunner(session, name=ENGINE_REFERENCE)],
                                           data_loader=[feeds])
            engine_result = (ENGINE_RUNNER, [IterationResult(
                {name: np.asarray(value) for name, value in engine_outputs.items()},
                runner_name=ENGINE_RUNNER)])
            comparison = verify.compare_run_results(
                RunResults([*reference, engine_result]), reference_name=ENGINE_REFERENCE,
                candidate_name=ENGINE_RUNNER, atol=atol, rtol=rtol, atol_range=atol_range)
        else:  # nothing in common to compare (Polygraphy refuses that)
            comparison = verify.ParityResult(reference=ENGINE_REFERENCE, candidate=ENGINE_RUNNER,
                                             atol=atol, rtol=rtol)
        comparison.input_shapes = at
        if missing:  # Polygraphy compares common outputs only; an absent one is a failure
            comparison.note = f"outputs the engine did not produce: {missing}"
            for name in missing:
                comparison.outputs[name] = verify.OutputParity(float("inf"), float("inf"), False)
        verdict = ParityVerdict([comparison], comparison)
        verdict.input_shapes = [at]
        verdicts.append(verdict)
    combined = ParityVerdict.combine(verdicts)
    return EngineParity(mode=mode, status="passed" if combined.passed else "failed",
                        verdict=combined, **settings)


def engine_parity_stage(engine: Any, engine_status: dict[str, Any], loaded: LoadedModel,
                        optimized: onnx.ModelProto, options: CompileOptions, plan: ProfilePlan,
                        tolerances: tuple[float, float, str]) -> tuple[EngineParity,
                                                                       TrtcompileError | None]:
    """The engine parity stage as ``options.engine_parity`` asks: its record and the error it
    makes the compile fail with (engine outputs that differ: CheckFailed; an engine that cannot
    run under ``require``: BackendError; otherwise None)."""
    from trtcompile.errors import BackendError

    mode = options.engine_parity
    settings = dict(zip(("atol", "rtol", "note"), tolerances))
    if mode == "off":
        return EngineParity.not_run(mode, "--engine-parity off", **settings), None
    if not options.parity:
        return EngineParity.not_run(mode, "--no-parity", **settings), None
    if engine is None:
        return EngineParity.not_run(mode, f"no engine ({engine_status.get('reason', 'not built')})",
                                    **settings), None
    result = check_engine_parity(engine.plan, loaded, optimized, options, plan, mode=mode,
                                 tolerances=tolerances)
    if result.failed:
        return result, CheckFailed(result.error_message())
    if result.status == "not run" and mode == "require":
        return result, BackendError(f"engine parity is required but did not run: {result.reason}")
    return result, None


# --------------------------------------------------------------------------------------------
# Partitioning
# --------------------------------------------------------------------------------------------


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


def partition_stage(loaded: LoadedModel, optimized: onnx.ModelProto, options: CompileOptions,
                    plan: ProfilePlan, staging: Path, files: dict[str, str],
                    seconds: dict[str, float]) -> tuple[Any, TrtcompileError | None]:
    """Partition the optimized model when TensorRT's parser rejects some of its nodes, when
    ``exclude_ops`` forces ops to fall back, or for ``partition_only``; otherwise (everything
    supported) return None and the compile builds one engine as usual.

    Writes ``partitioned.onnx``, ``segments/`` and ``partitioned_ctx.onnx`` into ``staging``; the
    partitioned model is checked against the input model on ONNX Runtime. Returns the outcome and
    the error the compile fails with (parity of the partitioned model, no engine at all)."""
    from trtcompile import backend, partitioning
    from trtcompile.errors import BackendError

    log = options.log or (lambda message: None)
    asked = bool(options.partition_only or options.exclude_ops)
    if not (options.engine or asked):
        return None, None
    t0 = time.perf_counter()
    try:
        support = backend.query_support(optimized, model_dir=loaded.model_dir)
    except BackendError as exc:
        return (None, exc) if asked else (None, None)  # the engine stage reports it otherwise
    seconds["support"] = time.perf_counter() - t0
    if support.all_supported and not asked:
        return None, None
    if not support.all_supported:
        count = len(support.unsupported)
        trigger = f"TensorRT's parser rejects {count} node{'s' if count != 1 else ''}"
    else:
        trigger = "--partition-only" if options.partition_only else "--exclude-ops"
    dry_run = options.partition_only or not options.engine
    log(f"partitioning: {trigger}" + ("" if dry_run else "; one engine per segment"))
    shapes = dict(options.frontend.input_shapes) or None

    def feeds_at(at):
        return verify.feed_data(loaded.model, seed=options.seed, input_shapes=at or shapes)

    outcome = partitioning.run_partition(
        optimized, support=support, min_segment_size=options.min_segment_size,
        exclude_ops=options.exclude_ops, trigger=trigger, dry_run=dry_run,
        model_dir=loaded.model_dir, seed=options.seed, plan=plan, feeds_at=feeds_at,
        progress=options.progress, log=log)
    seconds.update({f"partition_{k}": v for k, v in outcome.seconds.items()})
    error: TrtcompileError | None = None
    if options.parity:
        log("checking parity of the partitioned model on ONNX Runtime")
        t0 = time.perf_counter()
        outcome.parity = check_parity_at_shapes(loaded, outcome.model, options, plan)
        for comparison in outcome.parity.comparisons:
            if comparison.candidate == "optimized":
                comparison.candidate = "partitioned"
        seconds["partition_parity"] = time.perf_counter() - t0
        if not outcome.parity.passed:
            error = CheckFailed("partitioned model: " + outcome.parity.error_message())
    files.update(partitioning.write_outputs(outcome, staging))
    if error is None and not dry_run:
        built = [s for s in outcome.segments if s.engine is not None]
        if not outcome.segments:
            error = BackendError(
                f"no segment of at least {options.min_segment_size} compute nodes that TensorRT "
                "supports: nothing to build (see partition.fallback in report.json)")
        elif not built:
            error = BackendError(f"no segment engine could be built: "
                                 f"{outcome.segments[0].name}: {outcome.segments[0].why_not_engine}")
    return outcome, error


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------


def compile_model(source: str | Path | None, output_dir: str | Path,
                  options: CompileOptions | None = None) -> CompileResult:
    """Compile ``source`` (None: the built-in example) into ``output_dir``.

    Writes ``optimized.onnx``, ``model.engine`` (unless ``engine`` is off), ``report.json``,
    ``lowered.onnx`` (when a TensorFlow model was lowered) and ``passes/`` (with
    ``dump_after_each``). Raises :class:`InputError` for unusable input (nothing written) and
    :class:`~trtcompile.errors.PassFailed` when a pass breaks. Parity and backend failures
    return a result with ``error`` set after writing everything, so the user can inspect it.
    """

    options = options or CompileOptions()
    log = options.log or (lambda message: None)
    output_dir = Path(output_dir)
    source_path = Path(source) if source is not None else None
    report_json = Path(options.report_json) if options.report_json else None
    report_html = Path(options.report_html) if options.report_html else None
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    # 1. Validate before creating anything.
    check_numbers(options)
    check_output_location(output_dir, source_path, report_json)
    if report_json is not None:
        check_output_location(report_json.parent, source_path, None)
        if report_json.is_dir():
            raise InputError(f"--report-json {report_json} is a folder; give a file path")
    save_engine = Path(options.save_engine) if options.save_engine else None
    if save_engine is not None:
        check_output_location(save_engine.parent, source_path, None)
        if save_engine.is_dir():
            raise InputError(f"--save-engine {save_engine} is a folder; give a file path")
        if source_path is not None and source_path.exists() \
                and save_engine.resolve() == source_path.resolve():
            raise InputError(f"--save-engine {save_engine} would overwrite the input model")
        if not options.engine:
            raise InputError("--save-engine needs the engine: drop --no-engine")
    if report_html is not None:
        check_output_location(report_html.parent, source_path, None)
        if report_html.is_dir():
            raise InputError(f"--report-html {report_html} is a folder; give a file path")
        if source_path is not None and source_path.exists() \
                and report_html.resolve() == source_path.resolve():
            raise InputError(f"--report-html {report_html} would overwrite the input model")
    for key, name in copies_in_output(output_dir, options).items():
        if name in OUTPUT_NAMES and name != REPORT_JSON:
            raise InputError(f"--{key.replace('_', '-')} {output_dir / name} would overwrite the "
                             f"compile's own {name}; choose another name")
    check_engine_parity_mode(options)
    check_partition_options(options)
    input_distribution(options)
    registry = build_registry(options.pass_modules)
    pipeline = parse_pipeline(options.pipeline, registry)
    pipeline = with_precision_pass(pipeline, options, registry)
    options, engine_tolerances = with_precision_tolerances(options)

    # 2. Load.
    if source_path is None:
        log("no model given: compiling the built-in example")
    t0 = time.perf_counter()
    loaded = load_source(source_path, options)
    resources = precision_resources(loaded, options)
    seconds["load"] = time.perf_counter() - t0
    log(loaded.description or f"loaded {source_path}")
    from trtcompile.shapes import resolve_profiles

    plan = resolve_profiles(loaded.model, options.shapes)  # InputError: nothing written
    check_exclude_ops(options, loaded)
    if plan.source != "static":
        log(f"optimization profiles: {plan.description}")
    resources.setdefault("engine-guided", engine_judge(loaded, plan))

    staging = make_staging(output_dir)
    try:
        # 3. Optimize.
        t0 = time.perf_counter()
        log(f"running the pass pipeline ({sum(1 for _ in iter_passes(pipeline))} passes)")
        dump_dir = staging / PASS_DUMPS if options.dump_after_each else None
        optimized, pipeline_report = optimize(loaded, pipeline, registry, options, dump_dir,
                                              resources, plan=plan)
        seconds["optimize"] = time.perf_counter() - t0
        files: dict[str, str] = {}
        stage_models(staging, loaded, optimized, files)
        if dump_dir is not None:
            files["passes"] = PASS_DUMPS

        # 4. Parity.
        error: TrtcompileError | None = None
        parity = None
        top1: dict[str, Any] | None = None
        if options.parity:
            log("checking parity on ONNX Runtime")
            t0 = time.perf_counter()
            with progress_display.stage("checking parity", options.progress):
                parity = check_parity_at_shapes(loaded, optimized, options, plan)
            if not parity.passed:
                error = CheckFailed(parity.error_message())
            calibration_setup = resources.get("quantize-int8")
            held_out = getattr(calibration_setup, "held_out", None)
            if held_out is not None:
                log(f"checking top-1 agreement on {held_out.num_samples} held-out samples")
                top1 = check_top1_agreement(loaded, optimized, held_out, options)
                if top1["checked"] and not top1["passed"] and error is None:
                    worst = min(top1["outputs"].items(), key=lambda item: item[1]["agreement"])
                    error = CheckFailed(
                        f"parity failed: top-1 agreement of output '{worst[0]}' with the input "
                        f"model is {worst[1]['agreement']:.1%} on {worst[1]['samples']} held-out "
                        f"samples, below {top1['threshold']:.0%}")
            seconds["parity"] = time.perf_counter() - t0

        # 4b. Partition, when TensorRT rejects nodes (or when asked to).
        partition = None
        if error is None:
            partition, error = partition_stage(loaded, optimized, options, plan, staging, files,
                                               seconds)

        # 5. Engine.
        engine = None
        engine_status: dict[str, Any]
        if partition is not None:
            engine_status = {"built": False, "reason": "partitioned: one engine per segment, see "
                                                       "partition"}
        elif not options.engine:
            engine_status = {"built": False, "reason": "--no-engine"}
        elif error is not None:
            engine_status = {"built": False, "reason": "parity failed"}
        else:
            from trtcompile.errors import BackendError

            log("building the TensorRT engine")
            t0 = time.perf_counter()
            try:
                engine = build_engine(optimized, loaded, options, plan)
                from trtcompile import backend

                backend.save_plan(engine, staging / ENGINE_PLAN)
                files["engine"] = ENGINE_PLAN
                engine_status = {"built": True, **engine.to_dict(ENGINE_PLAN)}
            except BackendError as exc:
                error = exc
                engine_status = {"built": False, "reason": "build failed", "error": str(exc)}
            seconds["engine"] = time.perf_counter() - t0

        # 6. Engine parity.
        t0 = time.perf_counter()
        if engine is not None and options.parity and options.engine_parity != "off":
            log("running the engine for engine parity")
        engine_parity, engine_parity_error = engine_parity_stage(
            engine, engine_status, loaded, optimized, options, plan, engine_tolerances)
        if engine_parity.status != "not run":
            seconds["engine_parity"] = time.perf_counter() - t0
        error = error or engine_parity_error

        seconds["total"] = time.perf_counter() - started
        # 7. Report, then move into place.
        report = write_outputs(
            staging, output_dir, options, loaded=loaded, pipeline_report=pipeline_report,
            optimized=optimized, parity=parity, engine=engine, engine_status=engine_status,
            engine_parity=engine_parity, plan=plan, files=files, seconds=seconds, error=error,
            top1=top1, partition=partition)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return CompileResult(
        output_dir=output_dir, files={k: output_dir / v for k, v in files.items()}, report=report,
        loaded=loaded, pipeline_report=pipeline_report, optimized=optimized, parity=parity,
        engine=engine, engine_parity=engine_parity, error=error, partition=partition)


def make_staging(output_dir: Path) -> Path:
    """A new staging folder next to ``output_dir`` (same file system: moves are renames)."""
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp",
                                     dir=output_dir.parent))
    except OSError as exc:
        raise InputError(f"cannot write to {output_dir.parent} ({exc.strerror or exc}); choose "
                         "another output folder") from None


def compile_report(options: CompileOptions, *, loaded: LoadedModel,
                   pipeline_report: PipelineReport, optimized: onnx.ModelProto,
                   parity: ParityVerdict | None, engine_status: dict[str, Any],
                   engine_parity: EngineParity, plan: ProfilePlan, files: dict[str, str],
                   seconds: dict[str, float], error: TrtcompileError | None,
                   top1: dict[str, Any] | None = None, partition: Any = None) -> dict[str, Any]:
    """The report (``report.json``) of a compile's stages (``top1``: the held-out top-1 check of
    an INT8 compile; ``partition``: the partition stage's outcome, when it partitioned)."""
    from trtcompile import report as report_module

    report = report_module.build_report(
        loaded=loaded, pipeline_report=pipeline_report, optimized=optimized, parity=parity,
        parity_options={"atol": options.atol, "rtol": options.rtol,
                        **({"atol_range": options.atol_range} if options.atol_range else {}),
                        "seed": options.seed, "inputs": parity_inputs(options),
                        **_precision_parity(options), **_top1_record(top1)},
        engine=engine_status, files=files, seconds=seconds, error=error,
        shapes=plan.to_dict(), engine_parity=engine_parity.to_dict())
    report["partition"] = None
    if partition is not None:
        from trtcompile.partitioning import partition_section

        report["partition"] = partition_section(partition)
    return report


def write_outputs(staging: Path, output_dir: Path, options: CompileOptions, *,
                  loaded: LoadedModel, pipeline_report: PipelineReport,
                  optimized: onnx.ModelProto, parity: ParityVerdict | None, engine: Any,
                  engine_status: dict[str, Any], engine_parity: EngineParity, plan: ProfilePlan,
                  files: dict[str, str], seconds: dict[str, float],
                  error: TrtcompileError | None, top1: dict[str, Any] | None = None,
                  partition: Any = None) -> dict[str, Any]:
    """The write stage: build the report, write it into ``staging`` (which already holds the
    files of ``files``), move everything into ``output_dir`` (the report last: its presence
    means the folder is complete), then the copies asked for (``report_json``, ``report_html``,
    ``save_engine``). Returns the report."""
    from trtcompile import report as report_module

    files["report"] = REPORT_JSON
    copies = copies_in_output(output_dir, options)
    published = [name for name in files.values() if name != REPORT_JSON]
    files.update((key, name) for key, name in copies.items() if name not in files.values())
    report = compile_report(options, loaded=loaded, pipeline_report=pipeline_report,
                            optimized=optimized, parity=parity, engine_status=engine_status,
                            engine_parity=engine_parity, plan=plan, files=files, seconds=seconds,
                            error=error, top1=top1, partition=partition)
    report_bytes = report_module.dumps(report).encode()
    (staging / REPORT_JSON).write_bytes(report_bytes)
    _publish(staging, output_dir, published, keep=set(files.values()))
    _publish(staging, output_dir, [REPORT_JSON])
    if options.report_json is not None:
        ir.atomic_write_bytes(options.report_json, report_bytes)
    if options.save_engine is not None and engine is not None:
        ir.atomic_write_bytes(options.save_engine, engine.plan)
    if options.report_html is not None:
        from trtcompile import html_report

        ir.atomic_write_bytes(options.report_html, html_report.render_html(report).encode("utf-8"))
    return report


def stage_models(staging: Path, loaded: LoadedModel, optimized: onnx.ModelProto,
                 files: dict[str, str]) -> None:
    """Write the optimized model (and the lowered one, for TensorFlow input) into ``staging``."""
    ir.save(optimized, staging / OPTIMIZED_ONNX)
    files["optimized"] = OPTIMIZED_ONNX
    if loaded.lowering is not None:
        ir.save(loaded.model, staging / LOWERED_ONNX)
        files["lowered"] = LOWERED_ONNX


#: The options whose reports may be written into OUT next to the compile's own (``--report-html
#: OUT/report.html``): ``files`` records them under these keys, so a later compile that does not
#: write them removes them, as a report of an earlier run would now be wrong. ``--save-engine``
#: is not one: an engine saved where the user asked is theirs to keep.
COPY_OPTIONS = ("report_html", "report_json")


def copies_in_output(output_dir: Path, options: CompileOptions) -> dict[str, str]:
    """The files the ``COPY_OPTIONS`` write directly into ``output_dir``, by option, as names."""
    copies = {}
    for key in COPY_OPTIONS:
        path = getattr(options, key)
        if path is not None and Path(path).parent.resolve() == output_dir.resolve():
            copies[key] = Path(path).name
    return copies


def earlier_outputs(output_dir: Path) -> set[str]:
    """The names an earlier compile into ``output_dir`` wrote there: the built-in output names and
    those its ``report.json`` lists under ``files`` (plain names in OUT only: a report edited by
    hand cannot point elsewhere). A missing or unreadable report lists nothing."""
    import json

    names = set(OUTPUT_NAMES)
    try:
        listed = json.loads((output_dir / REPORT_JSON).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return names
    if isinstance(listed, dict):
        names.update(name for name in listed.values() if isinstance(name, str) and name
                     and name == Path(name).name and name not in (".", ".."))
    return names


def _publish(staging: Path, output_dir: Path, names: Sequence[str],
             keep: set[str] | None = None) -> None:
    """Move ``names`` from the staging folder into ``output_dir``; remove outputs of earlier runs
    (:func:`earlier_outputs`) that this run does not write (not in ``names`` or ``keep``), once,
    with the first batch. Files of other names are the user's and stay."""
    output_dir.mkdir(exist_ok=True)
    graveyard = staging / ".replaced"
    graveyard.mkdir(exist_ok=True)
    if REPORT_JSON not in names:
        written = set(names) | (keep or set())
        for stale in sorted(earlier_outputs(output_dir) - written - {REPORT_JSON}):
            path = output_dir / stale
            if path.is_file() if stale not in OUTPUT_NAMES else path.exists():
                os.replace(path, graveyard / stale)
    for name in names:
        target = output_dir / name
        if target.is_dir():  # a folder cannot be replaced by os.replace: move the old one aside
            os.replace(target, graveyard / name)
        os.replace(staging / name, target)


__all__ = ["CompileOptions", "CompileResult", "EngineParity", "ParityVerdict", "check_engine_parity",
           "check_parity", "compile_model"]


def _precision_parity(options: CompileOptions) -> dict[str, str]:
    """For FP16/INT8 builds: the precision and which tolerances were used and why."""
    from trtcompile.calibration import precision_tolerances

    if options.precision.lower() == "fp32":
        return {}
    fitting = precision_tolerances(options.precision)
    note = fitting.note
    if (options.atol, options.rtol, options.atol_range) != (fitting.atol, fitting.rtol,
                                                            fitting.atol_range):
        note = f"{options.precision}: user tolerances atol={options.atol:g} rtol={options.rtol:g}"
    return {"precision": options.precision, "note": note}


def _top1_record(top1: dict[str, Any] | None) -> dict[str, Any]:
    """``{"top1_agreement": ...}`` for the parity tolerances record when the check ran."""
    return {"top1_agreement": top1} if top1 is not None else {}
