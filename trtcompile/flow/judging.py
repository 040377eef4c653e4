"""What a reduced-precision compile is judged on: the user's data where there is some.

An INT8 model is calibrated for the inputs it will see; judged elementwise on standard-normal
inputs (negative pixels, values far outside the calibrated range), it fails where INT8 clips by
design. So, with calibration samples, parity compares the input and optimized models on them:

* the **held-out** samples (the last 20%, :func:`trtcompile.calibration.holdout_split`), which
  calibration never saw; the same samples decide top-1 agreement;
* **all** the samples when there are too few to hold some out (fewer than 40: eight held out and
  at least 16 left to calibrate on): calibration and parity then see the same samples, and the
  report says so.

Each shape set parity checks (a profile's min, opt and max) takes up to :data:`PARITY_SAMPLES`
samples in batches of its batch size (repeating samples when the batch is larger than the set).
A shape set the samples do not fit (another image size) gets generated inputs drawn uniformly
within the samples' range, input by input. Without samples (a calibration cache alone), generated
inputs are drawn within the calibrated range of each input (``[-amax, amax]`` from the cache).

An FP16 compile given data (``--calib-data``) is judged on all of it: the same samples its
keep-list is measured on (``precision-fp16{keep=auto}``), since there is nothing to hold out from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

#: Samples elementwise parity compares at each shape set (all of them when there are fewer).
PARITY_SAMPLES = 32

#: Ops that move values without changing them: an input's calibrated range is that of the tensor
#: they lead to.
_LAYOUT_OPS = {"Transpose", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class ParitySamples:
    """Samples parity judges the optimized model on (a ``CalibrationData``), and whether
    calibration saw them (``measured``: the samples given for FP16 or BF16, which its keep-list
    is measured on)."""

    data: Any
    held_out: bool
    measured: bool = False
    #: The precision the measured samples were given for (``fp16``, ``bf16``).
    precision: str = "fp16"

    @property
    def count(self) -> int:
        return int(self.data.num_samples)

    def describe(self) -> str:
        """One phrase for the report and the terminal."""
        if self.measured:
            return (f"all {self.count} samples given for {self.precision.upper()} "
                    f"({self.data.source})")
        if self.held_out:
            return (f"{self.count} held-out calibration samples, never seen by calibration "
                    f"({self.data.source})")
        return (f"all {self.count} calibration samples (too few to hold some out: calibration "
                f"saw them too) ({self.data.source})")

    def to_dict(self) -> dict[str, Any]:
        if self.measured:
            return {"kind": "measured samples", "samples": self.count,
                    "source": str(self.data.source), "seen_by_calibration": True}
        return {"kind": "held-out calibration samples" if self.held_out else "calibration samples",
                "samples": self.count, "source": str(self.data.source),
                "seen_by_calibration": not self.held_out}

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Per floating-point input, the smallest and largest value of the samples."""
        return {name: (float(np.min(array)), float(np.max(array)))
                for name, array in self.data.arrays.items()
                if np.asarray(array).dtype.kind == "f" and np.asarray(array).size}

    def batches(self, shapes: Mapping[str, Sequence[int]] | None,
                limit: int = PARITY_SAMPLES) -> list[dict[str, np.ndarray]] | None:
        """Feed dicts of up to ``limit`` samples in batches of ``shapes``' batch size (the first
        dimension of the inputs; every sample in one batch when ``shapes`` is None), or None when
        the samples' other dimensions are not those of ``shapes``."""
        arrays = self.data.arrays
        count = self.count
        if not shapes:
            take = np.arange(min(count, limit))
            return [{name: np.asarray(array[take]) for name, array in arrays.items()}]
        batch = None
        for name, shape in shapes.items():
            array = arrays.get(name)
            if array is None:
                return None
            if not shape or list(array.shape[1:]) != [int(d) for d in shape[1:]]:
                return None
            if batch is not None and int(shape[0]) != batch:
                return None
            batch = int(shape[0])
        if batch is None or batch < 1:
            return None
        batches = []
        for start in range(0, max(min(count, limit), batch), batch):
            take = np.arange(start, start + batch) % count  # repeats samples for a large batch
            batches.append({name: np.asarray(array[take]) for name, array in arrays.items()})
        return batches


def parity_samples(resources: Mapping[str, Any], precision: str = "fp16") -> ParitySamples | None:
    """The samples parity judges a reduced-precision compile on, from the precision pass's
    resources: for INT8 the held-out samples, else all of them; for FP16 and BF16 (``precision``)
    the samples its keep-list was measured on (the data the user gave); else None."""
    calibration = resources.get("quantize-int8")
    measured = resources.get("precision-fp16")
    if calibration is None and getattr(measured, "num_samples", 0):
        return ParitySamples(measured, held_out=False, measured=True, precision=precision)
    if calibration is None:
        return None
    held_out = getattr(calibration, "held_out", None)
    if held_out is not None and held_out.num_samples:
        return ParitySamples(held_out, held_out=True)
    data = getattr(calibration, "data", None)
    if data is not None and data.num_samples:
        return ParitySamples(data, held_out=False)
    return None


def cached_input_ranges(model: onnx.ModelProto, resources: Mapping[str, Any]) -> dict[str, float]:
    """Input name -> calibrated ``amax`` from the calibration cache of an INT8 compile without
    samples: the input's own range, or that of the tensor a chain of layout ops
    (:data:`_LAYOUT_OPS`, each the single reader) leads it to. Empty when there is no cache."""
    calibration = resources.get("quantize-int8")
    path = getattr(calibration, "cache_path", None)
    if calibration is None or getattr(calibration, "data", None) is not None or not path:
        return {}
    if not Path(path).is_file():
        return {}
    from trtcompile.calibration import CalibrationCache

    ranges = CalibrationCache.load(path).ranges
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found = {}
    for value in model.graph.input:
        name = value.name
        for _ in range(len(model.graph.node) + 1):
            if name in ranges:
                found[value.name] = float(ranges[name])
                break
            nodes = readers.get(name, [])
            if len(nodes) != 1 or nodes[0].op_type not in _LAYOUT_OPS or nodes[0].domain not in ("", "ai.onnx"):
                break
            name = nodes[0].output[0]
    return found


def within_ranges(feeds: Mapping[str, np.ndarray], ranges: Mapping[str, tuple[float, float]],
                  seed: int) -> dict[str, np.ndarray]:
    """``feeds`` with each floating-point input named in ``ranges`` redrawn uniformly within its
    ``(low, high)`` (seeded, input by input)."""
    rng = np.random.default_rng(seed)
    drawn = dict(feeds)
    for name in sorted(feeds):
        array = np.asarray(feeds[name])
        if name in ranges and array.dtype.kind == "f":
            low, high = ranges[name]
            values = np.full(array.shape, low) if high <= low else rng.uniform(low, high, array.shape)
            drawn[name] = values.astype(array.dtype)
    return drawn


__all__ = ["PARITY_SAMPLES", "ParitySamples", "cached_input_ranges", "parity_samples",
           "within_ranges"]
