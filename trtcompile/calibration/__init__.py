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

from trtcompile.calibration.cache import (
    Calibration,
    CalibrationCache,
    model_fingerprint,
    resolve_ranges,
)
from trtcompile.calibration.constants import (
    CACHE_FORMAT,
    CACHE_VERSION,
    DEFAULT_BATCH_SIZE,
    DEFAULT_NUM_BINS,
    DEFAULT_PERCENTILE,
    METHODS,
    MIN_SAMPLES,
    QUANTIZED_LEVELS,
)
from trtcompile.calibration.data import (
    CalibrationData,
    InputSpec,
    calibration_data,
    has_fixed_batch,
    load_calibration_data,
    model_input_specs,
)
from trtcompile.calibration.ranges import (
    AbsHistogram,
    TensorStatistics,
    check_method,
    collect_ranges,
    entropy_amax,
    percentile_amax,
)
from trtcompile.calibration.tolerances import (
    HOLDOUT_FRACTION,
    MIN_HOLDOUT_SAMPLES,
    MIN_TOP1_AGREEMENT,
    PrecisionTolerances,
    holdout_split,
    parity_tolerances,
    precision_tolerances,
)

__all__ = ["AbsHistogram", "CACHE_FORMAT", "CACHE_VERSION", "Calibration", "CalibrationCache", "CalibrationData", "DEFAULT_BATCH_SIZE", "DEFAULT_NUM_BINS", "DEFAULT_PERCENTILE", "HOLDOUT_FRACTION", "InputSpec", "METHODS", "MIN_HOLDOUT_SAMPLES", "MIN_SAMPLES", "MIN_TOP1_AGREEMENT", "PrecisionTolerances", "QUANTIZED_LEVELS", "TensorStatistics", "calibration_data", "check_method", "collect_ranges", "entropy_amax", "has_fixed_batch", "holdout_split", "load_calibration_data", "model_fingerprint", "model_input_specs", "parity_tolerances", "percentile_amax", "precision_tolerances", "resolve_ranges"]
