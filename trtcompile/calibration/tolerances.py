"""How outputs are compared at each precision, and the held-out split of calibration samples."""

from __future__ import annotations

from dataclasses import dataclass

from trtcompile.calibration.constants import MIN_SAMPLES
from trtcompile.calibration.data import CalibrationData
from trtcompile.errors import InputError

# --------------------------------------------------------------------------------------------
# Tolerances per precision
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionTolerances:
    """How a ``precision`` build is compared with FP32, elementwise:
    ``|candidate - reference| <= atol + atol_range * max|reference| + rtol * |reference|``, with
    ``max|reference|`` the largest magnitude of that output (the rule of
    :func:`trtcompile.verify.within_tolerance`, which applies it)."""

    atol: float
    rtol: float
    #: Fraction of each output's largest magnitude added to ``atol``.
    atol_range: float
    note: str


#: atol, rtol and range fraction of ``bf16`` parity (see :func:`precision_tolerances`).
BF16_TOLERANCE = 5e-2


def precision_tolerances(precision: str) -> PrecisionTolerances:
    """Parity tolerances for comparing a ``precision`` build with the FP32 model.

    * ``fp32``: rewrites reorder float arithmetic only; tight elementwise bounds, no range term.
    * ``fp16``: half precision keeps 11 significant bits (relative step 4.9e-4 per rounding) and the
      error of a deep network grows with the magnitude of its activations, so the absolute bound
      scales with each output's range: ``1e-2 + 1e-2 * max|ref| + 1e-2 * |ref|``.
    * ``bf16``: bfloat16 keeps 8 significant bits (relative step 3.9e-3 per rounding, 8 times
      float16's), with the same form: :data:`BF16_TOLERANCE` for each of the three terms.
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
    if precision == "bf16":
        return PrecisionTolerances(
            BF16_TOLERANCE, BF16_TOLERANCE, BF16_TOLERANCE,
            f"bf16: elementwise, atol={BF16_TOLERANCE:g} + {BF16_TOLERANCE:g} x output range, "
            f"rtol={BF16_TOLERANCE:g} (bfloat16, 8-bit significand: 8 times float16's rounding "
            "step; errors grow with the activations' magnitude)")
    if precision == "int8":
        return PrecisionTolerances(
            1e-3, 0.1, 0.1,
            "int8: elementwise against the FP32 input model on the same inputs, "
            "|int8 - fp32| <= 1e-3 + 0.1 x max|fp32 output| + 0.1 x |fp32| (127 levels per "
            "tensor); with --calib-data on the held-out samples, also by top-1 agreement")
    raise InputError(f"unknown precision '{precision}': use fp32, fp16, bf16 or int8")


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


