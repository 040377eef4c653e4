"""The ``trtcompile`` command.

::

    trtcompile compile [MODEL] [-o OUT] [flags]   optimize, check parity, build and check the engine
    trtcompile golden MANIFEST [flags]            run a golden-test manifest
    trtcompile bisect MODEL [-o OUT] [--engine]   find the rewrite (or graph segment) that breaks it
    trtcompile passes [--markdown]                the pass reference
    trtcompile run OUT --inputs X.npz [-o Y.npz]  run a compiled model
    trtcompile --version

Exit codes mean one thing each (:mod:`trtcompile.errors`): 0 ok, 1 a check failed, 2 unusable
input (a flag, the model, a file), 3 TensorRT could not build, 4 a pass failed, 5 bisect found
nothing failing, 130 interrupted (SIGINT or SIGTERM; nothing is written), 70 an internal error.
Errors the user can act on print one line, ``trtcompile: error: ...``; an internal error (a bug) prints one line saying where its
traceback was written.

Only the standard library is imported at module level: ``--help`` and ``--version`` must be
instant, so every stage imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import tempfile
import traceback
import typing
from collections.abc import Callable, Sequence

from trtcompile import __version__, checks, interrupts
from trtcompile.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError, Interrupted, TrtcompileError


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
    from trtcompile.flow import CompileOptions
    from trtcompile.frontend import FrontendOptions

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
        rtol=args.rtol, seed=args.seed, data_range=data_range, parity=not args.no_parity,
        engine=not args.no_engine,
        engine_parity=args.engine_parity,
        dump_after_each=args.dump_after_each, verify_after_each=args.verify_after_each,
        frontend=frontend, progress=progress_request(args),
        shapes=shape_options(args),
        report_json=args.report_json, example=args.example,
        log=None if args.quiet else _stderr, report_html=args.report_html,
        precision=args.precision, calib_data=args.calib_data, calib_method=args.calib_method,
        calib_cache=args.calib_cache, calib_batches=args.calib_batches,
        **partition_options(args),
        workspace_bytes=args.workspace_bytes, verbose=args.verbose, save_engine=args.save_engine,
        why_not=parse_names(args.why_not),
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


#: ONNX Runtime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
ORT_ERROR_SEVERITY = 3


def quiet_libraries() -> None:
    """Under -q, only errors: Polygraphy's own log lines (it prints to stdout) and ONNX Runtime's
    warnings (its default logger writes them to stderr when a session loads a model, e.g.
    "Removing initializer 'x'. It is not used by any node") are turned off for the rest of the
    run. ONNX Runtime's default logger is the one every session without its own
    ``log_severity_level`` uses, Polygraphy's included."""
    import onnxruntime
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    onnxruntime.set_default_logger_severity(ORT_ERROR_SEVERITY)


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
        sys.stdout.write(report.render(result.report, str(args.output)))
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

    manifest = golden.load_manifest(args.manifest)
    entries = manifest.select(args.k)
    if args.quiet:
        quiet_libraries()
    if args.ray is not None:
        from trtcompile.golden import scheduling as parallel

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
                                   workers=args.workers, ray=args.ray)

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
        updated = {entry.name: entry for entry in golden.load_manifest(manifest.path).entries}
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


# --------------------------------------------------------------------------------------------
# passes
# --------------------------------------------------------------------------------------------


def type_name(annotation) -> str:
    """An option type as the reference shows it."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {type_name(args[0]) if args else 'str'}"
    return getattr(annotation, "__name__", str(annotation))


def format_default(value) -> str:
    """An option value as pipeline text writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_default(v) for v in value) if value else "(empty)"
    return str(value)


def pass_options(cls) -> list[tuple[str, str, str]]:
    """(kebab-case name, type, default) of each option of a pass class."""
    types_ = cls.option_types()
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append((f.name.replace("_", "-"), type_name(types_[f.name]), format_default(default)))
    return rows


def _doc_body(cls) -> str:
    """The docstring after its first paragraph (the summary)."""
    doc = inspect.getdoc(cls) or ""
    parts = doc.split("\n\n", 1)
    return parts[1].strip("\n") if len(parts) > 1 else ""


def passes_text(registry) -> str:
    """The pass list for the terminal."""
    from trtcompile.pass_manager import named_pipelines

    lines = [f"pipeline '{name}': {text}" for name, text in named_pipelines().items()] + [""]
    for cls in registry:
        lines.append(f"{cls.name}: {cls.summary()}")
        options = pass_options(cls)
        if options:
            lines.append("  options:")
            for name, type_, default in options:
                lines.append(f"    {name}: {type_} = {default}")
        body = _doc_body(cls)
        if body:
            lines += [f"  {line}".rstrip() for line in body.splitlines()]
        lines.append("")
    return "\n".join(lines)


def passes_markdown(registry) -> str:
    """The pass reference in Markdown (committed as docs/passes.md)."""
    from trtcompile.pass_manager import named_pipelines

    lines = [
        "# Pass reference",
        "",
        "Generated from the passes' docstrings by `trtcompile passes --markdown`; edit the docstrings,",
        "not this file. Options are set in pipeline text: `name{option=value other=a,b}`.",
        "",
        "Named pipelines (a name stands for its text anywhere in `--pipeline`):",
        "",
    ]
    for name, text in named_pipelines().items():
        lines += [f"- `{name}`:", "", "  ```text", f"  {text}", "  ```", ""]
    for cls in registry:
        lines += [f"## {cls.name}", "", f"`{cls.__module__}.{cls.__qualname__}`", "",
                  cls.summary(), ""]
        options = pass_options(cls)
        if options:
            lines += ["| option | type | default |", "| --- | --- | --- |"]
            lines += [f"| `{name}` | {type_} | `{default}` |" for name, type_, default in options]
            lines.append("")
        body = _doc_body(cls)
        if body:
            lines += ["```text", body, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


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
    from trtcompile.flow import CompileOptions
    from trtcompile.flow.outputs import check_output_location
    from trtcompile.errors import EXIT_NOTHING_FAILS
    from trtcompile.frontend import FrontendOptions

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


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong, and where the usage is (``--help``), rather
    than the whole usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def flag_value(parse: Callable[[str], typing.Any], check: Callable[[str, typing.Any], typing.Any],
               flag: str, kind: str) -> Callable[[str], typing.Any]:
    """An argparse ``type``: ``parse`` the text, then validate it with a :mod:`trtcompile.checks`
    function, so a value out of range is refused as a flag error before any work."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None
        try:
            return check(flag, value)
        except InputError as exc:  # argparse names the flag already
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None

    convert.__name__ = kind  # argparse names the type in some messages
    return convert


def add_parity_flags(command: argparse.ArgumentParser) -> None:
    """``--atol``, ``--rtol`` and ``--seed``, checked as they are parsed (compile and bisect)."""
    for flag, what in (("--atol", "absolute"), ("--rtol", "relative")):
        default = checks.DEFAULT_ATOL if flag == "--atol" else checks.DEFAULT_RTOL
        command.add_argument(flag, type=flag_value(float, checks.tolerance, flag, "a number"),
                             default=default, help=f"parity {what} tolerance, finite and >= 0 "
                                                   f"(default {default:g})")
    command.add_argument("--seed", type=flag_value(int, checks.seed, "--seed", "an integer"),
                         default=0, help=f"seed of the parity inputs, 0 to {checks.MAX_SEED} "
                                         "(default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trtcompile`` command and its subcommands."""
    from trtcompile.examples import DEFAULT_EXAMPLE, EXAMPLES

    parser = ArgumentParser(
        prog="trtcompile",
        description="Compile TensorFlow and ONNX models to TensorRT engines through explicit, "
                    "inspectable graph passes.")
    parser.add_argument("--version", action="version", version=f"trtcompile {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compile_ = commands.add_parser(
        "compile", help="optimize a model, check parity, build the engine",
        description="Optimize MODEL with the pass pipeline, check numerical parity on ONNX Runtime "
                    "and build a TensorRT engine. Without MODEL, compiles the built-in example.")
    compile_.add_argument("model", nargs="?", metavar="MODEL",
                          help=".onnx file, TensorFlow SavedModel folder, .keras/.h5 file or "
                               "frozen .pb graph (default: the built-in example)")
    compile_.add_argument("--onnx", metavar="MODEL", default=None,
                          help="MODEL given as a flag (trtexec's spelling)")
    compile_.add_argument("-o", "--output", default="out", metavar="OUT",
                          help="output folder (default: out)")
    compile_.add_argument("--save-engine", "--saveEngine", metavar="PATH", default=None,
                          help="also write the engine plan to PATH (trtexec's --saveEngine)")
    compile_.add_argument("--pipeline", default="default", metavar="TEXT",
                          help="pass pipeline text (default: the default pipeline; see "
                               "'trtcompile passes')")
    compile_.add_argument("--tune-with-engine", action="store_true",
                          help="run the pipeline inside engine-guided(...): keep each of its "
                               "top-level passes only where TensorRT builds an engine with fewer "
                               "(or as many, at no more MACs) compute layers")
    compile_.add_argument("--pass-module", action="append", default=[], metavar="FILE",
                          help="Python file defining passes to register (repeatable)")
    add_parity_flags(compile_)
    compile_.add_argument("--data-range", metavar="LO,HI", default=None,
                          help="known range of the model's floating-point inputs: parity draws "
                               "them uniformly in [LO, HI) (default: standard normal); integer "
                               "inputs keep Polygraphy's 0/1")
    compile_.add_argument("--no-parity", action="store_true", help="skip the parity check")
    compile_.add_argument("--no-engine", action="store_true", help="skip building the engine")
    compile_.add_argument("--engine-parity", choices=("auto", "require", "off"), default="auto",
                          help="run the engine on the parity inputs and compare it with the "
                               "optimized model on ONNX Runtime: auto (default) when a supported "
                               "GPU can run it, else say why and carry on; require: exit 3 when "
                               "it cannot run; off: skip")
    compile_.add_argument("--dump-after-each", action="store_true",
                          help="write the model after every pass to OUT/passes/NNN_<pass>.onnx")
    compile_.add_argument("--verify-after-each", action="store_true",
                          help="run the onnx checker and ONNX Runtime parity after every pass")
    compile_.add_argument("--report-json", metavar="PATH",
                          help="also write the report to PATH (OUT/report.json is always written)")
    compile_.add_argument("--report-html", metavar="PATH",
                          help="also write the report as one self-contained HTML page to PATH")
    compile_.add_argument("--why-not", action="append", default=[], metavar="PASS",
                          help="list every candidate PASS considered and left alone, with its "
                               "nodes and the reason (repeatable or comma-separated)")
    compile_.add_argument("--example", choices=sorted(EXAMPLES), default=None,
                          help=f"built-in example to compile when MODEL is not given "
                               f"(default {DEFAULT_EXAMPLE})")
    compile_.add_argument("-q", "--quiet", action="store_true",
                          help="print errors only (no progress, no tables, no log lines)")
    compile_.add_argument("--progress", action="store_true",
                          help="show progress even when stderr is not a terminal (by default it "
                               "shows on terminals only)")
    compile_.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    compile_.add_argument("--verbose", action="store_true",
                          help="also show TensorRT's whole log (every severity) while building")
    frontend = compile_.add_argument_group("TensorFlow lowering")
    frontend.add_argument("--signature", default="serving_default",
                          help="SavedModel signature to lower (default serving_default)")
    frontend.add_argument("--input-shape", "--shapes", dest="input_shape", action="append",
                          default=[], metavar="NAME:DIMS",
                          help="fix an input's shape, e.g. input:1x224x224x3 or Polygraphy's "
                               "input:[1,224,224,3] (repeatable or comma-separated); also applies "
                               "to ONNX models. --shapes is trtexec's spelling")
    frontend.add_argument("--inputs-as-nchw", action="append", default=[], metavar="NAMES",
                          help="inputs to take as NCHW (comma-separated)")
    frontend.add_argument("--opset", default=None,
                          type=flag_value(int, checks.opset, "--opset", "an integer"),
                          help=f"ONNX opset to lower to ({checks.MIN_OPSET} to "
                               f"{checks.MAX_OPSET})")
    frontend.add_argument("--outputs", action="append", default=[], metavar="NAMES",
                          help="output tensor names of a frozen graph (comma-separated)")
    frontend.add_argument("--lowering", choices=("faithful", "tf2onnx-optimized"),
                          default="faithful",
                          help="faithful: tf2onnx's own optimizers off, the passes do the work "
                               "(default); tf2onnx-optimized: keep them on")
    dynamic = compile_.add_argument_group(
        "dynamic shapes", "optimization profiles for inputs with unknown dimensions (see "
        "docs/shapes.md); without them an unknown batch dimension defaults to 1")
    for bound, meaning in (("min", "smallest"), ("opt", "tuned-for"), ("max", "largest")):
        dynamic.add_argument(f"--{bound}-shapes", f"--{bound}Shapes", action="append", default=[],
                             dest=f"{bound}_shapes", metavar="SPEC",
                             help=f"{meaning} input shapes of a profile, trtexec's spelling "
                                  "name:1x3x224x224,other:1x16 (or Polygraphy's name:[1,3,224,224]); "
                                  "the k-th occurrence of each of --min/opt/max-shapes forms "
                                  f"profile k. --{bound}Shapes is trtexec's spelling")
    dynamic.add_argument("--profiles", metavar="FILE",
                         help="TOML or JSON file of optimization profiles")
    dynamic.add_argument("--profile-strategy", choices=("range", "optimal", "range+optimal"),
                         default=None,
                         help="derive profiles from --representative-shapes as TF-TRT does "
                              "(default range)")
    dynamic.add_argument("--representative-shapes", action="append", default=[], metavar="SETS",
                         help="representative input shapes, sets separated by ';' "
                              "('input:1x224x224x3;input:8x224x224x3'), or @FILE")
    precision = compile_.add_argument_group("precision")
    precision.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                           help="precision written into the graph: fp16 runs precision-fp16, "
                                "int8 runs quantize-int8 (default fp32); when --pipeline already "
                                "has that pass, its options are kept. Parity tolerances follow "
                                "unless --atol/--rtol are given")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="--precision fp16 (trtexec's spelling)")
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="--precision int8 (trtexec's spelling)")
    precision.add_argument("--calib-data", metavar="PATH",
                           help="INT8 calibration samples: .npz mapping input names to arrays "
                                "whose first axis is the sample axis, .npy for a single-input "
                                "model, or a folder of them")
    precision.add_argument("--calib-method", choices=("entropy", "minmax", "percentile"),
                           default="entropy",
                           help="INT8 range selection (default entropy, TensorRT's KL calibrator)")
    precision.add_argument("--calib-cache", metavar="FILE",
                           help="JSON of computed ranges: reused if it matches the model, written "
                                "after calibrating")
    precision.add_argument("--calib-batches", default=0, metavar="N",
                           type=flag_value(int, checks.count, "--calib-batches", "an integer"),
                           help="calibrate on at most N batches (default 0: all samples)")
    add_partition_flags(compile_)
    builder = compile_.add_argument_group("TensorRT builder")
    builder.add_argument("--workspace-size", dest="workspace_bytes", default=None, metavar="SIZE",
                         type=flag_value(lambda text: checks.parse_size("--workspace-size", text),
                                         checks.workspace_bytes, "--workspace-size", "a size"),
                         help="limit of the builder's workspace memory pool: bytes, or with a "
                              "K, M or G suffix (1G, 512M); default TensorRT's")
    builder.add_argument("--workspace", dest="workspace_bytes", metavar="MIB",
                         type=flag_value(lambda text: checks.parse_size("--workspace", text,
                                                                        default_unit=2**20),
                                         checks.workspace_bytes, "--workspace", "a size"),
                         help="--workspace-size in MiB (trtexec's older spelling)")
    builder.add_argument("--memPoolSize", dest="workspace_bytes", metavar="workspace:SIZE",
                         type=flag_value(parse_memory_pool, checks.workspace_bytes,
                                         "--memPoolSize", "a pool size"),
                         help="trtexec's spelling: workspace:SIZE, SIZE in MiB or with a K, M or "
                              "G suffix (workspace:1024M)")
    compile_.set_defaults(handler=run_compile)

    golden_ = commands.add_parser(
        "golden", help="run a golden-test manifest (expected counts, parity)",
        description="Compile every model of MANIFEST (TOML, one [[model]] table per model), check "
                    "parity and the expected layer counts, print one row per model and exit 1 "
                    "naming what regressed. See docs/golden.md for the format.")
    golden_.add_argument("manifest", metavar="MANIFEST", help="the manifest (.toml)")
    golden_.add_argument("-k", metavar="PATTERN", default=None,
                         help="run only entries whose name contains PATTERN (a glob when it has "
                              "*?[; several patterns comma-separated)")
    golden_.add_argument("--junit", metavar="PATH", help="write a JUnit XML report to PATH")
    golden_.add_argument("--update", action="store_true",
                         help="rewrite the expected counts in MANIFEST with what was measured "
                              "(comments and order kept); review the diff")
    golden_.add_argument("-q", "--quiet", action="store_true",
                         help="print errors only (no progress, no table)")
    golden_.add_argument("--no-progress", action="store_true", help="no progress bar")
    golden_.add_argument("--workers", nargs="?", const=0, default=None, type=golden_workers,
                         metavar="N",
                         help="compile the models in N worker processes, a process per model "
                              "(--workers alone or 'auto': one per core, capped by memory); "
                              "with --ray local, the local cluster's CPUs (default: one model "
                              "after the other in this process)")
    golden_.add_argument("--ray", metavar="ADDRESS", default=None,
                         help="compile the models as tasks of the Ray cluster at ADDRESS "
                              "(ray://host:10001, host:6379, auto), or 'local' to start a local "
                              "cluster for the run; needs the ray extra: "
                              'pip install -e ".[ray]"')
    golden_.set_defaults(handler=run_golden)

    bisect_ = commands.add_parser(
        "bisect", help="find the pass and rewrite that break a model",
        description="When the optimized MODEL fails parity (or TensorRT rejects it), find the "
                    "first pass, then the first rewrite inside it, that causes it, print the "
                    "rewrite's pass, rule and nodes, and write the graph just before and just "
                    "after it to OUT/before.onnx and OUT/after.onnx. With --engine, find the "
                    "contiguous node range of the optimized model TensorRT cannot build "
                    "(OUT/segment.onnx). Exit 0: found; 5: nothing fails; 2: bad input.")
    bisect_.add_argument("model", metavar="MODEL", help="the model (.onnx, or a TensorFlow model)")
    bisect_.add_argument("-o", "--output", default="bisect", metavar="OUT",
                         help="folder for the before/after pair or the segment (default: bisect)")
    bisect_.add_argument("--pipeline", default="default", metavar="TEXT",
                         help="pass pipeline text (default: the default pipeline)")
    bisect_.add_argument("--pass-module", action="append", default=[], metavar="FILE",
                         help="Python file defining passes to register (repeatable)")
    bisect_.add_argument("--engine", action="store_true",
                         help="bisect the graph segment that makes the TensorRT build fail")
    bisect_.add_argument("--no-engine", action="store_true",
                         help="judge on parity only (no TensorRT build per step)")
    add_parity_flags(bisect_)
    bisect_.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                         help="fix an input's shape, e.g. input:1x3x224x224 (repeatable)")
    bisect_.add_argument("-q", "--quiet", action="store_true", help="print the verdict only")
    bisect_.set_defaults(handler=run_bisect)

    passes = commands.add_parser("passes", help="list the passes, their options and rules",
                                 description="List the passes with their options and rules.")
    passes.add_argument("--markdown", action="store_true",
                        help="print the pass reference as Markdown (docs/passes.md)")
    passes.add_argument("--pass-module", action="append", default=[], metavar="FILE",
                        help="also list the passes of this Python file (repeatable)")
    passes.set_defaults(handler=run_passes)
    add_run_command(commands)
    return parser


def run_run(args: argparse.Namespace) -> int:
    """``trtcompile run``: run a compiled output folder on inputs from an .npz file."""
    from pathlib import Path

    import numpy as np

    from trtcompile import ir
    from trtcompile.runtime import load

    inputs = Path(args.inputs)
    if not inputs.is_file():
        raise InputError(f"--inputs {inputs}: no such file")
    try:
        with np.load(inputs, allow_pickle=False) as data:
            feeds = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"--inputs {inputs}: not a readable .npz file ({exc})") from None
    if args.output is not None:
        from trtcompile.flow.outputs import check_output_location

        check_output_location(Path(args.output).parent, None, None)
    compiled = load(args.folder, device=args.device)
    _stderr(f"running on {compiled.device} ({compiled.reason})")
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


def add_run_command(commands) -> None:
    """The ``trtcompile run`` subcommand."""
    # trtcompile.runtime.DEVICES, spelled here so that building the parser imports no numpy
    devices = ("auto", "tensorrt", "onnxruntime")
    run = commands.add_parser(
        "run", help="run a compiled model on inputs from an .npz file",
        description="Run the output folder of 'trtcompile compile': engines on TensorRT where a "
                    "supported GPU exists, otherwise ONNX Runtime (it says which).")
    run.add_argument("folder", metavar="OUT", help="output folder of trtcompile compile")
    run.add_argument("--inputs", required=True, metavar="NPZ",
                     help=".npz file mapping input names to arrays")
    run.add_argument("-o", "--output", metavar="NPZ", default=None,
                     help="write the outputs to this .npz file")
    run.add_argument("--device", choices=devices, default="auto",
                     help="auto (default): TensorRT when the engines can run here, else ONNX "
                          "Runtime; tensorrt: fail when they cannot; onnxruntime")
    run.set_defaults(handler=run_run)


def add_partition_flags(compile_: argparse.ArgumentParser) -> None:
    """The partitioning flags of ``trtcompile compile`` (see docs/partitioning.md)."""
    group = compile_.add_argument_group(
        "partitioning", "when TensorRT's parser rejects nodes, the supported parts become engine "
        "segments and the rest runs on ONNX Runtime (see docs/partitioning.md)")
    group.add_argument("--min-segment-size", type=int, default=3, metavar="N",
                       help="segments with fewer than N compute nodes fall back (default 3, "
                            "TF-TRT's minimum_segment_size)")
    group.add_argument("--exclude-ops", action="append", default=[], metavar="OPS",
                       help="op types forced to the fallback side, comma-separated (e.g. "
                            "NonMaxSuppression,TopK); partitions even when TensorRT supports "
                            "every node")
    group.add_argument("--partition-only", action="store_true",
                       help="dry run: plan the partition and write the report, build no engine")


def write_traceback(exc: BaseException) -> str | None:
    """Write the traceback of an internal error to a new file in the system's temporary folder
    (never into the output folder, which must not hold partial results); its path, or None."""
    try:
        with tempfile.NamedTemporaryFile("w", prefix="trtcompile-traceback-", suffix=".txt",
                                         delete=False, encoding="utf-8") as file:
            file.write(f"trtcompile {__version__}\nargv: {sys.argv!r}\n\n")
            file.write("".join(traceback.format_exception(exc)))
            return file.name
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trtcompile`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    with interrupts.handled():
        try:
            return args.handler(args)
        except Interrupted as exc:  # not an error of the user's or ours: said as what happened
            _stderr(f"trtcompile: {exc}")
            return exc.exit_code
        except TrtcompileError as exc:
            _stderr(f"trtcompile: error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:
            error = Interrupted(interrupts.received() or "SIGINT")
            _stderr(f"trtcompile: {error}")
            return error.exit_code
        except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
            where = write_traceback(exc)
            summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            if where is None:
                traceback.print_exception(exc, file=sys.stderr)
                where = "stderr (no temporary file could be written)"
            _stderr(f"trtcompile: internal error (a bug, please report it): {summary}; "
                    f"traceback written to {where}")
            return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
