"""The calibration cache and the resolution of ranges: a cache for this model and method, else
calibrate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from trtcompile import ir
from trtcompile.calibration.constants import CACHE_FORMAT, CACHE_VERSION
from trtcompile.calibration.data import CalibrationData
from trtcompile.calibration.ranges import check_method, collect_ranges
from trtcompile.errors import InputError

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

