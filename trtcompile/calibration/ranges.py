"""Activation statistics and range selection: minmax, entropy (KL divergence), percentile."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from trtcompile import progress as progress_display
from trtcompile.calibration.constants import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NUM_BINS,
    DEFAULT_PERCENTILE,
    METHODS,
    QUANTIZED_LEVELS,
)
from trtcompile.calibration.data import CalibrationData, has_fixed_batch, model_input_specs
from trtcompile.errors import InputError

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


