"""A Triton Inference Server model repository of a compiled model (``trtcompile export OUT
--triton REPO``, ``Converter.save(..., triton=...)``).

One export writes one model into REPO, as Triton's model repository layout asks::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.plan                  a whole-model engine: platform tensorrt_plan
    REPO/NAME/1/model.onnx                  otherwise: the ONNX Runtime backend with the TensorRT
    REPO/NAME/1/segments/segment_N.engine   execution provider (an EPContext model and its plans)

``config.pbtxt`` is ``ModelConfig`` of Triton's ``model_config.proto`` in protobuf text format:
inputs and outputs with their data types and dims, ``max_batch_size`` and ``dynamic_batching``
from the compile's optimization profiles, and the TensorRT that built the plans as parameters.

Which backend (``backend="auto"``): ``tensorrt_plan`` for a whole-model engine of standard
TensorRT; the ONNX Runtime backend with its TensorRT execution provider for a partitioned model
(the EPContext model when its segment plans are standard TensorRT's, which that provider loads,
else ``partitioned.onnx``, whose segments the provider builds itself) and for a TensorRT-RTX plan,
which Triton's TensorRT backend does not run (``optimized.onnx``).

REPO is written like an output folder (:mod:`trtcompile.fsutil`): staged inside REPO, published
under its lock, recorded in its manifest. A second export of NAME replaces what the first wrote
when it is unchanged; a NAME folder trtcompile did not write (or one changed since) is refused,
and the other models in REPO are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtcompile.errors import InputError
from trtcompile.report.tables import wrap_line

#: ``backend`` values of :func:`export_triton`.
TRITON_BACKENDS = ("auto", "tensorrt", "onnxruntime")
#: A Triton model name: a folder name Triton lists (no leading dot, no separator).
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

#: ONNX element types as Triton's ``DataType``.
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32", onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonTensor:
    """An input or output of the model config: name, Triton data type, dims (-1: any size;
    without the batch dimension when the model batches)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass
class TritonModel:
    """What one export writes: the config's content and the files of the version folder."""

    name: str
    #: ``tensorrt_plan`` or ``onnxruntime_onnx``.
    platform: str
    max_batch_size: int
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    #: Batch sizes the profiles are tuned for (``dynamic_batching.preferred_batch_size``).
    preferred_batch_sizes: list[int] = field(default_factory=list)
    #: Recorded in the config's ``parameters`` (the TensorRT that built the plans, ...).
    parameters: dict[str, str] = field(default_factory=dict)
    #: Files of the version folder: path inside it -> the file in OUT it is copied from.
    files: dict[str, Path] = field(default_factory=dict)
    #: Why this backend, in one phrase.
    why: str = ""
    #: What the user must know to serve it (a plan Triton's TensorRT may not run, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def tensorrt_ep(self) -> bool:
        """Whether the config enables ONNX Runtime's TensorRT execution provider."""
        return self.platform == "onnxruntime_onnx"

    def config_text(self) -> str:
        """``config.pbtxt``: Triton's ``ModelConfig`` in protobuf text format."""
        lines = [f'name: "{self.name}"', f'platform: "{self.platform}"',
                 f"max_batch_size: {self.max_batch_size}"]
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for tensor in tensors:
                lines += [f"{kind} {{", f'  name: "{tensor.name}"',
                          f"  data_type: {tensor.data_type}",
                          f"  dims: [ {', '.join(map(str, tensor.dims))} ]", "}"]
        if self.max_batch_size > 1:
            preferred = "".join(f"\n  preferred_batch_size: {size}"
                                for size in self.preferred_batch_sizes)
            lines.append(f"dynamic_batching {{{preferred}\n}}")
        if self.tensorrt_ep:
            lines += ["optimization {", "  execution_accelerators {",
                      '    gpu_execution_accelerator: [ { name: "tensorrt" } ]', "  }", "}"]
        for key, value in self.parameters.items():
            lines.append(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}')
        return "\n".join(lines) + "\n"


@dataclass
class TritonExport:
    """What :func:`export_triton` did: the model, its folder, the files written there."""

    model: TritonModel
    folder: Path
    written: list[str]
    messages: list[str]

    def lines(self) -> list[str]:
        """The terminal's lines: backend and why, batching, notes, every file written."""
        model = self.model
        backend = ("tensorrt_plan" if not model.tensorrt_ep
                   else "onnxruntime with the TensorRT execution provider")
        batching = (f"max_batch_size {model.max_batch_size}"
                    + (", dynamic batching" if model.max_batch_size > 1 else "")
                    if model.max_batch_size else "max_batch_size 0 (shapes as the model declares)")
        lines = [f"triton: {model.name} as {backend} ({model.why}); {batching}"]
        lines += [f"note: {note}" for note in model.notes]
        lines += self.messages
        lines.append(f"wrote {self.folder}/: {', '.join(self.written)}")
        return [piece for line in lines for piece in wrap_line(line)]


def read_compile(out: Path) -> dict[str, Any]:
    """The report of the compile in ``out`` (InputError when it is not a complete one)."""
    path = out / "report.json"
    if not out.is_dir() or not path.is_file():
        raise InputError(f"{out} is not the output folder of a complete trtcompile compile "
                         "(no report.json)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None


def plan_export(out: str | os.PathLike, *, name: str | None = None, backend: str = "auto",
                version: int = 1) -> TritonModel:
    """The Triton model of the compile in ``out``: its backend, config and files (nothing is
    written). InputError for what cannot be exported as asked, in one line."""
    from trtcompile.flow import partitioning
    from trtcompile.flow.outputs import ENGINE_PLAN, OPTIMIZED_ONNX

    out = Path(out)
    if backend not in TRITON_BACKENDS:
        raise InputError(f"--backend {backend}: expected one of {', '.join(TRITON_BACKENDS)}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"--model-version {version}: expected a positive integer")
    report = read_compile(out)
    name = name if name is not None else default_name(report)
    if not MODEL_NAME.fullmatch(name):
        raise InputError(f"--model-name {name!r}: a Triton model name is a folder name of "
                         "letters, digits, '_', '.' and '-', not starting with '.'")
    engine = report.get("engine") or {}
    partition = report.get("partition")
    segments = [s for s in (partition or {}).get("segments", []) if s.get("engine")]
    if backend == "tensorrt" and not engine.get("built"):
        why = ("the model is partitioned: Triton's TensorRT backend runs one plan"
               if partition else f"the compile built no engine ({engine.get('reason')})")
        raise InputError(f"--backend tensorrt: {why}; export with --backend onnxruntime")
    rtx = engine.get("backend") == "tensorrt_rtx"
    if engine.get("built") and (backend == "tensorrt" or (backend == "auto" and not rtx)):
        model = _model(name, "tensorrt_plan", out / OPTIMIZED_ONNX, report,
                       {"model.plan": out / ENGINE_PLAN}, "a whole-model engine")
        model.parameters.update(_built_by(engine.get("backend"), engine.get("version")))
        if rtx:
            model.notes.append(
                f"model.plan was built by TensorRT-RTX {engine.get('version')}; Triton's TensorRT "
                "backend runs plans of standard TensorRT, of its own version: build with that "
                "TensorRT, or export with --backend onnxruntime")
        return _versioned(model, version)
    if segments and segments[0]["engine_report"].get("backend") == "tensorrt":
        files = {"model.onnx": out / partitioning.EPCONTEXT_ONNX}
        files.update((s["engine"], out / s["engine"]) for s in segments)
        model = _model(name, "onnxruntime_onnx", out / partitioning.EPCONTEXT_ONNX, report, files,
                       f"partitioned: {len(segments)} segment plans in an EPContext model, "
                       "the rest on ONNX Runtime")
        first = segments[0]["engine_report"]
        model.parameters.update(_built_by(first.get("backend"), first.get("version")))
    elif partition:
        model = _model(name, "onnxruntime_onnx", out / partitioning.PARTITIONED_ONNX, report,
                       {"model.onnx": out / partitioning.PARTITIONED_ONNX},
                       "partitioned: the TensorRT execution provider builds the segments" + (
                           ", as the segment plans are TensorRT-RTX's" if segments else ""))
    else:
        why = ("--backend onnxruntime" if backend == "onnxruntime" else
               "the plan is TensorRT-RTX's, which Triton's TensorRT backend does not run"
               if engine.get("built") else "the compile built no engine")
        model = _model(name, "onnxruntime_onnx", out / OPTIMIZED_ONNX, report,
                       {"model.onnx": out / OPTIMIZED_ONNX},
                       f"{why}: the TensorRT execution provider builds the engine")
    return _versioned(model, version)


def default_name(report: Mapping[str, Any]) -> str:
    """The model's file or folder name without its suffix, as a Triton model name."""
    source = str((report.get("model") or {}).get("source") or "model").rstrip("/")
    stem = Path(source).stem if Path(source).suffix else Path(source).name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".")
    return name or "model"


def _built_by(backend: str | None, version: str | None) -> dict[str, str]:
    return {"tensorrt_backend": str(backend), "tensorrt_version": str(version)}


def _versioned(model: TritonModel, version: int) -> TritonModel:
    model.files = {f"{version}/{path}": source for path, source in model.files.items()}
    return model


def _model(name: str, platform: str, onnx_path: Path, report: Mapping[str, Any],
           files: dict[str, Path], why: str) -> TritonModel:
    """The config of ``onnx_path``'s inputs and outputs (the plan's bindings are the optimized
    model's), batched when every profile lets the first dimension of every input run from 1."""
    from trtcompile.version import __version__

    for source in files.values():
        if not source.is_file():
            raise InputError(f"{source} is missing: compile again into {source.parent}")
    model = onnx.load(str(onnx_path), load_external_data=False)
    for tensor in model.graph.initializer:  # weights kept beside the model travel with it
        for entry in tensor.external_data:
            if entry.key == "location":
                files.setdefault(entry.value, onnx_path.parent / entry.value)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_tensor(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor(v) for v in model.graph.output]
    profiles = (report.get("shapes") or {}).get("profiles") or []
    max_batch, preferred = batching(inputs, outputs, profiles)
    if max_batch:
        inputs = [TritonTensor(t.name, t.data_type, t.dims[1:]) for t in inputs]
        outputs = [TritonTensor(t.name, t.data_type, t.dims[1:]) for t in outputs]
    return TritonModel(name, platform, max_batch, inputs, outputs, preferred,
                       {"trtcompile_version": __version__}, dict(files), why)


def _tensor(value: onnx.ValueInfoProto) -> TritonTensor:
    tensor_type = value.type.tensor_type
    data_type = TRITON_TYPES.get(tensor_type.elem_type)
    if data_type is None:
        raise InputError(f"'{value.name}' is of ONNX type "
                         f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}, which Triton "
                         "has no data type for")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                 for d in tensor_type.shape.dim) if tensor_type.HasField("shape") else (-1,)
    return TritonTensor(value.name, data_type, dims or (1,))


def batching(inputs: Sequence[TritonTensor], outputs: Sequence[TritonTensor],
             profiles: Sequence[Mapping[str, Mapping[str, Sequence[int]]]]) -> tuple[int, list[int]]:
    """``(max_batch_size, preferred batch sizes)``: the largest batch every profile's inputs reach
    (the least over inputs of the greatest over profiles) and the profiles' optimal batches, when
    the first dimension of every input and output is dynamic and some profile runs each input
    from batch 1; otherwise ``(0, [])``: Triton then passes shapes as the model declares them."""
    if not profiles or not inputs:
        return 0, []
    if any(not t.dims or t.dims[0] != -1 for t in [*inputs, *outputs]):
        return 0, []
    largest, optimal = [], set()
    for tensor in inputs:
        ranges = [profile[tensor.name] for profile in profiles if tensor.name in profile]
        if not ranges or min(r["min"][0] for r in ranges) != 1:
            return 0, []
        largest.append(max(r["max"][0] for r in ranges))
        optimal.update(r["opt"][0] for r in ranges)
    max_batch = min(largest)
    return max_batch, sorted(size for size in optimal if 1 < size <= max_batch)


def check_repository(out: str | os.PathLike, repo: str | os.PathLike) -> None:
    """Refuse a repository that cannot be written or is the compile's output folder itself
    (InputError, one line; nothing is created)."""
    from trtcompile.flow.outputs import check_output_location

    out, repo = Path(out), Path(repo)
    if os.path.lexists(repo) and os.path.lexists(out) and repo.resolve() == out.resolve():
        raise InputError(f"--triton {repo} is the compile's output folder; give a repository "
                         "folder of its own")
    check_output_location(repo, None, None)


def export_triton(out: str | os.PathLike, repo: str | os.PathLike, *, name: str | None = None,
                  backend: str = "auto", version: int = 1,
                  log: Callable[[str], None] | None = None) -> TritonExport:
    """Write the Triton model of the compile in ``out`` into the model repository ``repo`` (see
    the module's docstring); returns what was written. Every check runs before REPO is touched."""
    from trtcompile import fsutil

    out, repo = Path(out), Path(repo)
    model = plan_export(out, name=name, backend=backend, version=version)
    check_repository(out, repo)
    target = repo / model.name
    if os.path.lexists(target) and not fsutil.ours_unchanged(repo, model.name):
        raise InputError(f"{target} exists and is not a model an earlier export wrote (or it "
                         "changed since); remove it or choose another --model-name")
    with fsutil.OutputFolder(repo, protected=[out], report=model.name,
                             keep_others=True) as folder:
        staged = folder.staging / model.name
        staged.mkdir()
        (staged / "config.pbtxt").write_text(model.config_text())
        for relative, source in model.files.items():
            (staged / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staged / relative)
        published = folder.publish([model.name])
    written = ["config.pbtxt", *model.files]
    result = TritonExport(model, target, written, published.messages())
    for line in result.lines() if log is not None else ():
        log(line)
    return result


__all__ = ["MODEL_NAME", "TRITON_BACKENDS", "TRITON_TYPES", "TritonExport", "TritonModel",
           "TritonTensor", "batching", "check_repository", "default_name", "export_triton", "plan_export",
           "read_compile"]
