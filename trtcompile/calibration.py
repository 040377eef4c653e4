"""Post-training calibration for INT8: data loading, activation statistics, range selection, cache.

TensorRT 11 and TensorRT-RTX take no INT8 calibrator: the ranges are written into the graph as
QuantizeLinear/DequantizeLinear scales (see ``passes/quantize_int8.py``). This module computes them:

* :func:`load_calibration_data` reads ``.npz`` (input name -> array), ``.npy`` (single-input models)
  or a folder of such files; the first axis of every array is the sample axis. It checks names,
  dtypes, shapes and sample counts against the model's inputs and raises
  :class:`~trtcompile.errors.InputError` with one line on any mismatch.
* :func:`collect_ranges` runs the model on ONNX Runtime batch by batch (a tqdm progress bar on
  stderr), observes the requested tensors and returns one symmetric range ``amax`` per tensor,
  chosen by ``minmax`` (largest ``|x|``), ``entropy`` (TensorRT's KL-divergence calibration on a
  2048-bin histogram of ``|x|``) or ``percentile`` (e.g. the 99.99th percentile of ``|x|``).
* :class:`CalibrationCache` stores ranges as JSON with the method and a fingerprint of the model
  they were computed on; a cache for another model or method is refused.
* :func:`parity_tolerances` says how outputs are compared at each precision.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtcompile import ir
from trtcompile import progress as progress_display
from trtcompile.errors import InputError
from trtcompile.shapes import format_dims

#: Calibration methods, in the order the CLI lists them.
METHODS = ("entropy", "minmax", "percentile")

#: Bins of the ``|x|`` histogram (TensorRT's entropy calibrator uses 2048).
DEFAULT_NUM_BINS = 2048

#: Quantized levels of the positive half of symmetric int8 (``|q| <= 127``).
QUANTIZED_LEVELS = 128

#: Default percentile of ``|x|`` for the ``percentile`` method.
DEFAULT_PERCENTILE = 99.99

#: Fewer samples than this make ranges that say more about the samples than about the data.
MIN_SAMPLES = 16

#: Batch size used when the model's batch dimension is dynamic.
DEFAULT_BATCH_SIZE = 32

CACHE_FORMAT = "trtcompile-calibration-cache"
CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Tolerances per precision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionTolerances:
    """How a ``precision`` build is compared with FP32, elementwise:
    ``|candidate - reference| <= atol + atol_range * max|reference| + rtol * |reference|``."""

    atol: float
    rtol: float
    #: Fraction of each output's largest magnitude added to ``atol``.
    atol_range: float
    note: str


def precision_tolerances(precision: str) -> PrecisionTolerances:
    """Parity tolerances for comparing a ``precision`` build with the FP32 model.

    * ``fp32``: rewrites reorder float arithmetic only; tight elementwise bounds, no range term.
    * ``fp16``: half precision keeps 11 significant bits (relative step 4.9e-4 per rounding) and the
      error of a deep network grows with the magnitude of its activations, so the absolute bound
      scales with each output's range: ``1e-2 + 1e-2 * max|ref| + 1e-2 * |ref|``.
    * ``int8``: 127 levels per tensor; the error is a few percent of the output's range (ResNet50:
      1.5-2%), bounded by ``1e-3 + 0.1 * max|ref| + 0.1 * |ref|``. Never infinite: a check that
      cannot fail is no check. Where calibration data is given, the held-out samples also decide
      by top-1 agreement (see :func:`holdout_split` and ``trtcompile.flow``).
    """
    precision = precision.lower()
    if precision == "fp32":
        return PrecisionTolerances(1e-4, 1e-3, 0.0,
                                   "fp32: elementwise, atol=1e-4 rtol=1e-3 (float reordering only)")
    if precision == "fp16":
        return PrecisionTolerances(
            1e-2, 1e-2, 1e-2,
            "fp16: elementwise, atol=1e-2 + 1e-2 x output range, rtol=1e-2 (half precision, "
            "11-bit mantissa; errors grow with the activations' magnitude)")
    if precision == "int8":
        return PrecisionTolerances(
            1e-3, 0.1, 0.1,
            "int8: elementwise, atol=1e-3 + 0.1 x output range, rtol=0.1 (127 levels per tensor); "
            "with --calib-data also top-1 agreement on held-out samples")
    raise InputError(f"unknown precision '{precision}': use fp32, fp16 or int8")


def parity_tolerances(precision: str) -> tuple[float, float, str]:
    """``(atol, rtol, note)`` of :func:`precision_tolerances` (without the range term)."""
    tolerances = precision_tolerances(precision)
    return tolerances.atol, tolerances.rtol, tolerances.note


#: Share of the calibration samples held out from calibration to judge INT8 by top-1 agreement.
HOLDOUT_FRACTION = 0.2

#: Fewest held-out samples for a top-1 agreement figure worth reporting.
MIN_HOLDOUT_SAMPLES = 8

#: Top-1 agreement with the FP32 model below which an INT8 build fails its check.
MIN_TOP1_AGREEMENT = 0.9


def holdout_split(data: CalibrationData, fraction: float = HOLDOUT_FRACTION,
                  min_calibration: int = MIN_SAMPLES) -> tuple[CalibrationData, CalibrationData | None]:
    """``(calibration, held_out)``: the last ``fraction`` of the samples held out, when enough remain
    to calibrate on (``min_calibration``) and to judge by (:data:`MIN_HOLDOUT_SAMPLES`); else
    ``(data, None)``. Calibration never sees the held-out samples."""
    total = data.num_samples
    held = int(total * fraction)
    if held < MIN_HOLDOUT_SAMPLES or total - held < min_calibration:
        return data, None
    keep = total - held
    calibration = CalibrationData({k: v[:keep] for k, v in data.arrays.items()},
                                  source=f"{data.source} (samples 0-{keep - 1})")
    held_out = CalibrationData({k: v[keep:] for k, v in data.arrays.items()},
                               source=f"{data.source} (held-out samples {keep}-{total - 1})")
    return calibration, held_out


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
    #: The fewest samples :meth:`validate` accepts by default (samples given in memory, as
    #: TF-TRT's ``calibration_input_fn``, may be any number: see :func:`calibration_data`).
    min_samples: int = MIN_SAMPLES

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
            if array.dtype != spec.dtype:
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
                          min_samples: int = MIN_SAMPLES) -> CalibrationData:
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


# --------------------------------------------------------------------------------------------
# Statistics and range selection
# --------------------------------------------------------------------------------------------


class AbsHistogram:
    """Running histogram of ``|x|`` over ``[0, upper)`` with a fixed number of bins.

    The upper edge is set by the first batch and doubles (merging neighbouring bins) whenever a
    later batch exceeds it, so one pass over the data suffices and no sample is clipped.

    Exact zeros are counted apart (``zeros``), not in bin 0: they quantize exactly at any range,
    and after a ReLU they are half the mass, whose spike would dominate the entropy search and pull
    the threshold far below the data (as ``skip_zeros`` does in NVIDIA's pytorch-quantization).
    """

    def __init__(self, num_bins: int = DEFAULT_NUM_BINS):
        if num_bins < QUANTIZED_LEVELS:
            raise ValueError(f"histogram needs at least {QUANTIZED_LEVELS} bins")
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.upper = 0.0
        self.amax = 0.0
        self.zeros = 0

    def add(self, values: np.ndarray) -> None:
        magnitude = np.abs(np.asarray(values, dtype=np.float32)).ravel()
        nonzero = magnitude[magnitude > 0]
        self.zeros += magnitude.size - nonzero.size
        if nonzero.size == 0:
            return
        magnitude = nonzero
        batch_max = float(magnitude.max())
        self.amax = max(self.amax, batch_max)
        if self.upper == 0.0:
            self.upper = batch_max
        elif batch_max > self.upper:
            self._grow(batch_max)
        index = np.minimum((magnitude * (self.num_bins / self.upper)).astype(np.int64),
                           self.num_bins - 1)
        self.counts += np.bincount(index, minlength=self.num_bins)

    def _grow(self, new_max: float) -> None:
        factor = 1 << max(0, math.ceil(math.log2(new_max / self.upper)))
        while self.upper * factor < new_max:  # guards log2 rounding
            factor <<= 1
        if factor >= self.num_bins:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            merged[0] = self.counts.sum()
        else:
            merged = np.zeros(self.num_bins, dtype=np.int64)
            sums = self.counts.reshape(self.num_bins // factor, factor).sum(axis=1) \
                if self.num_bins % factor == 0 else np.add.reduceat(
                    self.counts, np.arange(0, self.num_bins, factor))
            merged[:len(sums)] = sums
        self.counts = merged
        self.upper *= factor

    @property
    def bin_width(self) -> float:
        return self.upper / self.num_bins


def entropy_amax(counts: np.ndarray, bin_width: float,
                 quantized_levels: int = QUANTIZED_LEVELS) -> float:
    """TensorRT's entropy calibration: the threshold minimizing KL(P || Q) over a ``|x|`` histogram.

    For each candidate ``i`` (number of bins kept, from ``quantized_levels`` to all): P is the
    histogram of the first ``i`` bins with everything beyond folded into bin ``i-1`` (clipping);
    Q is the same ``i`` bins merged into ``quantized_levels`` levels and spread back evenly over the
    bins that were non-empty. The threshold is ``(i + 0.5) * bin_width`` of the best candidate.

    Discrete data (fewer occupied bins than quantized levels, e.g. images with a few intensity
    levels) keeps its full range: there the search is degenerate, since folding all the mass into
    the first level's bin makes P a single spike that Q matches exactly (KL = 0). For the same
    reason a candidate whose kept bins hold mass in one quantized level only is skipped: data
    bounded away from zero (a global average pool of positive features, ``|x| >= 0.4``) would
    otherwise get the threshold just above its smallest value, everything folded into one spike.
    """
    counts = np.asarray(counts, dtype=np.float64)
    num_bins = len(counts)
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return 0.0
    last = int(nonzero[-1]) + 1  # bins beyond the last non-empty one change nothing
    if last <= quantized_levels or nonzero.size < quantized_levels:
        return last * bin_width
    total = counts.sum()
    best_i, best_kl = last, math.inf
    for i in range(quantized_levels, last + 1):
        reference = counts[:i].copy()
        reference[i - 1] += counts[i:].sum()
        is_nonzero = reference != 0
        level = (np.arange(i) * quantized_levels) // i
        level_sum = np.bincount(level, weights=counts[:i], minlength=quantized_levels)
        if np.count_nonzero(level_sum) < 2:
            # All kept mass in one level: Q is a flat block there and matches the spike of
            # folded outliers exactly (KL = 0) however much is clipped.
            continue
        level_nonzero = np.bincount(level, weights=is_nonzero, minlength=quantized_levels)
        spread = np.divide(level_sum, level_nonzero, out=np.zeros_like(level_sum),
                           where=level_nonzero > 0)
        candidate = np.where(is_nonzero, spread[level], 0.0)
        kl = _kl_divergence(reference / total, candidate)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return min((best_i + 0.5) * bin_width, num_bins * bin_width)


def _kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """KL(P || Q) after normalizing Q and smoothing empty bins of Q where P has mass."""
    q_sum = q.sum()
    if q_sum <= 0:
        return math.inf
    q = q / q_sum
    p = p / p.sum()
    support = p > 0
    q = np.where(support & (q <= 0), eps, q)
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def percentile_amax(counts: np.ndarray, bin_width: float, percentile: float) -> float:
    """The ``percentile`` of ``|x|`` read off the histogram, interpolating inside the bin."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    target = total * percentile / 100.0
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, target, side="left"))
    index = min(index, len(counts) - 1)
    before = cumulative[index - 1] if index else 0.0
    inside = (target - before) / counts[index] if counts[index] else 1.0
    return (index + float(np.clip(inside, 0.0, 1.0))) * bin_width


@dataclass
class TensorStatistics:
    """What calibration observed of one tensor."""

    amax: float = 0.0
    histogram: AbsHistogram | None = None

    def add(self, values: np.ndarray) -> None:
        if self.histogram is not None:
            self.histogram.add(values)
            self.amax = self.histogram.amax
        elif values.size:
            self.amax = max(self.amax, float(np.abs(values).max()))

    def range(self, method: str, percentile: float = DEFAULT_PERCENTILE) -> float:
        """The symmetric range ``amax`` this tensor quantizes to under ``method``."""
        if method == "minmax" or self.histogram is None:
            return self.amax
        if self.histogram.upper == 0.0:
            return 0.0
        if method == "entropy":
            return min(entropy_amax(self.histogram.counts, self.histogram.bin_width), self.amax)
        if method == "percentile":
            return min(percentile_amax(self.histogram.counts, self.histogram.bin_width,
                                       percentile), self.amax)
        raise ValueError(f"unknown calibration method '{method}'")


def check_method(method: str, percentile: float = DEFAULT_PERCENTILE) -> None:
    """Raise InputError unless ``method`` (and ``percentile``) are usable."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}': use {', '.join(METHODS)}")
    if method == "percentile" and not 0.0 < percentile <= 100.0:
        raise InputError(f"calibration percentile must be in (0, 100], got {percentile:g}")


def collect_ranges(model: onnx.ModelProto, tensor_names: Sequence[str], data: CalibrationData, *,
                   method: str = "entropy", percentile: float = DEFAULT_PERCENTILE,
                   num_bins: int = DEFAULT_NUM_BINS, batch_size: int = DEFAULT_BATCH_SIZE,
                   max_batches: int = 0, progress: bool = True) -> dict[str, float]:
    """Run ``model`` on the calibration data and return ``{tensor: amax}`` for ``tensor_names``.

    The observed tensors are added as extra graph outputs of a copy of the model, which ONNX
    Runtime runs on CPU one batch at a time; a progress bar over batches goes to stderr.
    """
    import onnxruntime as ort
    from tqdm import tqdm

    check_method(method, percentile)
    specs = model_input_specs(model)
    data.validate(specs, min_samples=1)
    observed = onnx.ModelProto()
    observed.CopyFrom(model)
    existing_outputs = {o.name for o in observed.graph.output}
    for name in tensor_names:
        if name not in existing_outputs:
            observed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(observed.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    statistics = {name: TensorStatistics(histogram=None if method == "minmax"
                                         else AbsHistogram(num_bins))
                  for name in tensor_names}
    size = data.batch_size(specs, batch_size)
    drop_last = has_fixed_batch(specs)
    total = data.num_batches(size, max_batches, drop_last)
    names = list(tensor_names)
    with tqdm(total=total, desc="calibrating", unit="batch", file=sys.stderr,
              disable=progress_display.tqdm_disable(progress), leave=False) as bar:
        for feed in data.batches(size, max_batches, drop_last):
            for name, values in zip(names, session.run(names, feed)):
                statistics[name].add(values)
            bar.update(1)
    return {name: stats.range(method, percentile) for name, stats in statistics.items()}


# --------------------------------------------------------------------------------------------
# Model fingerprint and cache
# --------------------------------------------------------------------------------------------


def model_fingerprint(model: onnx.ModelProto) -> str:
    """A digest of the model's graph and local functions (structure and weights)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(model.graph.SerializeToString(deterministic=True))
    for function in model.functions:
        digest.update(function.SerializeToString(deterministic=True))
    return digest.hexdigest()


@dataclass
class CalibrationCache:
    """Activation ranges computed for one model by one method, stored as JSON."""

    method: str
    model_fingerprint: str
    ranges: dict[str, float] = field(default_factory=dict)
    percentile: float | None = None
    num_samples: int = 0

    def to_json(self) -> str:
        return json.dumps({
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "method": self.method,
            "percentile": self.percentile, "model_fingerprint": self.model_fingerprint,
            "num_samples": self.num_samples,
            "ranges": {name: float(amax) for name, amax in sorted(self.ranges.items())},
        }, indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the cache atomically."""
        return ir.atomic_write_bytes(path, self.to_json().encode())

    @classmethod
    def load(cls, path: str | Path) -> CalibrationCache:
        """Read a cache file; InputError if it is not one."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"calibration cache {path} is unreadable ({exc}); delete it to "
                             "recalibrate") from None
        if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
            raise InputError(f"calibration cache {path} is not a trtcompile calibration cache")
        if payload.get("version") != CACHE_VERSION:
            raise InputError(f"calibration cache {path} has version {payload.get('version')}, "
                             f"expected {CACHE_VERSION}; delete it to recalibrate")
        try:
            ranges = {str(k): float(v) for k, v in payload["ranges"].items()}
            return cls(method=str(payload["method"]),
                       model_fingerprint=str(payload["model_fingerprint"]), ranges=ranges,
                       percentile=payload.get("percentile"),
                       num_samples=int(payload.get("num_samples", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"calibration cache {path} is malformed ({exc}); delete it to "
                             "recalibrate") from None

    def check(self, path: str | Path, fingerprint: str, method: str,
              percentile: float | None) -> None:
        """Refuse a cache computed for another model or with another method."""
        if self.model_fingerprint != fingerprint:
            raise InputError(
                f"calibration cache {path} was computed for a different model (fingerprint "
                f"{self.model_fingerprint[:12]}, this model {fingerprint[:12]}); delete it or "
                "point --calib-cache elsewhere to recalibrate")
        if self.method != method or (method == "percentile" and self.percentile != percentile):
            used = self.method + (f" {self.percentile:g}" if self.method == "percentile" else "")
            asked = method + (f" {percentile:g}" if method == "percentile" else "")
            raise InputError(f"calibration cache {path} holds {used} ranges but {asked} was "
                             "requested; delete it or use the same method")


@dataclass
class Calibration:
    """What ``quantize-int8`` reads from ``PassContext.resources["quantize-int8"]``.

    ``data`` are the samples (may be None when a complete cache is given); ``cache_path`` is read
    when it exists and written after calibrating; ``progress`` shows the bar on stderr.
    """

    data: CalibrationData | None = None
    cache_path: Path | None = None
    progress: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # filled by the pass: where ranges came from
    #: Samples kept out of calibration to judge the quantized model by (:func:`holdout_split`).
    held_out: CalibrationData | None = None


def resolve_ranges(model: onnx.ModelProto, tensor_names: Sequence[str], calibration: Calibration,
                   *, method: str, percentile: float, num_bins: int, batch_size: int,
                   max_batches: int) -> tuple[dict[str, float], str]:
    """Ranges for ``tensor_names``: from a valid cache if it covers them, else by calibrating.

    Returns the ranges and where they came from (``"cache"`` or ``"calibration"``). Writes the
    cache after calibrating when a cache path is set.
    """
    check_method(method, percentile)
    fingerprint = model_fingerprint(model)
    stored_percentile = percentile if method == "percentile" else None
    cache_path = Path(calibration.cache_path) if calibration.cache_path else None

    def cached() -> dict[str, float] | None:
        """The ranges of a valid, complete cache at ``cache_path`` (None: calibrate)."""
        if cache_path is None or not cache_path.exists():
            return None
        cache = CalibrationCache.load(cache_path)
        cache.check(cache_path, fingerprint, method, stored_percentile)
        missing = [name for name in tensor_names if name not in cache.ranges]
        if not missing:
            return {name: cache.ranges[name] for name in tensor_names}
        if calibration.data is None:
            raise InputError(f"calibration cache {cache_path} lacks ranges for {len(missing)} "
                             f"tensors (e.g. '{missing[0]}'); give calibration data to recalibrate")
        return None

    # The cache is written atomically, so reading it needs no lock: a reader sees the old file or
    # the new one, never part of one.
    ranges = cached()
    if ranges is not None:
        return ranges, "cache"
    if calibration.data is None:
        raise InputError("quantize-int8 needs calibration data (--calib-data) or an existing "
                         "calibration cache (--calib-cache)")
    if cache_path is None:
        return _calibrate(model, tensor_names, calibration, method=method, percentile=percentile,
                          num_bins=num_bins, batch_size=batch_size,
                          max_batches=max_batches), "calibration"
    # Processes sharing a cache file calibrate one at a time: the first writes it, the ones that
    # waited for the lock read what it wrote instead of calibrating again.
    with ir.exclusive_lock(cache_path.with_name(cache_path.name + ".lock")):
        ranges = cached()
        if ranges is not None:
            return ranges, "cache"
        ranges = _calibrate(model, tensor_names, calibration, method=method,
                            percentile=percentile, num_bins=num_bins, batch_size=batch_size,
                            max_batches=max_batches)
        CalibrationCache(method=method, model_fingerprint=fingerprint, ranges=ranges,
                         percentile=stored_percentile,
                         num_samples=calibration.data.num_samples).save(cache_path)
    return ranges, "calibration"


def _calibrate(model: onnx.ModelProto, tensor_names: Sequence[str], calibration: Calibration, *,
               method: str, percentile: float, num_bins: int, batch_size: int,
               max_batches: int) -> dict[str, float]:
    return collect_ranges(model, tensor_names, calibration.data, method=method,
                          percentile=percentile, num_bins=num_bins, batch_size=batch_size,
                          max_batches=max_batches, progress=calibration.progress)

__all__ = [
    "CACHE_FORMAT", "DEFAULT_NUM_BINS", "DEFAULT_PERCENTILE", "METHODS", "MIN_SAMPLES",
    "AbsHistogram", "Calibration", "CalibrationCache", "CalibrationData", "InputSpec",
    "TensorStatistics", "check_method", "collect_ranges", "entropy_amax", "load_calibration_data",
    "has_fixed_batch", "model_fingerprint", "model_input_specs", "parity_tolerances", "percentile_amax",
    "PrecisionTolerances", "precision_tolerances", "holdout_split",
    "resolve_ranges",
]
