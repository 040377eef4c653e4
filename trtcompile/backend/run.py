"""Running engines: deserialize a plan (the supported-GPU check) and execute it once on host
arrays. Without a GPU the engine was built for, loading raises BackendError with
:data:`NO_GPU_MESSAGE` and the CUDA runtime's reason."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from trtcompile.backend.loader import load_tensorrt
from trtcompile.backend.log import LogCapture, capture_log, log_router
from trtcompile.errors import BackendError, InputError

#: Message of the error run_engine raises when no GPU can execute the engine.
NO_GPU_MESSAGE = "executing an engine needs a supported NVIDIA GPU; none is available here"

_CUDA_ERROR = re.compile(r"cudaError (\d+): ([^)\n]*)")


def run_engine(plan: bytes, feeds: Mapping[str, np.ndarray], profile: int = 0) -> dict[str, np.ndarray]:
    """Run a serialized engine once on ``feeds`` (input name -> array); returns outputs by name.

    ``profile`` is the optimization profile to run with (the feeds' shapes must lie within it).
    Needs a GPU the engine was built for: without one this raises BackendError saying so (with the
    CUDA runtime's reason when it gives one).
    """
    trt = load_tensorrt()
    return _execute(trt, deserialize_engine(plan), feeds, profile)


def deserialize_engine(plan: bytes) -> Any:
    """The engine of a serialized plan, ready to run: the supported-GPU check. Without a GPU the
    engine was built for this raises BackendError saying so (with the CUDA runtime's reason)."""
    trt = load_tensorrt()
    router = log_router(trt)
    with capture_log(trt) as capture:
        runtime = trt.Runtime(router)
        try:
            engine = runtime.deserialize_cuda_engine(bytes(plan))
        except Exception as error:  # noqa: BLE001 - reported below with the log
            capture.record("E", str(error))
            engine = None
    if engine is None:
        raise BackendError(_engine_load_failure(capture))
    return engine


def run_deserialized(engine: Any, feeds: Mapping[str, np.ndarray], profile: int = 0
                     ) -> dict[str, np.ndarray]:
    """Run an engine from :func:`deserialize_engine` once on ``feeds``; outputs by name."""
    return _execute(load_tensorrt(), engine, feeds, profile)


def current_compute_capability() -> str | None:
    """The compute capability of GPU 0 (``"8.9"``), asked of the CUDA driver; None when there is
    no driver or no GPU."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    if cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device) != 0 or \
            cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device) != 0:
        return None
    return f"{major.value}.{minor.value}"


def check_targets(plan_properties: dict, gpu: str | None, where: str) -> None:
    """InputError when a plan built for ``plan_properties['compute_capabilities']`` cannot run on
    a GPU of compute capability ``gpu`` (nothing to check when either is unknown)."""
    targets = plan_properties.get("compute_capabilities")
    if not targets or gpu is None or gpu in targets:
        return
    major = int(gpu.split(".")[0])
    if plan_properties.get("hardware_compatibility") == "ampere+" and major >= 8:
        return
    raise InputError(f"{where} was built for compute capabilit{'y' if len(targets) == 1 else 'ies'} "
                     f"{', '.join(targets)}; this GPU is {gpu}: compile again with "
                     f"--compute-capability {gpu}")


def _engine_load_failure(capture: LogCapture) -> str:
    errors = capture.errors()
    for text in errors:
        match = _CUDA_ERROR.search(text)
        if match:
            return f"{NO_GPU_MESSAGE} ({match.group(2).strip()})"
    if any("cuda" in text.lower() for text in errors):
        return f"{NO_GPU_MESSAGE} ({errors[-1]})"
    detail = errors[-1] if errors else "no reason given"
    return f"TensorRT could not load the engine plan: {detail}"


def _execute(trt: types.ModuleType, engine: Any, feeds: Mapping[str, np.ndarray],
             profile: int = 0) -> dict[str, np.ndarray]:
    """Copy inputs to the device, run the engine once with optimization profile ``profile``, copy
    outputs back."""
    from polygraphy import cuda

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    missing = [n for n in input_names if n not in feeds]
    if missing:
        raise InputError(f"no data for engine input(s) {', '.join(missing)}")
    if not 0 <= profile < max(engine.num_optimization_profiles, 1):
        raise InputError(f"optimization profile {profile} does not exist; the engine has "
                         f"{engine.num_optimization_profiles}")
    context = engine.create_execution_context()
    stream = cuda.Stream()
    device_buffers = []
    try:
        if profile:  # a new context starts on profile 0; tensor names are shared by all profiles
            context.set_optimization_profile_async(profile, stream.ptr)
        for name in input_names:
            host = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
            if engine.is_shape_inference_io(name):
                context.set_tensor_address(name, host.ctypes.data)
                continue
            if not context.set_input_shape(name, host.shape):
                raise InputError(f"input '{name}' has shape {list(host.shape)}, which the engine's "
                                 f"optimization profile {profile} does not allow")
            buffer = cuda.DeviceArray(shape=host.shape, dtype=host.dtype)
            buffer.copy_from(host, stream)
            context.set_tensor_address(name, buffer.ptr)
            device_buffers.append(buffer)
        outputs: dict[str, tuple[np.ndarray, Any]] = {}
        for name in names:
            if name in input_names:
                continue
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output '{name}' has a data-dependent shape {list(shape)}; "
                                   "running such engines is not supported")
            host = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
            buffer = cuda.DeviceArray(shape=shape, dtype=host.dtype)
            context.set_tensor_address(name, buffer.ptr)
            device_buffers.append(buffer)
            outputs[name] = (host, buffer)
        if not context.execute_async_v3(stream.ptr):
            raise BackendError("TensorRT failed to execute the engine")
        for host, buffer in outputs.values():
            buffer.copy_to(host, stream)
        stream.synchronize()
        return {name: host for name, (host, _) in outputs.items()}
    finally:
        for buffer in device_buffers:
            buffer.free()
        stream.free()
