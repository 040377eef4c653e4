"""Reading the NumPy files a user names (``.npz`` archives, ``.npy`` arrays) without trusting them.

Every array header is read and checked against the bytes its member holds before any array is
allocated: a malformed header, a member that is no array, an object array (which would need
pickle), or a 16-byte member whose header claims a 10^12-element array is one
:class:`~trtcompile.errors.InputError` line naming the file and the array, never a traceback and
never an attempt to allocate terabytes. Messages name the file and the problem only: they never
echo what the file holds (the file may be anything a flag was pointed at).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from trtcompile.errors import InputError

#: What ``np.savez`` writes, said in messages about files that are not that.
NPZ_HINT = "an .npz archive of .npy arrays, as np.savez writes"
#: The first bytes of every .npy file.
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ArrayHeader:
    """What a checked ``.npy`` header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of array data the header declares (Python integers: no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def _read_header(handle: IO[bytes], size: int, where: str) -> ArrayHeader:
    """Read the ``.npy`` header at the start of ``handle`` (``size`` bytes in all) and check it
    against the data that follows."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
    except (ValueError, EOFError, OSError):
        raise InputError(f"{where} is not a NumPy array (no .npy header)") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version == (3, 0) and hasattr(fmt, "_read_array_header"):  # UTF-8 field names; no public reader
        readers[version] = lambda stream: fmt._read_array_header(stream, version)
    reader = readers.get(version)
    if reader is None:
        raise InputError(f"{where}: .npy format version {version[0]}.{version[1]} is not one "
                         "NumPy writes")
    try:
        shape, _, dtype = reader(handle)
    except Exception:  # noqa: BLE001 - NumPy parses the header with ast: ValueError, SyntaxError,
        # tokenize's TokenError, RecursionError or MemoryError, depending on how it is broken
        raise InputError(f"{where}: its array header is malformed (not one np.save writes)") \
            from None
    if any(int(d) < 0 for d in shape):
        raise InputError(f"{where}: its array header is malformed (a negative dimension)")
    if dtype.hasobject:
        raise InputError(f"{where} holds Python objects, which are not loaded (they would need "
                         "pickle); save numeric arrays")
    header = ArrayHeader(tuple(int(d) for d in shape), dtype)
    have = size - handle.tell()
    if have < header.nbytes:
        raise InputError(f"{where}: its header declares {header.nbytes} bytes of array data but "
                         f"the file holds {max(have, 0)} (a truncated or corrupted file?)")
    return header


def check_npz(path: str | Path, label: str) -> dict[str, ArrayHeader]:
    """The arrays of the ``.npz`` at ``path`` by name, every header checked, nothing allocated.

    ``label`` starts every message (``--inputs x.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{label}: no such file")
    headers: dict[str, ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise InputError(f"{label}: member '{info.filename}' is not a NumPy array; "
                                     f"expected {NPZ_HINT}")
                name = info.filename[:-len(".npy")]
                with archive.open(info) as handle:
                    headers[name] = _read_header(handle, info.file_size, f"{label}: array '{name}'")
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - zipfile and zlib raise BadZipFile, zlib.error, EOFError,
        # OSError, NotImplementedError (compression) or RuntimeError (encryption)
        raise InputError(f"{label} is not a readable .npz file; expected {NPZ_HINT}") from None
    return headers


def read_npz(path: str | Path, label: str) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path`` by name, read after :func:`check_npz` accepted every
    header; any problem is one InputError line starting with ``label``."""
    headers = check_npz(path, label)
    arrays: dict[str, np.ndarray] = {}
    name = ""
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in headers:
                arrays[name] = archive[name]
    except MemoryError:
        raise InputError(f"{label}: array '{name}' ({headers[name].nbytes} bytes) does not fit in "
                         "memory") from None
    except Exception:  # noqa: BLE001 - a member whose compressed data or CRC is corrupted
        raise InputError(f"{label}: array '{name}' cannot be read (a corrupted file?)") from None
    return arrays


def check_array_files(path: str | Path, label: str) -> None:
    """Check the headers of the ``.npz``/``.npy`` file at ``path``, or of every such file in the
    folder ``path`` (what calibration data may be); a path that does not exist is left to the
    reader to report."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npz", ".npy"))
    else:
        files = [path] if path.is_file() else []
    for file in files:
        where = f"{label} {file}"
        try:
            with open(file, "rb") as handle:
                is_npy = handle.read(len(NPY_MAGIC)) == NPY_MAGIC
        except OSError as exc:
            raise InputError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        if is_npy:
            with open(file, "rb") as handle:
                _read_header(handle, file.stat().st_size, where)
        elif file.suffix.lower() == ".npz" or zipfile.is_zipfile(file):
            check_npz(file, where)
        # anything else: the reader says it is not a NumPy file


__all__ = ["ArrayHeader", "NPY_MAGIC", "NPZ_HINT", "check_array_files", "check_npz", "read_npz"]
