"""The write stage: the report, the output folder and the copies the user asked for.

Every file goes to a staging folder first, then is moved in, so an interrupted or failed run never
leaves a half-written output behind; the report goes last (its presence means the folder is
complete).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
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
    for key, name in copies_in_output(output_dir, options).items():
        if name in OUTPUT_NAMES and name != REPORT_JSON:
            raise InputError(f"--{key.replace('_', '-')} {output_dir / name} would overwrite the "
                             f"compile's own {name}; choose another name")


def make_staging(output_dir: Path) -> Path:
    """A new staging folder next to ``output_dir`` (same file system: moves are renames)."""
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp",
                                     dir=output_dir.parent))
    except OSError as exc:
        raise InputError(f"cannot write to {output_dir.parent} ({exc.strerror or exc}); choose "
                         "another output folder") from None


def compile_report(compilation: Compilation, files: dict[str, str]) -> dict[str, Any]:
    """The report (``report.json``) of a compilation's stages so far."""
    from trtcompile import report as report_module

    c, options = compilation, compilation.options
    report = report_module.build_report(
        loaded=c.loaded, pipeline_report=c.pipeline_report, optimized=c.optimized, parity=c.parity,
        parity_options={"atol": options.atol, "rtol": options.rtol,
                        **({"atol_range": options.atol_range} if options.atol_range else {}),
                        "seed": options.seed, "inputs": parity_inputs(options),
                        **precision_parity(options), **_top1_record(c.top1)},
        engine=c.engine_status, files=files, seconds=c.seconds, error=c.error,
        shapes=c.plan.to_dict(), engine_parity=c.engine_parity_record().to_dict())
    report["partition"] = None
    if c.partition_outcome is not None:
        from trtcompile.flow.partitioning import partition_section

        report["partition"] = partition_section(c.partition_outcome)
    return report


def write_outputs(compilation: Compilation, staging: Path, output_dir: Path,
                  files: dict[str, str]) -> dict[str, Any]:
    """The write stage: stage the models, the engine and the partition's files next to what
    ``files`` already lists in ``staging`` (pass dumps), build the report, move everything into
    ``output_dir`` (the report last: its presence means the folder is complete), then the copies
    asked for (``report_json``, ``report_html``, ``save_engine``). Returns the report."""
    from trtcompile import backend
    from trtcompile import report as report_module

    c, options = compilation, compilation.options
    stage_models(staging, c.loaded, c.optimized, files)
    if c.partition_outcome is not None:
        from trtcompile.flow import partitioning

        files.update(partitioning.write_outputs(c.partition_outcome, staging))
    if c.engine is not None:
        backend.save_plan(c.engine, staging / ENGINE_PLAN)
        files["engine"] = ENGINE_PLAN
    files["report"] = REPORT_JSON
    copies = copies_in_output(output_dir, options)
    published = [name for name in files.values() if name != REPORT_JSON]
    files.update((key, name) for key, name in copies.items() if name not in files.values())
    report = compile_report(c, files)
    report_bytes = report_module.dumps(report).encode()
    (staging / REPORT_JSON).write_bytes(report_bytes)
    _publish(staging, output_dir, published, keep=set(files.values()))
    _publish(staging, output_dir, [REPORT_JSON])
    if options.report_json is not None:
        ir.atomic_write_bytes(options.report_json, report_bytes)
    if options.save_engine is not None and c.engine is not None:
        ir.atomic_write_bytes(options.save_engine, c.engine.plan)
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


def _top1_record(top1: dict[str, Any] | None) -> dict[str, Any]:
    """``{"top1_agreement": ...}`` for the parity tolerances record when the check ran."""
    return {"top1_agreement": top1} if top1 is not None else {}

