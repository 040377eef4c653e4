"""The two 16-bit float types precision-fp16 writes (``dtype=float16``, ``dtype=bfloat16``): what
each stores exactly, where ONNX allows it, and what TensorRT builds in it."""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx


@dataclass(frozen=True)
class Half:
    """One 16-bit float type: its ONNX and NumPy types and the limits the pass's rules use."""

    #: ``float16`` or ``bfloat16``: the ``dtype`` option's value and the word messages use.
    name: str
    elem: int
    np_type: type
    #: Suffix of the tensors and function specializations the pass creates (``x_fp16``).
    suffix: str
    #: The ``--precision`` value (and parity tolerances) of a graph computing in this type.
    precision: str
    #: Opset from which ``Cast`` (and every op) may produce the type.
    min_opset: int = 1
    #: Op -> attribute -> values ONNX Runtime's CPU provider has no kernel for in this type; parity
    #: runs there, so those nodes stay float32.
    no_cpu_kernel: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    #: Op -> why TensorRT builds no engine with it in this type (the node stays float32).
    no_engine_form: dict[str, str] = field(default_factory=dict)

    @property
    def finfo(self):
        return ml_dtypes.finfo(self.np_type)

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(self.finfo.max)

    @property
    def exact_integers(self) -> int:
        """Largest integer below which every integer is exact (2048 for float16, 256 for
        bfloat16)."""
        return 2 ** (int(self.finfo.nmant) + 1)

    @property
    def schema_type(self) -> str:
        """The type as ONNX schemas spell it (``tensor(bfloat16)``)."""
        return f"tensor({self.name})"

    def round(self, values: np.ndarray) -> np.ndarray:
        """``values`` rounded to this type, as ONNX Runtime's Python binding takes them: float16
        arrays, bfloat16 as float32 (the binding has no bfloat16 arrays; a bfloat16 model runs as
        its float32 emulation, :mod:`trtcompile.ir.bfloat16`)."""
        with np.errstate(over="ignore"):  # beyond the range is infinite: what is measured
            rounded = np.asarray(values).astype(self.np_type)
        return rounded if self.np_type is np.float16 else rounded.astype(np.float32)

    def problem(self, values: np.ndarray) -> str | None:
        """Why float32 ``values`` do not survive storage in this type (None when they do, rounded):
        magnitudes above its largest finite value overflow, nonzero ones below half its smallest
        subnormal become zero (where they are not negligible beside the tensor's largest)."""
        if values.dtype != np.float32 or values.size == 0:
            return None
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return None
        magnitudes = np.abs(finite)
        if float(magnitudes.max()) > self.max:
            return (f"overflow {self.name} (max |w| = {float(magnitudes.max()):.4g} > "
                    f"{self.max:g})")
        # A nonzero flushed to zero is lost where it matters for its tensor: a value within the
        # type's own precision (2^-11 for float16) of the tensor's largest magnitude. (A trained
        # kernel's few weights of 1e-9 beside weights of 0.1 are below that rounding anyway; a
        # scale or epsilon of 1e-9 is all its tensor holds.)
        with np.errstate(under="ignore"):
            flushed = (magnitudes > 0) & (finite.astype(self.np_type) == 0) & (
                magnitudes >= float(magnitudes.max()) * 2.0 ** -(int(self.finfo.nmant) + 1))
        if flushed.any():
            return (f"underflow {self.name} to zero (|w| = {float(magnitudes[flushed].min()):.3g}, "
                    f"below its smallest subnormal {float(self.finfo.smallest_subnormal):.3g})")
        return None

    def fits(self, values: np.ndarray) -> bool:
        """True if this type stores ``values`` without overflow or a nonzero becoming zero."""
        return self.problem(values) is None


FLOAT16 = Half(
    "float16", onnx.TensorProto.FLOAT16, np.float16, "fp16", "fp16",
    # Measured on ONNX Runtime 1.32, which fails at run time: "MLFloat16 data type is not
    # supported with ScatterND ... when reduction is 'add'".
    no_cpu_kernel={"ScatterND": {"reduction": frozenset({"add", "mul", "max", "min"})},
                   "ScatterElements": {"reduction": frozenset({"add", "mul"})}})

BFLOAT16 = Half(
    "bfloat16", onnx.TensorProto.BFLOAT16, ml_dtypes.bfloat16, "bf16", "bf16",
    # Cast-13 is the first to produce bfloat16.
    min_opset=13,
    # Measured on TensorRT-RTX 1.7 (strongly typed network, one-op models): every other op of
    # docs/precision.md's table builds; a bfloat16 ConvTranspose fails in the builder ("Could not
    # infer output types for operation: deconv").
    no_engine_form={"ConvTranspose": "TensorRT-RTX 1.7 builds no bfloat16 ConvTranspose "
                                     "(Myelin cannot type its bfloat16 weights)"})

#: The ``dtype`` option's values.
HALF_TYPES = {half.name: half for half in (FLOAT16, BFLOAT16)}
