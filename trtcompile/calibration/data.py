"""Calibration samples: reading .npz/.npy/folders or arrays in memory, checked against the model's
inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile.calibration.constants import DEFAULT_BATCH_SIZE
from trtcompile.errors import InputError
from trtcompile.shapes import format_dims

# --------------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """A model input as calibration sees it: name, dtype, shape (None for dynamic dimensions)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def batch(self) -> int | None:
        """The fixed batch size (first dimension), or None if dynamic."""
        return self.shape[0] if self.shape else None


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The non-initializer inputs of ``model`` with dtypes and shapes."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


@dataclass
class CalibrationData:
    """Calibration samples: one array per model input, the first axis being the sample axis."""

    arrays: dict[str, np.ndarray]
    source: str = ""
    #: The fewest samples :meth:`validate` accepts by default: one. Any number calibrates (as
    #: TF-TRT's ``calibration_input_fn`` does); with fewer than 40 none are held out and parity
    #: runs on the samples calibration saw, which the report says
    #: (:func:`trtcompile.calibration.holdout_split`, :mod:`trtcompile.flow.judging`).
    min_samples: int = 1

    @property
    def num_samples(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def validate(self, specs: Sequence[InputSpec], min_samples: int | None = None) -> None:
        """Check names, dtypes, shapes and sample counts against the model inputs.

        Raises InputError with one line naming the first problem.
        """
        where = f"calibration data {self.source}" if self.source else "calibration data"
        if not self.arrays:
            raise InputError(f"{where} holds no arrays: save one array per model input "
                             "(np.savez(path, **{input_name: samples}))")
        expected = {spec.name for spec in specs}
        missing = [spec.name for spec in specs if spec.name not in self.arrays]
        unknown = sorted(set(self.arrays) - expected)
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise InputError(f"{where} does not match the model inputs ({'; '.join(parts)}); "
                             f"the model's inputs are: {', '.join(sorted(expected))}")
        counts = set()
        for spec in specs:
            array = self.arrays[spec.name]
            # String inputs come as NumPy unicode arrays, as ONNX Runtime takes them.
            strings = spec.dtype == np.dtype(object) and array.dtype.kind in "US"
            if array.dtype != spec.dtype and not strings:
                raise InputError(f"{where}: '{spec.name}' is {array.dtype} but the model input is "
                                 f"{spec.dtype}; save it as {spec.dtype}")
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"{where}: '{spec.name}' has shape {list(array.shape)} but the model input has "
                    f"rank {len(spec.shape)} {format_dims(spec.shape)}; the first axis is the "
                    "sample axis")
            for axis, (have, want) in enumerate(zip(array.shape[1:], spec.shape[1:]), start=1):
                if want is not None and have != want:
                    raise InputError(
                        f"{where}: '{spec.name}' has shape {list(array.shape)} but the model input "
                        f"is {format_dims(spec.shape)} (axis {axis}: {have} != {want})")
            if array.dtype.kind == "f" and not _all_finite(array):
                raise InputError(f"{where}: '{spec.name}' contains NaN or infinite values")
            counts.add(array.shape[0])
        if len(counts) > 1:
            detail = ", ".join(f"{name}: {a.shape[0]}" for name, a in self.arrays.items())
            raise InputError(f"{where}: inputs have different sample counts ({detail})")
        samples = counts.pop()
        min_samples = self.min_samples if min_samples is None else min_samples
        if samples < min_samples:
            raise InputError(f"{where} has {samples} samples; calibration needs at least "
                             f"{min_samples} (more is better: a few hundred is typical)")
        for spec in specs:
            if spec.batch is not None and samples < spec.batch:
                raise InputError(f"{where} has {samples} samples, fewer than the model's fixed "
                                 f"batch size {spec.batch}")

    def batch_size(self, specs: Sequence[InputSpec], requested: int = DEFAULT_BATCH_SIZE) -> int:
        """Samples per inference: the model's fixed batch size, else ``requested``."""
        fixed = {spec.batch for spec in specs if spec.batch is not None}
        if fixed:
            return fixed.pop()
        return max(1, min(requested, self.num_samples))

    def batches(self, batch_size: int, max_batches: int = 0,
                drop_last: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts of ``batch_size`` samples; a short last batch is dropped (fixed shapes)
        unless ``drop_last`` is false (a dynamic batch dimension takes it).

        Each batch is a copy; the pages of memory-mapped files it was read from are released,
        so a sample set larger than memory streams with one batch resident."""
        count = self.num_batches(batch_size, max_batches, drop_last)
        for index in range(count):
            lo, hi = index * batch_size, min((index + 1) * batch_size, self.num_samples)
            feed = {name: np.array(array[lo:hi], order="C") for name, array in self.arrays.items()}
            for array in self.arrays.values():
                _release_pages(array)
            yield feed

    def num_batches(self, batch_size: int, max_batches: int = 0, drop_last: bool = True) -> int:
        """How many batches :meth:`batches` yields."""
        count = self.num_samples // batch_size if drop_last else -(-self.num_samples // batch_size)
        return min(count, max_batches) if max_batches else count


def has_fixed_batch(specs: Sequence[InputSpec]) -> bool:
    """Whether some input fixes the batch size (then a short last batch cannot run)."""
    return any(spec.batch is not None for spec in specs)


#: Samples checked at a time for NaN and infinity (bounds the check's memory on large sets).
_FINITE_CHUNK = 64


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite, checked a chunk of samples at a time (memory-mapped pages
    are released after each chunk)."""
    for lo in range(0, max(array.shape[0], 1), _FINITE_CHUNK):
        if not np.isfinite(array[lo:lo + _FINITE_CHUNK]).all():
            return False
        _release_pages(array)
    return True


def _read_arrays(path: Path, single_input: str | None) -> dict[str, np.ndarray]:
    if path.stat().st_size == 0:
        raise InputError(f"calibration data {path} is empty")
    try:
        # .npy files are memory-mapped: calibration copies one batch at a time, so a large sample
        # set is streamed from disk instead of being held in memory (.npz members cannot be mapped).
        loaded = np.load(path, allow_pickle=False,
                         mmap_mode="r" if path.suffix.lower() == ".npy" else None)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"calibration data {path} is not a NumPy .npz/.npy file "
                         f"({str(exc).splitlines()[0]})") from None
    if isinstance(loaded, np.ndarray):
        if single_input is None:
            raise InputError(f"calibration data {path} is a single .npy array but the model has "
                             "several inputs; use an .npz mapping input names to arrays")
        return {single_input: loaded}
    with loaded:
        mapped = _map_npz_members(path, loaded.files)
        return {name: mapped[name] if name in mapped else loaded[name] for name in loaded.files}


def _map_npz_members(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Memory-map the members of an .npz that are stored uncompressed (``np.savez``), so they
    stream from disk like an .npy; compressed members (``np.savez_compressed``) and object arrays
    are left out (read whole)."""
    import zipfile

    mapped: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
            for name in names:
                try:
                    info = archive.getinfo(name + ".npy")
                except KeyError:
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    continue
                # Local file header: 30 bytes, then the file name and the extra field.
                handle.seek(info.header_offset + 26)
                name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
                handle.seek(info.header_offset + 30 + int(name_length) + int(extra_length))
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    continue
                if dtype.hasobject or not shape or 0 in shape:
                    continue
                mapped[name] = np.memmap(path, dtype=dtype, mode="r", offset=handle.tell(),
                                         shape=shape, order="F" if fortran else "C")
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return mapped


def _release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array after a batch was copied out of it, so
    streaming a large file keeps one batch in memory (pages are read again from the file when
    touched; a no-op for arrays in memory and where ``madvise`` is unavailable)."""
    import mmap

    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def calibration_data(samples: Any, model: onnx.ModelProto, *,
                     aliases: Mapping[str, str] | None = None,
                     min_samples: int = 1) -> CalibrationData:
    """Calibration samples from memory rather than files: an array (single-input model), a dict
    of arrays by input name, or batches from an iterable, a generator or a function returning one
    (TF-TRT's ``calibration_input_fn``), each batch an array, a tuple/list of arrays in the model's
    input order, or a dict. Batches are concatenated along the sample axis and validated against
    the model's inputs. ``aliases`` maps other names of the inputs (TensorFlow signature keys) to
    the model's. Any number of samples is taken (``min_samples``), as TF-TRT takes them."""
    specs = model_input_specs(model)
    names = [spec.name for spec in specs]
    aliases = dict(aliases or {})

    def named(batch: Any, index: int) -> dict[str, np.ndarray]:
        if isinstance(batch, Mapping):
            unknown = [key for key in batch if key not in names and key not in aliases]
            if unknown:
                raise InputError(f"calibration batch {index} names {', '.join(map(repr, unknown))}"
                                 f", not an input of the model (inputs: {', '.join(names)})")
            return {aliases.get(key, key): np.asarray(value) for key, value in batch.items()}
        values = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        if len(values) != len(names):
            raise InputError(f"calibration batch {index} has {len(values)} array(s); the model has "
                             f"{len(names)} input(s) ({', '.join(names)})")
        return {name: np.asarray(value) for name, value in zip(names, values)}

    if callable(samples):
        samples = samples()
    if isinstance(samples, (np.ndarray, Mapping)) or hasattr(samples, "__array__"):
        batches = [named(samples, 0)]
    else:
        try:
            batches = [named(batch, index) for index, batch in enumerate(samples)]
        except TypeError:
            raise InputError(f"calibration samples: expected arrays, a dict of arrays or an "
                             f"iterable of batches, got {type(samples).__name__}") from None
    if not batches:
        raise InputError("calibration samples: the input function yielded no batch")
    arrays = {}
    for name in batches[0]:
        try:
            arrays[name] = np.concatenate([batch[name] for batch in batches], axis=0)
        except (KeyError, ValueError) as exc:
            raise InputError(f"calibration samples of '{name}': batches disagree ({exc})") from None
    data = CalibrationData(arrays, source="calibration_input_fn", min_samples=min_samples)
    data.validate(specs)
    return data


def load_calibration_data(path: str | Path, model: onnx.ModelProto,
                          min_samples: int = 1) -> CalibrationData:
    """Read calibration samples for ``model`` from an .npz, an .npy or a folder of them.

    Arrays of several files are concatenated along the sample axis. The result is validated
    against the model's inputs (:meth:`CalibrationData.validate`).
    """
    path = Path(path)
    specs = model_input_specs(model)
    single_input = specs[0].name if len(specs) == 1 else None
    if not path.exists():
        raise InputError(f"calibration data not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npz", ".npy"))
        if not files:
            raise InputError(f"calibration data folder {path} holds no .npz or .npy files")
    else:
        files = [path]
    parts: dict[str, list[np.ndarray]] = {}
    for file in files:
        for name, array in _read_arrays(file, single_input).items():
            parts.setdefault(name, []).append(array)
    arrays = {}
    for name, chunks in parts.items():
        if len({c.shape[1:] for c in chunks}) > 1 or len({c.dtype for c in chunks}) > 1:
            raise InputError(f"calibration data {path}: files disagree on the shape or dtype of "
                             f"'{name}'")
        arrays[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
    data = CalibrationData(arrays, source=str(path))
    data.validate(specs, min_samples=min_samples)
    return data


