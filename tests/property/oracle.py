"""What every optimized model must satisfy, and what to keep when it does not.

:func:`check_pipeline` runs a pipeline on a model through the pass manager and asserts that the
result passes the onnx checker, keeps the graph's interface (input and output names, shapes, dtypes)
and computes the same outputs as the original on ONNX Runtime within tolerance.

When a check fails, the failing model is written as ONNX text (``onnx.printer``) with a pass-case
header into ``property-failures/<pass_module>/regression_<label>.onnxtxt`` (or under
``$TRTCOMPILE_PROPERTY_FAILURES``). Hypothesis replays the shrunk example last, so the file left
behind holds the minimal graph; move it into ``tests/passes/<pass_module>/cases/`` and generate its
expectations with ``--update-cases``. The pass to blame is the first one after which the graph
stops matching the original (found by re-running the pipeline with a checking instrument).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.printer
import onnxruntime as ort
from hypothesis import note

import passes
from tests.helpers import REPO
from trtcompile import ir, verify
from trtcompile.pass_manager import (
    Instrument, PassManager, PassRegistry, PipelineReport, VerificationFailed,
    default_pipeline_text,
)



@dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|optimized - original| <= atol + atol_range * max|original| + rtol *
    |original|``: the parity rule (:func:`trtcompile.verify.within_tolerance` applies it)."""

    atol: float
    rtol: float
    #: Share of the output's largest magnitude added to ``atol`` (0: a fixed absolute bound).
    atol_range: float = 0.0


#: FP32 rewrites reorder arithmetic (BatchNorm folding, bias fusion) but stay close.
FP32 = Tolerance(atol=1e-4, rtol=1e-3)
#: FP16 storage and arithmetic: about three decimal digits, compounded over a few layers.
FP16 = Tolerance(atol=2e-2, rtol=2e-2)


def pass_tolerance(pass_name: str) -> Tolerance | None:
    """Tolerance a pass is held to alone, or None when it cannot run on a bare model.

    Precision passes that quantize need calibration data (``ctx.resources``), which random models do
    not come with; passes that lower precision to FP16 get the FP16 tolerance.
    """
    if "int8" in pass_name or "quantiz" in pass_name:
        return None
    if "fp16" in pass_name or "half" in pass_name:
        return FP16
    return FP32


def builtin_pass_names() -> list[str]:
    """Names of every built-in pass, in registry order."""
    return [cls.name for cls in passes.BUILTIN_PASSES]


def default_pipeline() -> str:
    """The default pipeline's text."""
    return default_pipeline_text()


def all_fp32_passes_pipeline() -> str:
    """Every built-in FP32 pass in registry order, repeated to a fixed point.

    Exercises the interactions between passes (fusion feeding horizontal fusion, folding feeding
    fusion) whatever the default pipeline currently holds.
    """
    names = [name for name in builtin_pass_names() if pass_tolerance(name) == FP32]
    return f"fixed-point({','.join(names)})"


# --------------------------------------------------------------------------------------------
# Running models
# --------------------------------------------------------------------------------------------


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs, uniform in [-1, 1], for every graph input."""
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = rng.uniform(-1, 1, size=shape).astype(dtype)
    return feeds


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All graph outputs of ``model`` on ONNX Runtime's CPU provider, by name."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # The reference must be ONNX semantics, not ONNX Runtime's own graph rewrites of it.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def interface(model: onnx.ModelProto) -> dict[str, list[tuple[str, int, tuple]]]:
    """Graph inputs (initializers excluded) and outputs as (name, elem_type, dims)."""
    initializers = {init.name for init in model.graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> tuple[str, int, tuple]:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in tensor_type.shape.dim)
        return value.name, tensor_type.elem_type, dims

    return {
        "inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [describe(v) for v in model.graph.output],
    }


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    tolerance: Tolerance) -> list[str]:
    """Problems found comparing two runs output by output (empty when they match)."""
    problems = []
    for name, expected in reference.items():
        if name not in candidate:
            problems.append(f"output '{name}' missing")
            continue
        got = candidate[name]
        if got.shape != expected.shape or got.dtype != expected.dtype:
            problems.append(f"output '{name}': {got.dtype}{list(got.shape)} instead of "
                            f"{expected.dtype}{list(expected.shape)}")
            continue
        # The project's one rule, so the property suite holds passes to what parity promises.
        close = verify.within_tolerance(expected, got, atol=tolerance.atol, rtol=tolerance.rtol,
                                        atol_range=tolerance.atol_range)
        if not np.all(close):
            max_abs, _ = verify.error_statistics(expected, got)
            problems.append(f"output '{name}': {int(close.size - close.sum())} of {close.size} "
                            f"elements beyond the bound, max abs error {max_abs:.3g} "
                            f"(atol={tolerance.atol:g} atol_range={tolerance.atol_range:g} "
                            f"rtol={tolerance.rtol:g})")
    return problems


# --------------------------------------------------------------------------------------------
# Checking a pipeline
# --------------------------------------------------------------------------------------------


def optimize(model: onnx.ModelProto, pipeline: str, registry: PassRegistry | None = None
             ) -> tuple[onnx.ModelProto, PipelineReport]:
    """Run ``pipeline`` on a copy of ``model``; return the exported optimized model and the report."""
    graph = ir.import_model(_copy(model))
    report = PassManager(pipeline, registry=registry).run(graph)
    return ir.export_model(graph), report


def verify_optimized(original: onnx.ModelProto, optimized: onnx.ModelProto,
                     reference: dict[str, np.ndarray], feeds: dict[str, np.ndarray],
                     tolerance: Tolerance) -> None:
    """Assert checker validity, an unchanged interface and output parity with the original."""
    try:
        onnx.checker.check_model(optimized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise AssertionError(f"onnx checker rejects the optimized model: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    before, after = interface(original), interface(optimized)
    assert after["inputs"] == before["inputs"], (
        f"graph inputs changed: {before['inputs']} -> {after['inputs']}")
    assert after["outputs"] == before["outputs"], (
        f"graph outputs changed: {before['outputs']} -> {after['outputs']}")
    problems = compare_outputs(reference, run_onnxruntime(optimized, feeds), tolerance)
    assert not problems, "optimized model differs from the original: " + "; ".join(problems)


def check_pipeline(model: onnx.ModelProto, pipeline: str, tolerance: Tolerance = FP32, *,
                   label: str, registry: PassRegistry | None = None
                   ) -> tuple[onnx.ModelProto, PipelineReport]:
    """Optimize ``model`` with ``pipeline`` and verify the result against the original.

    On failure the model is saved as a regression case (see the module docstring) and the exception
    re-raised with a note saying where the case was written.
    """
    feeds = random_feeds(model)
    reference = run_onnxruntime(model, feeds)
    try:
        optimized, report = optimize(model, pipeline, registry)
        verify_optimized(model, optimized, reference, feeds, tolerance)
    except Exception as exc:
        path = save_regression_case(model, pipeline, exc, tolerance, label=label,
                                    blamed=blame(model, pipeline, tolerance, registry))
        message = f"failing model written to {path} (move it into tests/passes/<pass>/cases/)"
        note(message)
        exc.add_note(message)
        raise
    return optimized, report


class _ParityInstrument(Instrument):
    """After each pass, checks the graph against the original model; records the first failure."""

    def __init__(self, original: onnx.ModelProto, tolerance: Tolerance):
        self.original = original
        self.tolerance = tolerance
        self.feeds = random_feeds(original)
        self.reference = run_onnxruntime(original, self.feeds)
        self.first_failure: str | None = None

    def after_pass(self, pass_, graph, ctx, record) -> None:
        if not record.changed or self.first_failure:
            return
        try:
            verify_optimized(self.original, ir.export_model(graph.copy()), self.reference,
                             self.feeds, self.tolerance)
        except Exception as exc:  # any failure blames this pass
            self.first_failure = pass_.name
            raise VerificationFailed(str(exc)) from None


def blame(model: onnx.ModelProto, pipeline: str, tolerance: Tolerance,
          registry: PassRegistry | None = None) -> str | None:
    """The first pass of ``pipeline`` after which ``model`` no longer checks out, if one does."""
    try:
        instrument = _ParityInstrument(model, tolerance)
    except Exception:  # the original itself does not run: nothing to blame
        return None
    graph = ir.import_model(_copy(model))
    manager = PassManager(pipeline, registry=registry, instruments=[instrument])
    try:
        manager.run(graph)
    except Exception as exc:
        if instrument.first_failure:
            return instrument.first_failure
        failed = getattr(exc, "pass_text", None)
        if failed:  # the pass raised; its name is the text before any options
            return failed.split("{")[0]
    return None


# --------------------------------------------------------------------------------------------
# Regression cases
# --------------------------------------------------------------------------------------------


def failures_dir() -> Path:
    """Where failing models are written: ``$TRTCOMPILE_PROPERTY_FAILURES`` or property-failures/."""
    configured = os.environ.get("TRTCOMPILE_PROPERTY_FAILURES")
    return Path(configured) if configured else REPO / "property-failures"


def regression_text(model: onnx.ModelProto, pipeline: str, reason: str,
                    tolerance: Tolerance) -> str:
    """A pass case: header lines, then the model as ONNX text."""
    first_line = reason.strip().splitlines()[0] if reason.strip() else "failure"
    header = [
        f"# about: regression (shrunk by the property tests): {first_line[:300]}",
        f"# pipeline: {pipeline}",
    ]
    if tolerance != FP32:
        header += [f"# atol: {tolerance.atol:g}", f"# rtol: {tolerance.rtol:g}"]
    return "\n".join(header) + "\n" + onnx.printer.to_text(model) + "\n"


def save_regression_case(model: onnx.ModelProto, pipeline: str, exc: BaseException,
                         tolerance: Tolerance, *, label: str, blamed: str | None) -> Path:
    """Write the failing model for the pass to blame; later failures of ``label`` overwrite it."""
    module = (blamed or "pipeline").replace("-", "_")
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    path = failures_dir() / module / f"regression_{slug}.onnxtxt"
    ir.atomic_write_bytes(path, regression_text(model, pipeline, f"{type(exc).__name__}: {exc}",
                                                tolerance).encode())
    return path


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


# --------------------------------------------------------------------------------------------
# TensorRT acceptance
# --------------------------------------------------------------------------------------------


def tensorrt_build(model: onnx.ModelProto) -> None:
    """Parse and build ``model`` with TensorRT in a forked child; AssertionError if it fails.

    The build runs in a child process because TensorRT-RTX has been seen to crash (SIGSEGV) while
    building some generated networks; a crash then fails one example instead of killing the test
    session.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_build_in_child, args=(model.SerializeToString(), sender))
    child.start()
    sender.close()
    child.join()
    message = receiver.recv() if receiver.poll() else None
    if child.exitcode != 0:
        raise AssertionError(f"TensorRT crashed building the model (exit code {child.exitcode})")
    if message:
        raise AssertionError(message)


def _build_in_child(serialized: bytes, sender) -> None:
    try:
        _tensorrt_build_here(onnx.load_from_string(serialized))
        sender.send("")
    except AssertionError as exc:
        sender.send(str(exc))
    finally:
        sender.close()


def _tensorrt_build_here(model: onnx.ModelProto) -> None:
    """Parse and build ``model`` with TensorRT; raise AssertionError with TensorRT's words if not.

    Goes through the compiler's backend when it offers ``build_engine``; otherwise drives the
    TensorRT ONNX parser and builder directly (``tensorrt`` when importable, else
    ``tensorrt_rtx``).
    """
    try:
        from trtcompile.backend import build_engine
    except ImportError:
        build_engine = None
    if build_engine is not None:
        from trtcompile.errors import BackendError

        try:
            build_engine(model, progress=False)
        except BackendError as exc:
            raise AssertionError(f"TensorRT rejects the model: {exc}") from None
        return
    trt = _tensorrt()
    logger = _CollectingLogger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AssertionError(f"TensorRT's ONNX parser rejects the model: {errors}")
    config = builder.create_builder_config()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise AssertionError("TensorRT could not build the model: " + "; ".join(logger.errors))


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        import tensorrt_rtx as trt
    return trt


def _CollectingLogger(trt):
    class CollectingLogger(trt.ILogger):
        """Keeps TensorRT's error messages for the assertion text."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, message):
            if severity <= trt.Logger.ERROR:
                self.errors.append(message)

    return CollectingLogger()
