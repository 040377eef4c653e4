"""The write stage: the report, the output folder and the copies the user asked for.

Every file goes to a staging folder inside OUT first, then is published (:mod:`trtcompile.fsutil`):
moved in under a lock on OUT, all or nothing, the report last (its presence means the folder is
complete). A compile removes only outputs an earlier compile recorded writing and that are
unchanged; never a user's file, never the input model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from trtcompile import ir
from trtcompile.errors import InputError
from trtcompile.flow.options import CompileOptions, parity_inputs
from trtcompile.flow.precision import precision_parity
from trtcompile.frontend import LoadedModel

if TYPE_CHECKING:
    from trtcompile.flow.compilation import Compilation

#: Names of the files a compile writes into its output folder.
OPTIMIZED_ONNX = "optimized.onnx"
LOWERED_ONNX = "lowered.onnx"
ENGINE_PLAN = "model.engine"
REPORT_JSON = "report.json"
PASS_DUMPS = "passes"
OUTPUT_NAMES = (OPTIMIZED_ONNX, LOWERED_ONNX, ENGINE_PLAN, PASS_DUMPS, REPORT_JSON,
                "partitioned.onnx", "segments", "partitioned_ctx.onnx")


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


def check_outputs(output_dir: Path, source: Path | None, options: CompileOptions) -> None:
    """Refuse, before anything is created, output locations that cannot be written or that would
    overwrite the input model or one of the compile's own outputs (OUT and the copies the user
    asked for: ``report_json``, ``report_html``, ``save_engine``)."""
    report_json = Path(options.report_json) if options.report_json else None
    check_output_location(output_dir, source, report_json)
    if report_json is not None:
        check_output_location(report_json.parent, source, None)
        if report_json.is_dir():
            raise InputError(f"--report-json {report_json} is a folder; give a file path")
    save_engine = Path(options.save_engine) if options.save_engine else None
    if save_engine is not None:
        check_output_location(save_engine.parent, source, None)
        if save_engine.is_dir():
            raise InputError(f"--save-engine {save_engine} is a folder; give a file path")
        if source is not None and source.exists() and save_engine.resolve() == source.resolve():
            raise InputError(f"--save-engine {save_engine} would overwrite the input model")
        if not options.engine:
            raise InputError("--save-engine needs the engine: drop --no-engine")
    report_html = Path(options.report_html) if options.report_html else None
    if report_html is not None:
        check_output_location(report_html.parent, source, None)
        if report_html.is_dir():
            raise InputError(f"--report-html {report_html} is a folder; give a file path")
        if source is not None and source.exists() and report_html.resolve() == source.resolve():
            raise InputError(f"--report-html {report_html} would overwrite the input model")
    from trtcompile import fsutil

    targets = {f"--{key.replace('_', '-')}": getattr(options, key) for key in COPY_FLAGS
               if getattr(options, key) is not None}
    fsutil.check_no_collisions(
        targets, [output_dir / name for name in compile_output_names(options)],
        inputs=[source] if source is not None and source.exists() else [],
        may_equal={"--report-json": output_dir / REPORT_JSON})


#: The options that copy an output somewhere the user names (trtexec's ``--saveEngine``, the
#: report as JSON and as a page).
COPY_FLAGS = ("save_engine", "report_json", "report_html")


def compile_output_names(options: CompileOptions) -> list[str]:
    """The names this compile may write into OUT (so no copy the user asks for may take one)."""
    names = [OPTIMIZED_ONNX, LOWERED_ONNX, REPORT_JSON, "partitioned.onnx", "segments",
             "partitioned_ctx.onnx"]
    if options.engine:
        names.append(ENGINE_PLAN)
    if options.dump_after_each:
        names.append(PASS_DUMPS)
    return names


def output_folder(output_dir: Path, source: Path | None):
    """The compile's :class:`~trtcompile.fsutil.OutputFolder` (a context manager): staged inside
    OUT, published atomically under a lock, removing only what an earlier compile recorded
    writing, never the input model."""
    from trtcompile import fsutil

    return fsutil.OutputFolder(output_dir, protected=[source] if source is not None else [],
                               report=REPORT_JSON)


def compile_report(compilation: Compilation, files: dict[str, str]) -> dict[str, Any]:
    """The report (``report.json``) of a compilation's stages so far."""
    from trtcompile import report as report_module

    c, options = compilation, compilation.options
    report = report_module.build_report(
        loaded=c.loaded, pipeline_report=c.pipeline_report, optimized=c.optimized, parity=c.parity,
        parity_options={"atol": options.atol, "rtol": options.rtol,
                        **({"atol_range": options.atol_range} if options.atol_range else {}),
                        "seed": options.seed, "inputs": c.parity_inputs or parity_inputs(options),
                        **precision_parity(options), **_top1_record(c.top1),
                        **({"note": c.tolerance_note} if c.tolerance_note else {})},
        engine=c.engine_status, files=files, seconds=c.seconds, error=c.error,
        shapes=c.plan.to_dict(), engine_parity=c.engine_parity_record().to_dict())
    report["engine_check"] = c.engine_check.to_dict() if c.engine_check is not None else None
    report["partition"] = None
    if c.partition_outcome is not None:
        from trtcompile.flow.partitioning import partition_section

        report["partition"] = partition_section(c.partition_outcome)
    return report


def write_outputs(compilation: Compilation, folder, files: dict[str, str]) -> dict[str, Any]:
    """The write stage: stage the models, the engine and the partition's files into ``folder``'s
    staging folder (next to what ``files`` already lists there: pass dumps), build the report,
    publish everything into OUT (:meth:`trtcompile.fsutil.OutputFolder.publish`: the report last,
    all or nothing), then write the copies asked for outside OUT (``report_json``,
    ``report_html``, ``save_engine``; a device or FIFO is written into, not replaced). Returns the
    report."""
    from trtcompile import backend, fsutil
    from trtcompile import report as report_module

    c, options = compilation, compilation.options
    staging, output_dir = folder.staging, folder.path
    stage_models(staging, c.loaded, c.optimized, files)
    if c.partition_outcome is not None:
        from trtcompile.flow import partitioning

        files.update(partitioning.write_outputs(c.partition_outcome, staging))
    if c.engine is not None:
        backend.save_plan(c.engine, staging / ENGINE_PLAN)
        files["engine"] = ENGINE_PLAN
    files["report"] = REPORT_JSON
    inside = copies_in_output(output_dir, options)
    files.update((key, name) for key, name in inside.items() if name not in files.values())
    report = compile_report(c, files)
    report_bytes = report_module.dumps(report).encode()
    (staging / REPORT_JSON).write_bytes(report_bytes)
    copies = {"report_json": report_bytes,
              "save_engine": c.engine.plan if c.engine is not None else None}
    if options.report_html is not None:
        from trtcompile import html_report

        copies["report_html"] = html_report.render_html(report).encode("utf-8")
    for key, name in inside.items():
        if name != REPORT_JSON:
            (staging / name).write_bytes(copies[key])
    published = folder.publish(list(dict.fromkeys(files.values())))
    for line in published.messages():
        c.log(line)
    c.copies = {}
    for key in COPY_FLAGS:
        path = getattr(options, key)
        if path is None or key in inside or copies.get(key) is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        fsutil.write_user_file(path, copies[key], flag=flag)
        c.copies[flag] = Path(path)
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
#: OUT/report.html``): they are published with the compile's outputs and recorded like them, so a
#: later compile that does not write them removes them (unchanged), as a report of an earlier run
#: would now be wrong. ``--save-engine`` is not one: an engine saved where the user asked is
#: theirs to keep.
COPY_OPTIONS = ("report_html", "report_json")


def copies_in_output(output_dir: Path, options: CompileOptions) -> dict[str, str]:
    """The files the ``COPY_OPTIONS`` write directly into ``output_dir``, by option, as names."""
    copies = {}
    for key in COPY_OPTIONS:
        path = getattr(options, key)
        if path is not None and Path(path).parent.resolve() == output_dir.resolve():
            copies[key] = Path(path).name
    return copies


def _top1_record(top1: dict[str, Any] | None) -> dict[str, Any]:
    """``{"top1_agreement": ...}`` for the parity tolerances record when the check ran."""
    return {"top1_agreement": top1} if top1 is not None else {}

