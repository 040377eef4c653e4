"""Pass cases for passes: input graphs as ONNX text, expected structure and counts as JSON.

A case is ``tests/passes/<pass_module>/cases/<case>.onnxtxt``: ``onnx.parser`` model text preceded by
``#`` header lines, and beside it ``<case>.expected.json`` with what running the pipeline must give.

Header lines (all optional):

``# pipeline: <text>``
    Pipeline to run; defaults to the pass the folder is named after.
``# constants: W B var:positive``
    Graph inputs that become initializers filled with seeded random values (uniform in [-1, 1],
    or [0.5, 1.5] with ``:positive``), so cases need not spell out weights.
``# atol: 1e-4`` / ``# rtol: 1e-3``
    Parity tolerances of this case.
``# precision: fp16`` / ``# precision: int8``
    Parity at the tolerances the project uses for that precision
    (:func:`trtcompile.calibration.precision_tolerances`: ``atol``, ``rtol`` and ``atol_range``);
    ``# atol`` / ``# rtol`` lines still override.
``# calibration: 64`` (or ``64 seed=1``)
    Calibration samples for ``quantize-int8``: that many seeded samples of every input (drawn like
    the parity inputs, from ``data-range`` or a standard normal, with their own seed, 1 unless
    given, so calibration never sees the parity inputs), handed to the pipeline as
    ``PassContext.resources["quantize-int8"]`` and as the samples ``precision-fp16{keep=auto}``
    measures on (``resources["precision-fp16"]``). The ranges, hence the scales and the keep-list
    recorded in the expectations, are deterministic.
``# data-range: LO,HI``
    Parity draws the case's floating-point inputs uniformly from ``[LO, HI)`` (default: standard
    normal); for graphs whose inputs are known to lie in a range.
``# about: <text>``
    What the case shows (for readers; negative cases say why the pattern must stay).

Expected JSON keys: ``layers_before``, ``layers_after``, ``ops`` (op keys of the optimized graph in
order), ``functions`` (local functions defined), ``counts`` (the pass's counts summed over runs),
``rejections`` (``[nodes, reason]`` pairs), and for cases with ``# calibration``, ``quantization``
(every DequantizeLinear: the activation or weight it restores, its scale or per-channel axis, its
readers; see :func:`quantization_record`). ``pytest --update-cases`` rewrites them for review.

Parity inputs are :func:`trtcompile.verify.feed_data`'s, seed 0: standard normal floating-point
inputs (signed, so Relu, Clip and LeakyRelu see negative values), ``# data-range: LO,HI`` for a
case whose inputs have a known range, integer inputs from Polygraphy; a case with unknown input
dimensions runs at every size of :data:`trtcompile.verify.DYNAMIC_SIZES` (1 and 3). Parity is
recomputed on every run, never recorded, so ``--update-cases`` cannot hide a numerical change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.parser

from trtcompile import calibration, ir, verify
from trtcompile.pass_manager import PassContext, PassManager

PASSES_DIR = Path(__file__).parent / "passes"


@dataclass
class PassCase:
    """One pass case: where it lives, its header, and the model it describes."""

    path: Path
    pipeline: str
    constants: dict[str, str] = field(default_factory=dict)
    atol: float = verify.DEFAULT_ATOL
    rtol: float = verify.DEFAULT_RTOL
    atol_range: float = 0.0
    distribution: verify.InputDistribution = verify.DEFAULT_DISTRIBUTION
    about: str = ""
    #: Seeded calibration samples per input (0: no calibration data) and their seed.
    calibration_samples: int = 0
    calibration_seed: int = 1

    @property
    def id(self) -> str:
        return f"{self.path.parent.parent.name}/{self.path.stem}"

    @property
    def expected_path(self) -> Path:
        return self.path.with_suffix(".expected.json")

    def model(self, seed: int = 0) -> onnx.ModelProto:
        """The case's model with its declared constants turned into seeded initializers."""
        model = onnx.parser.parse_model(self.path.read_text())
        rng = np.random.default_rng(seed)
        if self.constants:
            kept = []
            for value in model.graph.input:
                kind = self.constants.get(value.name)
                if kind is None:
                    kept.append(value)
                    continue
                tensor_type = value.type.tensor_type
                shape = [d.dim_value for d in tensor_type.shape.dim]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
                low, high = (0.5, 1.5) if kind == "positive" else (-1.0, 1.0)
                array = rng.uniform(low, high, size=shape).astype(dtype)
                model.graph.initializer.append(onnx.numpy_helper.from_array(array, value.name))
            missing = set(self.constants) - {v.name for v in model.graph.input}
            if missing:
                raise ValueError(f"{self.path}: constants not declared as graph inputs: {missing}")
            del model.graph.input[:]
            model.graph.input.extend(kept)
        model.ir_version = ir.IR_VERSION
        onnx.checker.check_model(model)
        return model

    def calibration_data(self, model: onnx.ModelProto) -> calibration.CalibrationData | None:
        """The case's seeded calibration set for ``model`` (None without ``# calibration``):
        ``calibration_samples`` along the sample axis, unknown other dimensions at 3."""
        if not self.calibration_samples:
            return None
        rng = np.random.default_rng(self.calibration_seed)
        arrays = {}
        for spec in calibration.model_input_specs(model):
            shape = [self.calibration_samples, *(d or 3 for d in spec.shape[1:])]
            if spec.dtype.kind != "f":
                raise ValueError(f"{self.path}: calibration draws floating-point inputs only, "
                                 f"'{spec.name}' is {spec.dtype}")
            arrays[spec.name] = self.distribution.draw(rng, shape, spec.dtype)
        return calibration.CalibrationData(
            arrays, source=f"{self.calibration_samples} seeded samples (seed {self.calibration_seed})")

    def context(self, model: onnx.ModelProto, **kwargs) -> PassContext:
        """The pass context the case's pipeline runs in: its calibration set, if any."""
        ctx = PassContext(**kwargs)
        data = self.calibration_data(model)
        if data is not None:
            ctx.resources["quantize-int8"] = calibration.Calibration(data=data, progress=False)
            ctx.resources["precision-fp16"] = data
        return ctx


def load_case(path: Path) -> PassCase:
    """Read a case file's header."""
    pass_name = path.parent.parent.name.replace("_", "-")
    case = PassCase(path=path, pipeline=pass_name)
    explicit: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        key, _, value = line[1:].partition(":")
        key, value = key.strip(), value.strip()
        if key == "pipeline":
            case.pipeline = value
        elif key == "constants":
            for item in value.split():
                name, _, kind = item.partition(":")
                case.constants[name] = kind or "uniform"
        elif key in ("atol", "rtol"):
            explicit[key] = float(value)
        elif key == "precision":
            tolerances = calibration.precision_tolerances(value)
            case.atol, case.rtol = tolerances.atol, tolerances.rtol
            case.atol_range = tolerances.atol_range
        elif key == "calibration":
            count, *options = value.split()
            case.calibration_samples = int(count)
            for option in options:
                name, _, number = option.partition("=")
                if name != "seed":
                    raise ValueError(f"{path.name}: unknown calibration option '{option}'")
                case.calibration_seed = int(number)
        elif key == "data-range":
            case.distribution = verify.InputDistribution.parse(value, f"{path.name}: data-range")
        elif key == "about":
            case.about = value
    for key, number in explicit.items():
        setattr(case, key, number)
    return case


def all_cases() -> list[PassCase]:
    """Every pass case of every pass, sorted by id."""
    return sorted((load_case(p) for p in PASSES_DIR.glob("*/cases/*.onnxtxt")), key=lambda c: c.id)


def run_case(case: PassCase) -> tuple[dict, onnx.ModelProto, onnx.ModelProto]:
    """Run the case's pipeline; return (observed expectations, input model, optimized model)."""
    model = case.model()
    graph = ir.import_model(model)
    report = PassManager(case.pipeline, ctx=case.context(model)).run(graph)
    optimized = ir.export_model(graph)
    stats: dict[str, int] = {}
    for record in report.records:
        for key, n in record.counts.items():
            stats[key] = stats.get(key, 0) + n
    rejections: list[list] = []
    for record in report.records:
        for rejection in record.rejections:
            entry = [list(rejection.nodes), rejection.reason]
            if entry not in rejections:
                rejections.append(entry)
    observed = {
        "pipeline": report.pipeline,
        "layers_before": report.layers_before,
        "layers_after": report.layers_after,
        "ops": [ir.op_key(node) for node in graph.nodes],
        "functions": sorted(f"{f.domain}.{f.name}" for f in graph.functions),
        "counts": dict(sorted(stats.items())),
        "rejections": rejections,
    }
    if case.calibration_samples:
        observed["quantization"] = quantization_record(graph)
    return observed, model, optimized


def quantization_record(graph) -> list[dict]:
    """Each DequantizeLinear of the graph: what it restores (``pair_of``: the tensor quantized by
    the QuantizeLinear before it; ``int8``: a stored int8 weight), its granularity (per-tensor scale to 4 significant digits, or the axis and
    number of per-channel scales) and the nodes reading it."""
    record = []
    for node in graph.nodes:
        if node.op != "DequantizeLinear":
            continue
        source, scale = node.inputs[0], node.inputs[1]
        quantize = ir.producer(source)
        entry: dict = {}
        if quantize is not None and quantize.op == "QuantizeLinear":
            entry["pair_of"] = quantize.inputs[0].name
        else:
            entry["int8"] = source.name
        values = ir.constant_value(scale)
        if values is not None and values.ndim == 0:
            entry["scale"] = float(f"{float(values):.4g}")
        elif values is not None:
            entry["axis"] = int(node.attrs.get("axis", 1))
            entry["channels"] = int(values.size)
        entry["readers"] = [reader.name for output in node.outputs
                            for reader in ir.consumers(output)]
        record.append(entry)
    return record


def interface_dims(model: onnx.ModelProto) -> dict[str, list]:
    """Input and output name -> dims (``int`` or the symbol; None when unnamed and unknown)."""
    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output)
    return {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in v.type.tensor_type.shape.dim] for v in values}


def check_parity(case: PassCase, model: onnx.ModelProto, optimized: onnx.ModelProto) -> list:
    """Parity of the optimized model against the input model at every shape set of
    :func:`trtcompile.verify.dynamic_shape_sets`; returns the results (one per set)."""
    return [verify.compare_models(model, optimized, atol=case.atol, rtol=case.rtol, seed=0,
                                  input_shapes=shapes, distribution=case.distribution,
                                  atol_range=case.atol_range)
            for shapes in verify.dynamic_shape_sets(model)]


def write_expected(case: PassCase, observed: dict) -> None:
    case.expected_path.write_text(json.dumps(observed, indent=2) + "\n")
