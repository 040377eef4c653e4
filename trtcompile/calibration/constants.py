"""Calibration's constants: methods, histogram size, sample counts, cache format."""

from __future__ import annotations

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

