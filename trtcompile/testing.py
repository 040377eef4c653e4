"""pytest helpers for compiler teams: parity and layer-count assertions, and golden manifests as
test cases.

::

    from trtcompile.testing import assert_layer_counts, assert_parity, check_golden_case, golden_cases

    def test_fusion_keeps_parity():
        check = assert_parity("model.onnx", pipeline="default", atol=1e-4, rtol=1e-3)
        assert_layer_counts(check, layers=28, passes={"conv-bias-activation-fusion": 28})

    @pytest.mark.parametrize("case", golden_cases("golden/manifest.toml"))
    def test_golden(case):
        check_golden_case(case)

Every failure message says exactly what regressed: the expectation, the measured value, and the
evidence (the layers after each pass, the per-output parity errors).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import verify
from trtcompile.golden import Expectations, GoldenEntry, Mismatch, load_manifest, run_entry


@dataclass
class ParityCheck:
    """What :func:`assert_parity` ran: the optimized model, the pass manager's report and the
    parity result (input model vs optimized model)."""

    model: onnx.ModelProto
    optimized: onnx.ModelProto
    pipeline_report: Any  # trtcompile.pm.PipelineReport
    parity: verify.ParityResult
    #: The compile flow that produced it (its engine builds are the compile's).
    compilation: Any = None  # trtcompile.flow.Compilation

    @property
    def layers(self) -> int:
        return self.pipeline_report.layers_after


def _layer_trail(pipeline_report) -> str:
    from trtcompile.report import pass_label

    trail = ", ".join(f"{pass_label(r)} {r['layers_after']}" for r in pipeline_report.to_dict()["passes"])
    return f"input {pipeline_report.layers_before}" + (f", {trail}" if trail else "")


def assert_parity(model: onnx.ModelProto | str | Path, pipeline: str = "default", *,
                  atol: float = verify.DEFAULT_ATOL, rtol: float = verify.DEFAULT_RTOL,
                  seed: int = 0, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  data: Sequence[Mapping[str, np.ndarray]] | None = None,
                  data_range: tuple[float, float] | None = None,
                  registry=None) -> ParityCheck:
    """Run ``pipeline`` on ``model`` (an ONNX model or a path; not modified) through the compile
    flow and assert the optimized model computes what the input computes on ONNX Runtime, within
    the parity rule of :mod:`trtcompile.verify`, on ``data`` (feed dicts) or seeded random
    batches: floating-point inputs standard normal (uniform in ``data_range`` when given),
    integer inputs from Polygraphy, one batch per size of :data:`trtcompile.verify.DYNAMIC_SIZES`
    of the unknown dimensions ``input_shapes`` leaves open.

    Returns the :class:`ParityCheck` (hand it to :func:`assert_layer_counts`); its ``parity`` is
    the worst result. The failure message names every failing output with its errors (or its
    shape change), the input shapes and the layers after each pass. Errors of the pipeline are
    :class:`~trtcompile.errors.PassFailed` / :class:`~trtcompile.errors.PipelineError`; a model
    ONNX Runtime cannot run fails the assertion with ONNX Runtime's reason.
    """
    from trtcompile.flow import Compilation, CompileOptions

    source = copy.deepcopy(model) if isinstance(model, onnx.ModelProto) else model
    options = CompileOptions(pipeline=pipeline, atol=atol, rtol=rtol, seed=seed,
                             data_range=data_range, engine=False, engine_parity="off",
                             progress=False)
    compilation = Compilation(source, options, registry=registry)
    loaded = compilation.load()
    optimized, report = compilation.optimize()
    distribution = (verify.InputDistribution(*data_range) if data_range is not None
                    else verify.DEFAULT_DISTRIBUTION)
    if data is not None:
        batches = [dict(feeds) for feeds in data]
    else:
        batches = [verify.feed_data(loaded.model, seed, shapes, distribution)
                   for shapes in verify.dynamic_shape_sets(loaded.model, input_shapes)]
    worst = None
    for feeds in batches:
        try:
            parity = compilation.parity_of(optimized, feeds).primary
        except verify.ModelRunError as exc:
            raise AssertionError(
                f"parity could not run after pipeline '{report.pipeline}': {exc}; layers after "
                f"each pass: {_layer_trail(report)}") from None
        if not parity.passed:
            failing = [o.describe(name) for name, o in parity.outputs.items() if not o.passed]
            at = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in parity.input_shapes.items())
            inputs = "given" if data is not None else f"{distribution.describe()}, seed {seed}"
            raise AssertionError(
                f"parity failed after pipeline '{report.pipeline}' (atol={atol:g}, rtol={rtol:g}, "
                f"inputs {inputs}, at {at}): "
                f"{'; '.join(failing) or 'no outputs compared'}; "
                f"layers after each pass: {_layer_trail(report)}")
        if worst is None or max((o.max_abs for o in parity.outputs.values()), default=0) > max(
                (o.max_abs for o in worst.outputs.values()), default=0):
            worst = parity
    return ParityCheck(model=loaded.model, optimized=optimized, pipeline_report=report,
                       parity=worst, compilation=compilation)


def assert_layer_counts(check: ParityCheck | onnx.ModelProto | str | Path, *,
                        layers: int | None = None, passes: Mapping[str, int] | None = None,
                        pipeline: str = "default",
                        engine_compute_layers: int | None = None) -> ParityCheck:
    """Assert the final layer count (``layers``), the layers after the last run of each pass in
    ``passes`` and, when given, the compute layers of the TensorRT engine built from the optimized
    model. ``check`` is what :func:`assert_parity` returned, or a model (then ``pipeline`` is run
    and parity asserted first). All mismatches are reported together, with the layers after each
    pass."""
    if not isinstance(check, ParityCheck):
        check = assert_parity(check, pipeline)
    report = check.pipeline_report
    expect = Expectations(layers=layers, engine_compute_layers=engine_compute_layers,
                          passes=dict(passes or {}))
    after = report.layers_after_pass()
    mismatches = []
    if expect.layers is not None and report.layers_after != expect.layers:
        mismatches.append(Mismatch("layers", expect.layers, report.layers_after))
    for name, expected in expect.passes.items():
        if after.get(name) != expected:
            mismatches.append(Mismatch(f"passes.{name}", expected, after.get(name)))
    if engine_compute_layers is not None:
        from trtcompile.flow import Compilation, CompileOptions

        compilation = check.compilation or Compilation(check.model, CompileOptions(progress=False))
        if compilation.loaded is None:
            compilation.load()
        build = compilation.build(check.optimized, progress=False)
        if not build.layer_report_available:
            raise AssertionError("the engine was built but the builder reported no layers")
        if build.compute_layers != engine_compute_layers:
            mismatches.append(Mismatch("engine_compute_layers", engine_compute_layers,
                                       build.compute_layers))
    if mismatches:
        raise AssertionError(
            f"layer counts regressed after pipeline '{report.pipeline}': "
            + "; ".join(m.describe() for m in mismatches)
            + f"; layers after each pass: {_layer_trail(report)}")
    return check


def golden_cases(manifest: str | Path, pattern: str | None = None) -> list:
    """The entries of a golden manifest as ``pytest.param`` objects (id = the entry's name), for
    ``@pytest.mark.parametrize("case", golden_cases(path))``; ``pattern`` selects entries like
    ``trtcompile golden -k``. A bad manifest raises InputError at collection, naming the entry and
    key."""
    import pytest

    selected = load_manifest(manifest, select=pattern).select(pattern)
    return [pytest.param(entry, id=entry.name) for entry in selected]


def check_golden_case(case: GoldenEntry) -> None:
    """Run one manifest entry; fail the test with the runner's explanation of what regressed
    (the expectations missed, parity errors, the layers after each pass, the op histogram)."""
    import pytest

    outcome = run_entry(case)
    if not outcome.passed:
        pytest.fail(outcome.explain(), pytrace=False)


__all__ = ["ParityCheck", "assert_layer_counts", "assert_parity", "check_golden_case",
           "golden_cases"]
