"""The commands' handlers: each turns parsed flags into the flow's options and drives it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trtcompile import checks
from trtcompile.cli.pass_listing import passes_markdown, passes_text
from trtcompile.errors import InputError

# --------------------------------------------------------------------------------------------
# Flag values
# --------------------------------------------------------------------------------------------


def parse_input_shapes(values: Sequence[str], flag: str = "--input-shape") -> dict[str, list[int]]:
    """``--input-shape``/``--shapes`` values (``name:1x224x224x3`` or ``name:[1,224,224,3]``,
    repeatable or comma-separated) to a dict.

    The name is everything before the last colon, so TensorFlow names (``input_1:0``) work.
    """
    from trtcompile.shapes import parse_shape_spec

    shapes: dict[str, list[int]] = {}
    for value in values:
        if not value.strip():
            continue
        for name, shape in parse_shape_spec(value, flag).items():
            if name in shapes:
                raise InputError(f"{flag} gives '{name}' twice")
            shapes[name] = list(shape)
    return shapes


def parse_memory_pool(text: str) -> int:
    """trtexec's ``--memPoolSize workspace:1024M`` (MiB without a suffix) to bytes; only the
    workspace pool is a builder option here."""
    pool, sep, size = text.rpartition(":")
    if sep and pool.strip().lower() != "workspace":
        raise InputError(f"--memPoolSize {text}: only the workspace pool can be limited "
                         "(workspace:SIZE)")
    return checks.parse_size("--memPoolSize", size, default_unit=2**20)


def parse_names(values: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated, repeatable name lists (``--outputs a,b --outputs c``)."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


# --------------------------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------------------------


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")  # one write: an interrupt cannot split the line
    sys.stderr.flush()


def shape_options(args: argparse.Namespace):
    """The :class:`~trtcompile.shapes.ShapeOptions` of the dynamic-shape flags (syntax checked
    here; the fit to the model when it is loaded)."""
    from trtcompile import shapes

    representative = [s for value in args.representative_shapes
                      for s in shapes.parse_representative_shapes(value)]
    return shapes.ShapeOptions(
        min_shapes=[shapes.parse_shape_spec(v, "--min-shapes") for v in args.min_shapes],
        opt_shapes=[shapes.parse_shape_spec(v, "--opt-shapes") for v in args.opt_shapes],
        max_shapes=[shapes.parse_shape_spec(v, "--max-shapes") for v in args.max_shapes],
        profiles_file=args.profiles, strategy=args.profile_strategy,
        representative_shapes=representative)


def compile_options(args: argparse.Namespace):
    """The :class:`~trtcompile.flow.CompileOptions` the flags describe."""
    from trtcompile.cli.plan_commands import build_options
    from trtcompile.flow import CompileOptions
    from trtcompile.frontend.model import FrontendOptions

    data_range = None
    if args.data_range is not None:
        from trtcompile import verify

        distribution = verify.InputDistribution.parse(args.data_range)
        data_range = (distribution.low, distribution.high)
    frontend = FrontendOptions(
        signature=args.signature,
        input_shapes=parse_input_shapes(args.input_shape, "--input-shape/--shapes"),
        inputs_as_nchw=parse_names(args.inputs_as_nchw),
        opset=args.opset,
        outputs=parse_names(args.outputs),
        lowering=args.lowering,
    )
    return CompileOptions(
        pipeline=(f"engine-guided({args.pipeline})" if getattr(args, "tune_with_engine", False)
                  else args.pipeline), pass_modules=tuple(args.pass_module), atol=args.atol,
        rtol=args.rtol, seed=args.seed, data_range=data_range, inputs=args.inputs,
        parity=not args.no_parity,
        engine=not args.no_engine, engine_check=not getattr(args, "no_engine_check", False),
        engine_parity=args.engine_parity,
        dump_after_each=args.dump_after_each, verify_after_each=args.verify_after_each,
        frontend=frontend, progress=progress_request(args),
        shapes=shape_options(args),
        report_json=args.report_json, example=args.example,
        log=None if args.quiet else _stderr, report_html=args.report_html,
        precision=args.precision, calib_method=args.calib_method,
        # Given inputs are calibration samples too when none are given apart.
        calib_data=args.calib_data or (args.inputs if args.precision == "int8" else None),
        calib_cache=args.calib_cache, calib_batches=args.calib_batches,
        **partition_options(args),
        workspace_bytes=args.workspace_bytes, verbose=args.verbose, save_engine=args.save_engine,
        why_not=parse_names(args.why_not), build=build_options(args),
    )


def progress_request(args: argparse.Namespace) -> bool | str:
    """``progress`` of the options: off under -q/--no-progress, ``"always"`` with --progress, else
    on terminals only (see :mod:`trtcompile.progress`)."""
    from trtcompile.progress import ALWAYS

    if args.quiet or args.no_progress:
        return False
    return ALWAYS if getattr(args, "progress", False) else True


def model_argument(args: argparse.Namespace) -> str | None:
    """MODEL, given as the positional argument or as trtexec's --onnx (not both)."""
    if args.model is not None and args.onnx is not None and args.model != args.onnx:
        raise InputError(f"two models given: {args.model} and --onnx {args.onnx}; give one")
    return args.model if args.model is not None else args.onnx


def quiet_libraries() -> None:
    """Under -q, only errors: Polygraphy's own log lines (it prints to stdout) and ONNX Runtime's
    warnings (its default logger writes them to stderr when a session loads a model, e.g.
    "Removing initializer 'x'. It is not used by any node") are turned off for the rest of the
    run. ONNX Runtime's default logger is the one every session without its own
    ``log_severity_level`` uses, Polygraphy's included."""
    from polygraphy.logger import G_LOGGER

    from trtcompile import ir

    G_LOGGER.module_severity = G_LOGGER.ERROR
    ir.set_onnxruntime_severity(ir.ORT_ERROR_SEVERITY)


def partition_options(args: argparse.Namespace) -> dict:
    """The partitioning fields of CompileOptions the flags give (values checked by the compiler)."""
    return {"min_segment_size": args.min_segment_size,
            "exclude_ops": parse_names(args.exclude_ops),
            "partition_only": args.partition_only}


def run_compile(args: argparse.Namespace) -> int:
    """``trtcompile compile``: compile, print the report, return the exit code."""
    from trtcompile import report
    from trtcompile.flow import Compilation

    model = model_argument(args)
    options = compile_options(args)
    compilation = Compilation(model, options)  # every flag is checked here, before any work
    if args.quiet:
        quiet_libraries()
    result = compilation.run(args.output)
    if not args.quiet:
        sys.stdout.write(report.render(result.report, str(args.output),
                                       {flag: str(path) for flag, path in result.copies.items()}))
        sys.stdout.flush()
    if options.why_not:
        ops = {node.name: node.op_type for node in result.loaded.model.graph.node}
        for name in options.why_not:
            sys.stdout.write("\n" + "\n".join(report.format_why_not(result.report, name, ops)) + "\n")
        sys.stdout.flush()
    if result.error is not None:
        _stderr(f"trtcompile: error: {result.error}; outputs and report.json written to "
                f"{args.output} for inspection")
    return result.exit_code


# --------------------------------------------------------------------------------------------
# golden
# --------------------------------------------------------------------------------------------


def golden_workers(value: str) -> int:
    """``--workers`` value: a positive count, or ``auto`` (0: one per core, capped by memory)."""
    if value == "auto":
        return 0
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got '{value}'") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got '{value}'")
    return workers


def run_golden(args: argparse.Namespace) -> int:
    """``trtcompile golden``: run a manifest, print one row per model, return the exit code.

    Ctrl-C or SIGTERM stops the run like a compile (:mod:`trtcompile.interrupts`): its workers are
    ended, nothing is written, and the command exits 130."""
    from trtcompile import golden, ir

    if args.ray is not None:  # before any work: an address Ray cannot use is a flag error
        from trtcompile.golden import scheduling as parallel

        parallel.check_ray_address(args.ray)
    manifest = golden.load_manifest(args.manifest, select=args.k)
    entries = manifest.select(args.k)
    if args.quiet:
        quiet_libraries()
    if args.ray is not None:
        parallel.import_ray()  # before any work: say how to install it
    elif any(entry.target_gpu for entry in entries) and not args.quiet:
        _stderr("trtcompile: note: target_gpu is honoured by --ray runs only; engines are built "
                "on this machine")
    junit = None
    if args.junit:
        from pathlib import Path

        from trtcompile.flow.outputs import check_output_location

        junit = Path(args.junit)
        if junit.is_dir():
            raise InputError(f"--junit {junit} is a folder; give a file path")
        check_output_location(junit.parent, None, None)
    outcomes = golden.run_manifest(entries, progress=not (args.no_progress or args.quiet),
                                   workers=args.workers, ray=args.ray,
                                   ray_timeout=args.ray_timeout)

    if args.update:
        changes = golden.update_manifest(manifest, outcomes)
        if not args.quiet:
            if changes:
                _stderr(f"updated {manifest.path} ({len(changes)} value{'s' if len(changes) != 1 else ''}"
                        "; review the diff):")
                for change in changes:
                    _stderr(f"  {change}")
            else:
                _stderr(f"{manifest.path}: expected counts already up to date")
        # Judge against what the manifest now says (parity and errors still count).
        updated = {entry.name: entry
                   for entry in golden.load_manifest(manifest.path, select=args.k).entries}
        for outcome in outcomes:
            outcome.entry = updated[outcome.entry.name]
            outcome.mismatches = golden.compare(outcome.entry.expect, outcome)

    if not args.quiet:
        lines = golden.format_table(outcomes)
        failed = [o for o in outcomes if not o.passed]
        if failed:
            lines.append("")
            for outcome in failed:
                lines += outcome.explain().splitlines()
        lines += ["", golden.summary_line(outcomes)]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    if junit is not None:
        ir.atomic_write_bytes(junit, golden.junit_xml(outcomes, manifest.path.stem))
    code = golden.exit_code(outcomes)
    if code:
        failed = [o for o in outcomes if not o.passed]
        what = "; ".join(f"{o.entry.name} ({o.problems()[0]})" for o in failed)
        _stderr(f"trtcompile: error: {len(failed)} of {len(outcomes)} golden "
                f"model{'s' if len(outcomes) != 1 else ''} failed: {what}")
    return code


def run_passes(args: argparse.Namespace) -> int:
    """``trtcompile passes``: print the named pipelines and every pass (text or Markdown)."""
    from trtcompile.flow.registry import build_registry

    registry = build_registry(args.pass_module)
    sys.stdout.write(passes_markdown(registry) if args.markdown else passes_text(registry))
    return 0


def run_bisect(args: argparse.Namespace) -> int:
    """``trtcompile bisect``: the first pass and rewrite that make MODEL fail (or, with
    ``--engine``, the graph segment TensorRT rejects); writes the minimal evidence into OUT."""
    from pathlib import Path

    from trtcompile import bisect
    from trtcompile.errors import EXIT_NOTHING_FAILS
    from trtcompile.flow import CompileOptions
    from trtcompile.flow.outputs import check_output_location
    from trtcompile.frontend.model import FrontendOptions

    if args.atol < 0 or args.rtol < 0:
        raise InputError("--atol and --rtol must not be negative")
    bisect.check_source(args.model)
    output_dir = Path(args.output)
    check_output_location(output_dir, Path(args.model), None)
    log = (lambda message: None) if args.quiet else _stderr
    options = CompileOptions(
        pipeline=args.pipeline, pass_modules=tuple(args.pass_module), atol=args.atol,
        rtol=args.rtol, seed=args.seed, engine=not args.no_engine, engine_parity="off",
        frontend=FrontendOptions(input_shapes=parse_input_shapes(args.input_shape)),
        progress=False, log=None)
    if args.engine:
        segment = bisect.bisect_engine(args.model, options)
        if segment is None:
            print("nothing to find: TensorRT builds the whole optimized model")
            return EXIT_NOTHING_FAILS
        for line in segment.lines():
            print(line)
        from trtcompile import ir

        path = ir.save(segment.segment, output_dir / bisect.SEGMENT_ONNX)
        log(f"wrote {path}")
        return 0
    verdict = bisect.bisect_rewrites(args.model, options)
    if verdict is None:
        checks = "parity" + ("" if args.no_engine else " and the TensorRT build")
        print(f"nothing to find: the optimized model passes {checks}")
        return EXIT_NOTHING_FAILS
    for line in verdict.lines():
        print(line)
    for path in bisect.write_pair(output_dir, verdict):
        log(f"wrote {path}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    """``trtcompile run``: run a compiled output folder on inputs from an .npz file."""
    from pathlib import Path

    import numpy as np

    from trtcompile import ir
    from trtcompile.fsutil.npz import read_npz
    from trtcompile.runtime import load

    feeds = read_npz(args.inputs, f"--inputs {args.inputs}")
    if args.output is not None:
        from trtcompile.flow.outputs import check_output_location

        check_output_location(Path(args.output).parent, None, None)
    compiled = load(args.folder, device=args.device, fallback=args.fallback)
    try:
        compiled.check_feeds(feeds)
    except InputError as exc:  # the arrays do not fit the model's inputs: say which file
        raise InputError(f"--inputs {args.inputs}: {exc}") from None
    onnxruntime = f"; {compiled.onnxruntime_line}" if compiled.onnxruntime_line else ""
    _stderr(f"running on {compiled.device} ({compiled.reason}){onnxruntime}")
    outputs = compiled.run(feeds)
    for name, value in outputs.items():
        value = np.asarray(value)
        print(f"{name}: {value.dtype} {list(value.shape)}")
    if args.output is not None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.asarray(value) for name, value in outputs.items()})
        ir.atomic_write_bytes(args.output, buffer.getvalue())
        print(f"wrote {args.output}")
    return 0




def run_export(args: argparse.Namespace) -> int:
    """``trtcompile export OUT --triton REPO``: the compiled model as a Triton model."""
    from trtcompile.flow.triton import export_triton

    export_triton(args.folder, args.triton, name=args.model_name, backend=args.backend,
                  version=args.model_version, log=None if args.quiet else print)
    return 0
