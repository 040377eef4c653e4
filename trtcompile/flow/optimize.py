"""The load and optimize stages: the model in, the pass pipeline run over it by the pass manager
with the stage's instruments (progress, verify-after-each, dump-after-each)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.flow.options import CompileOptions, input_distribution
from trtcompile.flow.parity import onnx_parity_shape_sets
from trtcompile.frontend import LoadedModel
from trtcompile.pm import (
    DumpInstrument,
    Instrument,
    Pass,
    PassContext,
    PassManager,
    PassRecord,
    PassRegistry,
    PipelineReport,
    VerifyInstrument,
    iter_passes,
)
from trtcompile.shapes import ProfilePlan


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


def external_data_locations(model_path: Path) -> list[str]:
    """The external-data locations the ONNX file at ``model_path`` names, each checked as the load
    stage checks it (a relative path inside the model's folder, present, long enough) before any
    of them is read: InputError otherwise. A file that does not parse names none (the load stage
    reports it). For runners that ship a model's files elsewhere (golden's Ray runner)."""
    from trtcompile.errors import InputError
    from trtcompile.frontend import onnx_loader

    try:
        model = onnx_loader.read_model(model_path)
    except InputError:
        return []
    return onnx_loader.check_external_data(model, model_path.resolve().parent, model_path)


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


def optimize(loaded: LoadedModel, pipeline: Sequence, registry: PassRegistry,
             options: CompileOptions, dump_dir: Path | None,
             resources: dict[str, Any] | None = None, rewrite_limit: int | None = None,
             instruments: Sequence[Instrument] = (),
             plan: ProfilePlan | None = None) -> tuple[onnx.ModelProto, PipelineReport]:
    """Run the pipeline on the loaded model; return the optimized model and the manager's report.

    ``rewrite_limit`` grants passes only that many rewrites (:meth:`PassContext.may_rewrite`);
    ``instruments`` run after the stage's own (progress, verify, dump). With
    ``verify_after_each``, every pass is checked at the shapes parity uses (``plan``'s)."""

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


