"""One compile of one model, as named stages every face drives.

::

    compilation = Compilation("model.onnx", CompileOptions(precision="fp16"))
    compilation.load()             # frontend: ONNX as is, TensorFlow lowered; profiles resolved
    compilation.optimize()         # the pass pipeline (with the precision pass)
    compilation.check_parity()     # input vs optimized on ONNX Runtime (and TensorFlow)
    compilation.partition()        # when TensorRT's parser rejects nodes (or ops are excluded)
    compilation.build_engine()     # TensorRT, with the compile's profiles
    compilation.check_engine_parity()
    compilation.write("out/")      # staged, then moved in; report.json last

:meth:`Compilation.run` runs them all in that order (``trtcompile compile``); the golden runner,
``Converter``, ``bisect``, ``--why-not`` and :mod:`trtcompile.testing` call the stages they need,
so every face sees the same registry, pipeline, precision pass, profiles, tolerances, partition
and engine for the same model and options. Construction validates the options (nothing is loaded
or written before), so a bad flag fails the same way in every face.

A stage that finds a problem the user must see but that does not stop the compile (parity failed,
TensorRT could not build) records it in :attr:`Compilation.error`; later stages skip what depends
on it. Unusable input raises :class:`~trtcompile.errors.InputError`, a failing pass
:class:`~trtcompile.errors.PassFailed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import progress as progress_display
from trtcompile.errors import BackendError, CheckFailed, InputError, TrtcompileError
from trtcompile.flow import engine as engine_stage
from trtcompile.flow import engine_check, judging, outputs, parity, precision
from trtcompile.flow.optimize import load_source, optimize
from trtcompile.flow.options import CompileOptions, check_exclude_ops, validate
from trtcompile.flow.partition import partition_stage
from trtcompile.flow.registry import build_registry
from trtcompile.frontend import LoadedModel
from trtcompile.pm import (
    Instrument,
    PassRegistry,
    PipelineReport,
    iter_passes,
    parse_pipeline,
)


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
    parity: parity.ParityVerdict | None = None
    engine: Any = None  # trtcompile.backend.EngineBuild
    engine_parity: parity.EngineParity | None = None
    error: TrtcompileError | None = None
    #: The partition stage's outcome (trtcompile.flow.partitioning.PartitionOutcome), when it ran.
    partition: Any = None
    #: The copies written outside OUT, by flag (``--save-engine``: its path).
    copies: dict[str, Path] = dataclasses.field(default_factory=dict)

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
        :class:`~trtcompile.pm.Rejection` (``nodes``, ``reason``). Raises InputError when
        the pass did not run."""
        if not any(record.name == pass_name for record in self.pipeline_report.records):
            raise InputError(f"pass '{pass_name}' did not run (pipeline: "
                             f"{self.pipeline_report.pipeline or 'no passes'})")
        return self.pipeline_report.rejections(pass_name)


#: What a compilation's source may be: a path (ONNX, SavedModel, .keras/.h5, .pb), None (the
#: built-in example), or a model already in memory.
Source = str | Path | onnx.ModelProto | LoadedModel | None


class Compilation:
    """One compile of ``source`` with ``options``: the stages and what each produced.

    Args:
        source: a model path, None for the built-in example (``options.example``), an
            ``onnx.ModelProto`` or a :class:`~trtcompile.frontend.LoadedModel`.
        options: the compile's options (validated here: InputError before any work).
        registry: the passes the pipeline may name (default: the built-in passes plus
            ``options.pass_modules``).
        calibration_input: INT8 calibration samples given in memory (``Converter``'s
            ``calibration_input_fn``: a function returning batches, batches, a dict of arrays by
            input name, or one array); matched to the model's inputs when it is loaded.
    """

    def __init__(self, source: Source, options: CompileOptions | None = None, *,
                 registry: PassRegistry | None = None, calibration_input: Any = None):
        options = options or CompileOptions()
        validate(options)
        if calibration_input is not None:
            if options.precision.lower() not in ("int8", "fp16", "bf16"):
                raise InputError("calibration samples apply to INT8, FP16 and BF16 only (precision "
                                 f"is {options.precision})")
            # The samples are matched to the model's inputs at load; until then the precision
            # pass is composed as for calibration data given as a file.
            composing = dataclasses.replace(options, calib_data=options.calib_data or "in memory")
        else:
            composing = options
        self.source = source
        self.registry = registry if registry is not None else build_registry(options.pass_modules)
        self.pipeline = precision.with_precision_pass(
            parse_pipeline(options.pipeline, self.registry), composing, self.registry)
        self._check_why_not(options.why_not)
        self.options, self.engine_tolerances = precision.with_precision_tolerances(options)
        self.calibration_input = calibration_input
        #: Why the parity tolerances are not the options' (a half-precision model), or None.
        self.tolerance_note: str | None = None
        self.log: Callable[[str], None] = options.log or (lambda message: None)
        self.started = time.perf_counter()
        #: Seconds per stage, as the report gives them.
        self.seconds: dict[str, float] = {}
        self.loaded: LoadedModel | None = None
        self.plan = None  # trtcompile.shapes.ProfilePlan
        self.resources: dict[str, Any] = {}
        self.optimized: onnx.ModelProto | None = None
        self.pipeline_report: PipelineReport | None = None
        self.parity: parity.ParityVerdict | None = None
        self.top1: dict[str, Any] | None = None
        #: What parity ran on when it was not generated from the options alone (calibration
        #: samples, the calibrated ranges of a cache): the report's ``parity.tolerances.inputs``.
        self.parity_inputs: dict[str, Any] | None = None
        #: The partition stage's outcome (None: not partitioned).
        self.partition_outcome = None  # trtcompile.flow.partitioning.PartitionOutcome
        #: The whole model's engine when the partition stage built it to see whether TensorRT's
        #: builder fails on a node its parser accepts (the engine stage takes it as is).
        self.prebuilt_engine = None
        self.engine = None  # trtcompile.backend.EngineBuild
        self.engine_status: dict[str, Any] = {"built": False, "reason": "not built"}
        self.engine_parity: parity.EngineParity | None = None
        #: The engine check's verdict (None until it ran; see :meth:`check_engine_layers`).
        self.engine_check: engine_check.EngineCheck | None = None
        #: The copies the write stage wrote outside OUT, by flag (``--report-html``: its path).
        self.copies: dict[str, Path] = {}
        #: The first problem a stage found that the user must see (parity, the build); the
        #: command's exit code.
        self.error: TrtcompileError | None = None

    # ----------------------------------------------------------------------------------------
    # Stages
    # ----------------------------------------------------------------------------------------

    def load(self) -> LoadedModel:
        """Load (or lower) the model; match in-memory calibration samples to its inputs; resolve
        the optimization profiles; check what needs the model (``exclude_ops``)."""
        from trtcompile.shapes import resolve_profiles

        if self.source is None:
            self.log("no model given: compiling the built-in example")
        t0 = time.perf_counter()
        self.loaded = self._load_source()
        if self.calibration_input is not None:
            from trtcompile import calibration

            aliases = {b.feed_key: b.onnx_name for b in getattr(self.loaded.reference, "inputs", [])}
            self.options = dataclasses.replace(self.options, calib_data=calibration.calibration_data(
                self.calibration_input, self.loaded.model, aliases=aliases))
        self.options, self.tolerance_note = precision.with_model_tolerances(self.options,
                                                                            self.loaded.model)
        self.resources = precision.precision_resources(self.loaded, self.options)
        self.seconds["load"] = time.perf_counter() - t0
        self.log(self.loaded.description or f"loaded {self.source}")
        self.plan = resolve_profiles(self.loaded.model, self.options.shapes)
        if self.options.parity or self.options.verify_after_each:
            parity.check_input_sizes(self.loaded.model, self.plan)
        check_exclude_ops(self.options, self.loaded)
        if self.plan.source != "static":
            self.log(f"optimization profiles: {self.plan.description}")
        self.resources.setdefault("engine-guided",
                                  engine_stage.engine_judge(self.loaded, self.plan, self.options))
        return self.loaded

    def set_profiles(self, shape_sets: Sequence[Mapping[str, Sequence[int]]]) -> None:
        """Optimization profiles covering ``shape_sets`` (TF-TRT's build: one range over the
        shapes the batches have), replacing the ones resolved at load."""
        from trtcompile.shapes import ShapeOptions, resolve_profiles

        self._require("set_profiles", self.loaded)
        self.options = dataclasses.replace(self.options, shapes=ShapeOptions(
            representative_shapes=[dict(s) for s in shape_sets], strategy="range"))
        self.plan = resolve_profiles(self.loaded.model, self.options.shapes)

    def optimize(self, *, dump_dir: Path | None = None, rewrite_limit: int | None = None,
                 instruments: Sequence[Instrument] = ()) -> tuple[onnx.ModelProto, PipelineReport]:
        """Run the pipeline over the loaded model (``dump_dir``: the IR after every pass;
        ``rewrite_limit``: grant passes only that many rewrites, as bisect does)."""
        self._require("optimize", self.loaded)
        count = sum(1 for _ in iter_passes(self.pipeline))
        self.log(f"running the pass pipeline ({count} passes)")
        t0 = time.perf_counter()
        self.optimized, self.pipeline_report = optimize(
            self.loaded, self.pipeline, self.registry, self.options, dump_dir, self.resources,
            rewrite_limit=rewrite_limit, instruments=instruments, plan=self.plan)
        self.seconds["optimize"] = time.perf_counter() - t0
        return self.optimized, self.pipeline_report

    def check_parity(self, feeds: Mapping[str, np.ndarray] | None = None) -> parity.ParityVerdict:
        """Parity of the optimized model: on ``feeds`` (one batch of given inputs) or at every
        shape set of the profiles on seeded inputs; then, for INT8 with held-out calibration
        samples, top-1 agreement. A failure becomes :attr:`error` (CheckFailed)."""
        self._require("check_parity", self.optimized)
        self.log("checking parity on ONNX Runtime")
        t0 = time.perf_counter()
        with progress_display.stage("checking parity", self.options.progress):
            self.parity = self.parity_of(self.optimized, feeds)
        if not self.parity.passed:
            self._fail(CheckFailed(self.parity.error_message()))
        held_out = getattr(self.resources.get("quantize-int8"), "held_out", None)
        if held_out is not None:
            self.log(f"checking top-1 agreement on {held_out.num_samples} held-out samples")
            self.top1 = parity.check_top1_agreement(self.loaded, self.optimized, held_out,
                                                    self.options)
            if self.top1["checked"] and not self.top1["passed"]:
                worst = min(self.top1["outputs"].items(), key=lambda item: item[1]["agreement"])
                self._fail(CheckFailed(
                    f"parity failed: top-1 agreement of output '{worst[0]}' with the input model "
                    f"is {worst[1]['agreement']:.1%} on {worst[1]['samples']} held-out samples, "
                    f"below {self.top1['threshold']:.0%}"))
        self.seconds["parity"] = self.seconds.get("parity", 0.0) + time.perf_counter() - t0
        return self.parity

    def partition(self):
        """Partition the optimized model when TensorRT's parser rejects nodes, or when asked
        (``exclude_ops``, ``partition_only``): one engine per segment, the rest on ONNX Runtime.
        Skipped after a failure. Returns the outcome, or None when the model is not partitioned."""
        self._require("partition", self.optimized)
        if self.error is not None:
            return None
        built: dict[str, Any] = {}
        self.partition_outcome, error = partition_stage(
            self.loaded, self.optimized, self.options, self.plan, self.seconds, built=built,
            judge=self.parity_judge())
        self.prebuilt_engine = built.get("engine")
        self._fail(error)
        return self.partition_outcome

    def build_engine(self):
        """Build the TensorRT engine of the optimized model (not when partitioned, off, or after
        a failure; the status says which). A build failure becomes :attr:`error`."""
        self._require("build_engine", self.optimized)
        self.engine = None
        if self.partition_outcome is not None:
            self.engine_status = {"built": False,
                                  "reason": "partitioned: one engine per segment, see partition"}
        elif not self.options.engine:
            self.engine_status = {"built": False, "reason": "--no-engine"}
        elif self.error is not None:
            self.engine_status = {"built": False, "reason": "parity failed"
                                  if isinstance(self.error, CheckFailed) else "an earlier stage failed"}
        else:
            t0 = time.perf_counter()
            try:
                if self.prebuilt_engine is not None:
                    self.engine = self.prebuilt_engine
                else:
                    self.log("building the TensorRT engine")
                    self.engine = self.build(self.optimized)
                self.engine_status = engine_stage.engine_record(self.engine, self.optimized,
                                                                outputs.ENGINE_PLAN)
            except BackendError as exc:
                self._fail(exc)
                self.engine_status = {"built": False, "reason": "build failed", "error": str(exc)}
            self.seconds.setdefault("engine", time.perf_counter() - t0)
        return self.engine

    def check_engine_layers(self) -> engine_check.EngineCheck:
        """The engine check (:mod:`trtcompile.flow.engine_check`): build the engine of the model
        as the passes received it; when the optimized engine has more compute layers, deliver
        the pipeline judged group by group by engine (or the baseline), and check its parity."""
        if self.engine is None or not self.options.engine_check:
            reason = ("--no-engine-check" if self.engine is not None else
                      f"no engine ({self.engine_status.get('reason', 'not built')})")
            self.engine_check = engine_check.EngineCheck(status="not run", reason=reason)
            return self.engine_check
        t0 = time.perf_counter()

        def optimize_with(pipeline):
            return optimize(self.loaded, pipeline, self.registry,
                            dataclasses.replace(self.options, progress=False), None,
                            self.resources, plan=self.plan)

        delivered = self.optimized
        self.engine_check = engine_check.run_check(self, optimize_with, self.log)
        if self.optimized is not delivered:
            self.engine_status = engine_stage.engine_record(self.engine, self.optimized,
                                                            outputs.ENGINE_PLAN)
            if self.options.parity:
                self.check_parity()
        self.seconds["engine_check"] = time.perf_counter() - t0
        return self.engine_check

    def check_engine_parity(self) -> parity.EngineParity:
        """Run the engine and compare it with the optimized model on ONNX Runtime, as
        ``engine_parity`` asks (where no GPU can run it: "not run" and why)."""
        t0 = time.perf_counter()
        if self.engine is not None and self.options.parity and self.options.engine_parity != "off":
            self.log("running the engine for engine parity")
        self.engine_parity, error = parity.engine_parity_stage(
            self.engine, self.engine_status, self.loaded, self.optimized, self.options, self.plan,
            self.engine_tolerances)
        if self.engine_parity.status != "not run":
            self.seconds["engine_parity"] = time.perf_counter() - t0
        self._fail(error)
        return self.engine_parity

    def report(self, files: dict[str, str] | None = None) -> dict[str, Any]:
        """The report of the stages run so far (``report.json``'s content)."""
        self._require("report", self.optimized)
        self.seconds["total"] = time.perf_counter() - self.started
        return outputs.compile_report(self, dict(files or {}))

    def write(self, output_dir: str | Path, folder=None) -> CompileResult:
        """Write the outputs into ``output_dir``: staged, then published, the report last
        (``folder``: the :func:`~trtcompile.flow.outputs.output_folder` a run already opened)."""
        self._require("write", self.optimized)
        output_dir = Path(output_dir)
        with contextlib.ExitStack() as stack:
            if folder is None:
                outputs.check_outputs(output_dir, self._source_path(), self.options)
                folder = stack.enter_context(outputs.output_folder(output_dir,
                                                                   self._source_path()))
            files: dict[str, str] = {}
            if (folder.staging / outputs.PASS_DUMPS).exists():
                files["passes"] = outputs.PASS_DUMPS
            self.seconds["total"] = time.perf_counter() - self.started
            report = outputs.write_outputs(self, folder, files)
        return CompileResult(
            output_dir=output_dir, files={k: output_dir / v for k, v in files.items()},
            report=report, loaded=self.loaded, pipeline_report=self.pipeline_report,
            optimized=self.optimized, parity=self.parity, engine=self.engine,
            engine_parity=self.engine_parity, error=self.error, partition=self.partition_outcome,
            copies=dict(self.copies))

    def run(self, output_dir: str | Path) -> CompileResult:
        """Every stage in order, then the write stage (``trtcompile compile``). The output
        locations are checked before anything is loaded; OUT is created only once the model
        loaded, and removed again if the compile writes nothing."""
        output_dir = Path(output_dir)
        outputs.check_outputs(output_dir, self._source_path(), self.options)
        self.load()
        with outputs.output_folder(output_dir, self._source_path()) as folder:
            dump_dir = folder.staging / outputs.PASS_DUMPS if self.options.dump_after_each else None
            self.optimize(dump_dir=dump_dir)
            if self.options.parity:
                self.check_parity()
            self.partition()
            self.build_engine()
            self.check_engine_layers()
            self.check_engine_parity()
            return self.write(output_dir, folder)

    # ----------------------------------------------------------------------------------------
    # Judgements of other models (bisect, engine-guided): the compile's checks, no state
    # ----------------------------------------------------------------------------------------

    def parity_of(self, model: onnx.ModelProto,
                  feeds: Mapping[str, np.ndarray] | None = None) -> parity.ParityVerdict:
        """Parity of ``model`` against the loaded model, as :meth:`check_parity` judges the
        optimized one (on ``feeds``, else at every profile shape set)."""
        self._require("parity_of", self.loaded)
        if feeds is not None:
            return parity.check_parity(self.loaded, model, self.options, feeds=dict(feeds))
        return parity.check_parity_at_shapes(self.loaded, model, self.options, self.plan,
                                             **self.parity_judge())

    def parity_judge(self) -> dict[str, Any]:
        """What parity judges a reduced-precision compile on (:mod:`trtcompile.flow.judging`):
        ``samples`` (held-out calibration samples, else all of them) and, without samples,
        ``ranges`` (the calibrated range of each input from a calibration cache; not when the
        user gave ``data_range``). Also sets :attr:`parity_inputs` for the report."""
        samples = judging.parity_samples(self.resources, self.options.precision.lower())
        ranges = None
        if samples is not None:
            self.parity_inputs = {**samples.to_dict(), "floating_point": samples.describe(),
                                  "integer": "from the samples", "seed": self.options.seed}
        elif self.options.data_range is None and self.options.inputs is None:
            amax = judging.cached_input_ranges(self.loaded.model, self.resources)
            ranges = {name: (-value, value) for name, value in amax.items()} or None
            if ranges:
                spans = ", ".join(f"{name} [{low:g}, {high:g}]" for name, (low, high) in ranges.items())
                self.parity_inputs = {
                    "kind": "calibrated ranges",
                    "floating_point": f"uniform within each input's calibrated range ({spans}, "
                                      f"from the calibration cache)",
                    "integer": "Polygraphy default (0 or 1)", "seed": self.options.seed,
                    "ranges": {name: [low, high] for name, (low, high) in ranges.items()}}
        return {"samples": samples, "ranges": ranges}

    def build(self, model: onnx.ModelProto, *, progress: bool | None = None):
        """A TensorRT engine of ``model`` built as the compile builds its engine (raises
        BackendError)."""
        self._require("build", self.loaded)
        options = self.options if progress is None else dataclasses.replace(self.options,
                                                                              progress=progress)
        return engine_stage.build_engine(model, self.loaded, options, self.plan)

    # ----------------------------------------------------------------------------------------

    def engine_parity_record(self) -> parity.EngineParity:
        """The engine parity record for the report (not run yet: why)."""
        if self.engine_parity is not None:
            return self.engine_parity
        reason = self.engine_status.get("reason", "not built")
        return parity.EngineParity.not_run(self.options.engine_parity, f"no engine ({reason})")

    def _check_why_not(self, names: Sequence[str]) -> None:
        running = {p.name for p in iter_passes(self.pipeline)}
        for name in names:
            if name not in self.registry:
                raise InputError(f"--why-not {name}: no such pass (passes: "
                                 f"{', '.join(sorted(self.registry.names()))})")
            if name not in running:
                raise InputError(f"--why-not {name}: the pass does not run in this pipeline "
                                 f"({', '.join(sorted(running)) or 'no pass'}); add it with "
                                 "--pipeline")

    def _load_source(self) -> LoadedModel:
        if isinstance(self.source, LoadedModel):
            return self.source
        if isinstance(self.source, onnx.ModelProto):
            return LoadedModel(model=self.source, source_path=None, kind="onnx",
                               description=f"ONNX model in memory ({len(self.source.graph.node)} "
                                           "nodes)")
        return load_source(self.source, self.options)

    def _source_path(self) -> Path | None:
        if isinstance(self.source, (str, Path)):
            return Path(self.source)
        if isinstance(self.source, LoadedModel):
            return self.source.source_path
        return None

    def _fail(self, error: TrtcompileError | None) -> None:
        if error is not None and self.error is None:
            self.error = error

    @staticmethod
    def _require(stage: str, value: Any) -> None:
        if value is None:
            order = "load -> optimize -> check_parity -> partition -> build_engine -> write"
            raise InputError(f"Compilation.{stage}() needs the stages before it ({order})")


def compile_model(source: Source, output_dir: str | Path,
                  options: CompileOptions | None = None) -> CompileResult:
    """Compile ``source`` (None: the built-in example) into ``output_dir``: every stage of
    :class:`Compilation`, then the write stage.

    Writes ``optimized.onnx``, ``model.engine`` (unless ``engine`` is off), ``report.json``,
    ``lowered.onnx`` (when a TensorFlow model was lowered) and ``passes/`` (with
    ``dump_after_each``). Raises :class:`InputError` for unusable input (nothing written) and
    :class:`~trtcompile.errors.PassFailed` when a pass breaks. Parity and backend failures
    return a result with ``error`` set after writing everything, so the user can inspect it.
    """
    return Compilation(source, options).run(output_dir)
