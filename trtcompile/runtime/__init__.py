"""Running a compiled model: engine segments on TensorRT, the rest on ONNX Runtime.

:func:`load` opens a ``trtcompile compile`` output folder and returns a :class:`CompiledModel`
whose :meth:`~CompiledModel.run` maps input arrays to output arrays:

* **TensorRT** where the engines can run (a supported NVIDIA GPU: the backend's
  :func:`~trtcompile.backend.deserialize_engine` is the check): a whole-model compile runs
  ``model.engine``; a partitioned one runs ``partitioned.onnx`` stage by stage, each segment on its
  engine and each maximal run of fallback nodes on ONNX Runtime (:class:`StagedExecutor`);
* **ONNX Runtime** otherwise: ``partitioned.onnx`` (segment bodies inlined by ONNX Runtime) or
  ``optimized.onnx``.

Whatever ONNX Runtime runs (fallback nodes, or the whole model) runs on the providers
:func:`onnxruntime_providers` picks: CUDA where this ONNX Runtime has it (``onnxruntime-gpu``),
TensorRT's execution provider first when asked (``fallback="tensorrt"``), the CPU otherwise.

``CompiledModel.device`` says which was used and ``reason`` why; ``providers`` lists the ONNX
Runtime providers its sessions use, and ``providers_reason`` why those.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile.errors import BackendError, InputError

#: ``device`` values of :func:`load`.
DEVICES = ("auto", "tensorrt", "onnxruntime")

#: ``fallback`` values of :func:`load`: which ONNX Runtime providers run what TensorRT does not.
FALLBACKS = ("auto", "cuda", "tensorrt", "cpu")
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

#: Runs one segment: (segment call node, its inputs by name) -> its outputs by name.
SegmentRunner = Callable[[onnx.NodeProto, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def onnxruntime_providers(fallback: str = "auto",
                          available: Sequence[str] | None = None) -> tuple[list[str], str]:
    """The ONNX Runtime providers for what runs on ONNX Runtime, in priority order (the CPU last,
    for the nodes a GPU provider does not take), and why.

    ``fallback``: ``auto`` (CUDA when ``available`` has it, else the CPU), ``cuda`` (BackendError
    without it), ``tensorrt`` (TensorRT's execution provider, then CUDA; BackendError without
    it), ``cpu``. ``available``: default ``onnxruntime.get_available_providers()``."""
    if fallback not in FALLBACKS:
        raise InputError(f"fallback {fallback!r}: expected one of {', '.join(FALLBACKS)}")
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = list(available)
    if fallback == "cpu":
        return [CPU_PROVIDER], "asked for"
    wanted = TENSORRT_PROVIDER if fallback == "tensorrt" else CUDA_PROVIDER
    if wanted not in available:
        if fallback == "auto":
            return [CPU_PROVIDER], (f"this ONNX Runtime has no {CUDA_PROVIDER} (it has "
                                    f"{', '.join(available)}; onnxruntime-gpu adds it)")
        raise BackendError(f"--fallback {fallback}: this ONNX Runtime has no {wanted} (it has "
                           f"{', '.join(available)}); install onnxruntime-gpu")
    chosen = [wanted] + ([CUDA_PROVIDER] if wanted != CUDA_PROVIDER and CUDA_PROVIDER in available
                         else []) + [CPU_PROVIDER]
    return chosen, "asked for" if fallback != "auto" else f"{CUDA_PROVIDER} is available"


def _session(model: onnx.ModelProto | Path, providers: Sequence[str] = (CPU_PROVIDER,)):
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=list(providers))


class StagedExecutor:
    """Runs a partitioned model node group by node group: each segment call through
    ``segment_runner``, each maximal run of consecutive fallback nodes (graph order) as one ONNX
    Runtime session over just those nodes."""

    def __init__(self, model: onnx.ModelProto, segment_runner: SegmentRunner,
                 providers: Sequence[str] = (CPU_PROVIDER,)):
        from trtcompile.flow.partitioning import segment_calls

        self.model = model
        self.segment_runner = segment_runner
        self.providers = list(providers)
        segment_nodes = {node.name for node, _ in segment_calls(model)}
        graph = model.graph
        self.outputs = [value.name for value in graph.output]
        self.stages: list[tuple[str, Any]] = []
        run: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.name in segment_nodes:
                if run:
                    self.stages.append(("onnxruntime", self._fallback_stage(run)))
                    run = []
                self.stages.append(("segment", node))
            else:
                run.append(node)
        if run:
            self.stages.append(("onnxruntime", self._fallback_stage(run)))

    def _fallback_stage(self, nodes: list[onnx.NodeProto]):
        from trtcompile.backend.support import _probe_model, value_types

        index = {id(node): i for i, node in enumerate(self.model.graph.node)}
        if not hasattr(self, "_types"):
            self._types = value_types(self.model)
        sub = _probe_model(self.model, [index[id(n)] for n in nodes], self._types)
        return sub, _session(sub, self.providers)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = dict(feeds)
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in self.model.graph.initializer}
        for kind, stage in self.stages:
            if kind == "segment":
                inputs = {name: values[name] if name in values else initializers[name]
                          for name in stage.input if name}
                values.update(self.segment_runner(stage, inputs))
                continue
            sub, session = stage
            wanted = [value.name for value in sub.graph.output]
            names = [value.name for value in sub.graph.input]
            results = session.run(wanted, {name: values[name] for name in names})
            values.update(zip(wanted, results))
        return {name: values[name] for name in self.outputs}


@dataclass
class CompiledModel:
    """A compiled model, ready to run (see :func:`load`)."""

    folder: Path
    report: dict[str, Any]
    #: ``tensorrt`` or ``onnxruntime``: what :meth:`run` executes on.
    device: str
    #: Why that device (``no supported GPU: ...``, ``asked for``).
    reason: str
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    _run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    #: Each input's dtype and declared dimensions (None where the size is left open), by name:
    #: what :meth:`run` checks its feeds against.
    input_types: dict[str, tuple[np.dtype, tuple[int | None, ...] | None]] = \
        field(default_factory=dict)
    #: The ONNX Runtime providers its sessions use (empty when ONNX Runtime runs nothing).
    providers: list[str] = field(default_factory=list)
    #: Why those providers (``CUDAExecutionProvider is available``, ``asked for``, ...).
    providers_reason: str = ""

    @property
    def onnxruntime_line(self) -> str:
        """``fallback nodes on ONNX Runtime's CUDAExecutionProvider, CPUExecutionProvider (...)``
        (empty when ONNX Runtime runs nothing)."""
        if not self.providers:
            return ""
        what = "fallback nodes" if self.device == "tensorrt" else "the model"
        return f"{what} on ONNX Runtime's {', '.join(self.providers)} ({self.providers_reason})"

    @property
    def partitioned(self) -> bool:
        return bool(self.report.get("partition"))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on ``feeds`` (input name -> array); returns outputs by name. Feeds that do not
        fit the inputs raise InputError (:meth:`check_feeds`)."""
        self.check_feeds(feeds)
        assert self._run is not None
        return self._run(feeds)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Refuse feeds that miss an input or name one the model lacks, and arrays whose dtype or
        shape the input does not take (InputError, one line naming the input)."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise InputError(f"no data for input(s) {', '.join(missing)} (inputs: "
                             f"{', '.join(self.input_names)})")
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise InputError(f"{', '.join(unknown)}: not an input of the model (inputs: "
                             f"{', '.join(self.input_names)})")
        for name, (dtype, dims) in self.input_types.items():
            check_feed(name, np.asarray(feeds[name]), dtype, dims)


def check_feed(name: str, array: np.ndarray, dtype: np.dtype,
               dims: Sequence[int | None] | None) -> None:
    """Refuse an input array whose dtype or shape the model's input does not take (InputError, one
    line saying what to save instead), as calibration data is checked; ``dims`` is the declared
    shape, None for a dimension left open (None for all: the rank is open too)."""
    if array.dtype != dtype:
        raise InputError(f"input '{name}' is {array.dtype} but the model input is {dtype}; save "
                         f"it as {dtype}")
    if dims is None:
        return
    declared = "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"
    if array.ndim != len(dims):
        raise InputError(f"input '{name}' has shape {list(array.shape)} but the model input has "
                         f"rank {len(dims)} {declared}")
    for axis, (have, want) in enumerate(zip(array.shape, dims)):
        if want is not None and have != want:
            raise InputError(f"input '{name}' has shape {list(array.shape)} but the model input is "
                             f"{declared} (axis {axis}: {have} != {want})")


def input_types(model: onnx.ModelProto) -> dict[str, tuple[np.dtype, tuple[int | None, ...] | None]]:
    """The dtype and declared dimensions of every input of ``model`` that is not an initializer
    (a dimension without a value is None; a declared 0 is a size like any other)."""
    initializers = {t.name for t in model.graph.initializer}
    types = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims = tuple(d.dim_value if d.HasField("dim_value") else None
                     for d in tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        types[value.name] = (dtype, dims)
    return types


def _read_report(folder: Path) -> dict[str, Any]:
    path = folder / "report.json"
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the output folder of trtcompile compile")
    if not path.is_file():
        raise InputError(f"{folder} has no report.json: not the output folder of a complete "
                         "trtcompile compile")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None


def _profile_for(profiles: Sequence[Mapping[str, Any]], feeds: Mapping[str, np.ndarray]) -> int:
    for index, profile in enumerate(profiles):
        if all(name in feeds and all(lo <= d <= hi for d, lo, hi in zip(
                np.shape(feeds[name]), shapes["min"], shapes["max"]))
               for name, shapes in profile.items()):
            return index
    return 0


def load(folder: str | Path, *, device: str = "auto", fallback: str = "auto") -> CompiledModel:
    """Open a compile's output folder for running.

    ``device``: ``auto`` (TensorRT where the engines can run, else ONNX Runtime), ``tensorrt``
    (BackendError when they cannot) or ``onnxruntime``. ``fallback``: the ONNX Runtime providers
    for what ONNX Runtime runs (:func:`onnxruntime_providers`: by default CUDA where available,
    else the CPU); :attr:`CompiledModel.providers` says which its sessions use.
    """
    from trtcompile import backend
    from trtcompile.flow import partitioning

    if device not in DEVICES:
        raise InputError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    providers, providers_reason = onnxruntime_providers(fallback)
    folder = Path(folder)
    report = _read_report(folder)
    partition = report.get("partition")
    model_path = folder / (partitioning.PARTITIONED_ONNX if partition else "optimized.onnx")
    if not model_path.is_file():
        raise InputError(f"{folder} has no {model_path.name}; compile again")
    model = onnx.load(str(model_path))
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in initializers]
    outputs = [v.name for v in model.graph.output]
    types = input_types(model)

    engines: dict[str, Any] = {}
    reason = "asked for" if device == "onnxruntime" else ""
    if device != "onnxruntime":
        plans = ({s["name"]: (folder / s["engine"], s.get("engine_report") or {})
                  for s in partition["segments"] if s.get("engine")} if partition else
                 ({"model": (folder / "model.engine", report.get("engine") or {})}
                  if (report.get("engine") or {}).get("built") else {}))
        if not plans:
            reason = "the compile built no engine"
        gpu = backend.current_compute_capability() if plans else None
        for name, (path, info) in plans.items():
            backend.check_targets(info.get("plan_properties") or {}, gpu, str(path))
        try:
            for name, (path, info) in plans.items():
                engines[name] = (backend.deserialize_engine(path.read_bytes()),
                                 info.get("profiles") or [])
        except (BackendError, OSError) as exc:
            engines = {}
            reason = f"the engines cannot run here: {exc}"
        if device == "tensorrt" and (not engines or len(engines) < len(plans)):
            raise BackendError(f"cannot run {folder} on TensorRT: {reason}")

    if engines and not partition:
        engine, profiles = engines["model"]

        def run_engine(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return backend.run_deserialized(engine, feeds, _profile_for(profiles, feeds))

        return CompiledModel(folder, report, "tensorrt", "the engine runs on this GPU", inputs,
                             outputs, run_engine, input_types=types)
    if engines:
        def run_segment(call: onnx.NodeProto, feeds: Mapping[str, np.ndarray]):
            engine, profiles = engines[call.name]
            return backend.run_deserialized(engine, feeds, _profile_for(profiles, feeds))

        executor = StagedExecutor(model, _with_onnxruntime_fallback(model, engines, run_segment,
                                                                    providers), providers)
        used = next((stage[1].get_providers() for kind, stage in executor.stages
                     if kind == "onnxruntime"), providers)
        return CompiledModel(folder, report, "tensorrt",
                             "segment engines on TensorRT, fallback nodes on ONNX Runtime",
                             inputs, outputs, executor.run, input_types=types,
                             providers=list(used),
                             providers_reason=_used_reason(providers, used, providers_reason))
    session = _session(model_path, providers)

    def run_onnxruntime(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, dict(feeds))))

    return CompiledModel(folder, report, "onnxruntime", reason or "no engine", inputs, outputs,
                         run_onnxruntime, input_types=types, providers=session.get_providers(),
                         providers_reason=_used_reason(providers, session.get_providers(),
                                                       providers_reason))


def _used_reason(asked: Sequence[str], used: Sequence[str], reason: str) -> str:
    """``reason``, and when ONNX Runtime left out the first provider asked for (a CUDA provider
    without a usable GPU), that it did."""
    if asked and asked[0] not in used:
        return f"{reason}; {asked[0]} could not start, so ONNX Runtime left it out"
    return reason


def _with_onnxruntime_fallback(model: onnx.ModelProto, engines: Mapping[str, Any],
                               run_segment: SegmentRunner,
                               providers: Sequence[str] = (CPU_PROVIDER,)) -> SegmentRunner:
    """Segments without an engine (their build failed) run their body on ONNX Runtime."""
    from trtcompile.backend.support import value_types
    from trtcompile.flow.partitioning import segment_calls, segment_model

    types = value_types(model)
    sessions = {call.name: _session(segment_model(model, call, function, types), providers)
                for call, function in segment_calls(model) if call.name not in engines}

    def run(call: onnx.NodeProto, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if call.name in engines:
            return run_segment(call, {k: v for k, v in feeds.items()
                                      if k not in _initializer_names(model)})
        session = sessions[call.name]
        names = [i.name for i in session.get_inputs()]
        return dict(zip(list(call.output), session.run(list(call.output),
                                                       {n: feeds[n] for n in names})))

    return run


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}


__all__ = ["CPU_PROVIDER", "CUDA_PROVIDER", "DEVICES", "FALLBACKS", "TENSORRT_PROVIDER",
           "CompiledModel", "StagedExecutor", "check_feed", "input_types", "load",
           "onnxruntime_providers"]
