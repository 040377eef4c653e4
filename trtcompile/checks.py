"""Validation of the numeric values a user gives (flags, :class:`CompileOptions`, manifests).

One function per kind of value, each returning the value or raising
:class:`~trtcompile.errors.InputError` with one line naming the option. A tolerance must be finite
and non-negative: ``nan`` makes every comparison false and Polygraphy's check then passes nothing
through as "passed"; ``inf`` accepts anything. Both would switch a check off while it reports
success, so they are refused rather than interpreted.

This module imports nothing heavy: the command validates flags with it before loading anything.
"""

from __future__ import annotations

import math
from typing import Any

from trtcompile.errors import InputError

#: Default parity tolerances, suited to FP32 rewrites that reorder arithmetic (BatchNorm folding,
#: fusion).
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

#: Seeds are NumPy ``RandomState`` seeds: 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def tolerance(name: str, value: Any) -> float:
    """A parity tolerance: a finite number >= 0."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} {value!r}: expected a finite number >= 0 (nan or inf would "
                         "switch the check off)")
    return float(value)


def seconds(name: str, value: Any) -> float:
    """A duration: a finite number of seconds > 0."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} {value!r}: expected a finite number of seconds > 0")
    return float(value)


def seed(name: str, value: Any) -> int:
    """A random seed: an integer in [0, 2**32 - 1]."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{name} {value!r}: expected an integer from 0 to {MAX_SEED}")
    return value


#: Opsets the TensorFlow lowering writes (tf2onnx's handlers the project is tested with).
MIN_OPSET, MAX_OPSET = 13, 18


def opset(name: str, value: Any) -> int:
    """An ONNX opset to lower to: an integer from MIN_OPSET to MAX_OPSET."""
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_OPSET <= value <= MAX_OPSET:
        raise InputError(f"{name} {value!r} is not supported (use {MIN_OPSET} to {MAX_OPSET})")
    return value


def count(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum \
            or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise InputError(f"{name} {value!r}: expected an integer {bound}")
    return value


#: Binary size suffixes accepted by :func:`parse_size` (trtexec's ``--memPoolSize`` takes MiB by
#: default and K/M/G suffixes).
_SIZE_SUFFIXES = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 2**10, "m": 2**20, "mib": 2**20,
                  "mb": 2**20, "g": 2**30, "gib": 2**30, "gb": 2**30}


def parse_size(name: str, text: str, *, default_unit: int = 1) -> int:
    """A memory size in bytes from ``1073741824``, ``1024M``, ``1G`` or ``512KiB`` (a number without
    a suffix is in units of ``default_unit`` bytes). Must be a positive whole number of bytes."""
    stripped = str(text).strip().lower()
    number = stripped.rstrip("kmgib")
    suffix = stripped[len(number):]
    if suffix not in _SIZE_SUFFIXES:
        raise InputError(f"{name} {text!r}: expected a size such as 1073741824, 1024M or 1G")
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"{name} {text!r}: expected a size such as 1073741824, 1024M or 1G") \
            from None
    unit = _SIZE_SUFFIXES[suffix] if suffix else default_unit
    if not math.isfinite(value) or value <= 0 or value * unit < 1:
        raise InputError(f"{name} {text!r}: expected a positive size")
    return int(value * unit)


def workspace_bytes(name: str, value: Any) -> int | None:
    """The builder's workspace limit in bytes: None (TensorRT's default) or a positive integer."""
    if value is None:
        return None
    return count(name, value, minimum=1)


def available_memory() -> int:
    """Memory available to new allocations, in bytes: ``MemAvailable`` of /proc/meminfo, else the
    free pages."""
    import os

    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def format_bytes(size: int) -> str:
    """``3.6 TiB``, ``512 MiB``, ``16 bytes``: a size for messages."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
