"""The command line's argument parser: every command, flag and alias (trtexec's spellings)."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable

from trtcompile import checks
from trtcompile.version import __version__
from trtcompile.cli.commands import (
    golden_workers,
    parse_memory_pool,
    run_bisect,
    run_compile,
    run_export,
    run_golden,
    run_passes,
    run_run,
)
from trtcompile.cli.plan_commands import add_build_flags, add_plan_commands
from trtcompile.errors import EXIT_BAD_INPUT, InputError

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
                          help="Python file defining passes to register (repeatable); it is "
                               "imported, so its code runs with your rights: trust it as a script")
    add_parity_flags(compile_)
    compile_.add_argument("--data-range", metavar="LO,HI", default=None,
                          help="known range of the model's floating-point inputs: parity draws "
                               "them uniformly in [LO, HI) (default: standard normal); integer "
                               "inputs keep Polygraphy's 0/1")
    compile_.add_argument("--inputs", metavar="NPZ", default=None,
                          help="inputs the checks run the model on (parity, engine parity, the "
                               "partition stage; INT8 calibration and FP16's measured keep-list "
                               "without --calib-data): an .npz "
                               "with one array per model input, strings as string arrays "
                               "(default: generated for every input type)")
    compile_.add_argument("--no-parity", action="store_true", help="skip the parity check")
    compile_.add_argument("--no-engine", action="store_true", help="skip building the engine")
    compile_.add_argument("--no-engine-check", action="store_true",
                          help="do not build the engine of the model as the passes received it: "
                               "deliver the optimized model even when its engine has more compute "
                               "layers (by default the compile then undoes the pass groups "
                               "responsible)")
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
                               "input:[1,224,224,3] (repeatable or comma-separated), in the "
                               "model's own layout (a TensorFlow image is NHWC, also with "
                               "--inputs-as-nchw); also applies to ONNX models. --shapes is "
                               "trtexec's spelling")
    frontend.add_argument("--inputs-as-nchw", action="append", default=[], metavar="NAMES",
                          help="inputs to take as NCHW in the ONNX model and the engine "
                               "(comma-separated); --input-shape still gives them as NHWC")
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
    precision.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default="fp32",
                           help="precision written into the graph: fp16 runs precision-fp16, "
                                "bf16 runs precision-fp16{dtype=bfloat16} (exit code 6 where "
                                "TensorRT cannot build BF16), int8 runs quantize-int8 (default "
                                "fp32); when --pipeline already "
                                "has that pass, its options are kept. Parity tolerances follow "
                                "unless --atol/--rtol are given")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="--precision fp16 (trtexec's spelling)")
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="--precision int8 (trtexec's spelling)")
    precision.add_argument("--calib-data", metavar="PATH",
                           help="samples of the model's inputs: .npz mapping input names to "
                                "arrays whose first axis is the sample axis, .npy for a "
                                "single-input model, or a folder of them; INT8 calibrates on them, "
                                "FP16 and BF16 measure which nodes stay FP32 on them "
                                "(precision-fp16{keep=auto}); parity runs on them")
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
    add_build_flags(compile_, flag_value)
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
    golden_.add_argument("--ray-timeout", metavar="SECONDS", default=None,
                         type=flag_value(float, checks.seconds, "--ray-timeout", "a number"),
                         help="give up connecting to the --ray cluster after SECONDS (default 30)")
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
                         help="Python file defining passes to register (repeatable); it is "
                              "imported, so its code runs with your rights: trust it as a script")
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
                        help="also list the passes of this Python file (repeatable); it is "
                             "imported, so its code runs with your rights")
    passes.set_defaults(handler=run_passes)
    add_run_command(commands)
    add_export_command(commands)
    add_plan_commands(commands)
    return parser


def add_export_command(commands) -> None:
    """The ``trtcompile export`` subcommand."""
    # trtcompile.flow.triton.TRITON_BACKENDS, spelled here so that building the parser imports
    # no onnx
    backends = ("auto", "tensorrt", "onnxruntime")
    export = commands.add_parser(
        "export", help="write a compiled model for a server: a Triton model repository",
        description="Write the output folder of 'trtcompile compile' as a model of a Triton "
                    "Inference Server model repository (config.pbtxt and its version folder).")
    export.add_argument("folder", metavar="OUT", help="output folder of trtcompile compile")
    export.add_argument("--triton", required=True, metavar="REPO",
                        help="Triton model repository to write the model into (created if "
                             "missing; other models in it are left alone)")
    export.add_argument("--model-name", default=None, metavar="NAME",
                        help="the model's name and folder in REPO (default: the compiled "
                             "model's file name without its suffix)")
    export.add_argument("--model-version", type=int, default=1, metavar="N",
                        help="version folder to write (default 1)")
    export.add_argument("--backend", choices=backends, default="auto",
                        help="auto (default): tensorrt_plan for a whole-model engine of "
                             "standard TensorRT, else ONNX Runtime with its TensorRT execution "
                             "provider (partitioned models, TensorRT-RTX plans); tensorrt: the "
                             "plan; onnxruntime")
    export.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    export.set_defaults(handler=run_export)


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
    # trtcompile.runtime.FALLBACKS
    run.add_argument("--fallback", choices=("auto", "cuda", "tensorrt", "cpu"), default="auto",
                     help="ONNX Runtime providers for what ONNX Runtime runs (fallback nodes, or "
                          "the whole model): auto (default): CUDA where this ONNX Runtime has it "
                          "(onnxruntime-gpu), else the CPU; cuda or tensorrt (its TensorRT "
                          "execution provider, then CUDA): exit 3 without it; cpu")
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


