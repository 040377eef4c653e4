"""The builder cache file (``--timing-cache FILE``, trtexec's ``--timingCacheFile``): created when
missing, reused when present, written back after the build, and reported.

Standard TensorRT keeps its *timing cache* there (the measured tactic timings; a build that finds
its timings in it skips measuring them). TensorRT-RTX does not time tactics (its timing cache
operations are no-ops since RTX 1.2): the same object carries its builder's serialized compilation
cache, so the file is kept and reported alike, with the builder's own words on what it used.

The file starts with one line naming the TensorRT that wrote it (``trtcompile builder cache
tensorrt_rtx 1.7.1.116``), then TensorRT's bytes, so a cache from another TensorRT version is
refused in one line before the build rather than silently ignored. A file without that line (one
trtexec wrote) is handed to TensorRT as it is, and refused when TensorRT cannot read it.
"""

from __future__ import annotations

import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtcompile import ir
from trtcompile.backend.log import LogCapture
from trtcompile.errors import InputError

#: First line of a cache file trtcompile writes: ``<MAGIC> <module> <version>``.
MAGIC = b"trtcompile builder cache"
_HEADER = re.compile(rb"^trtcompile builder cache (\S+) (\S+)\n")
#: Builder messages saying it could not use the cache it was given.
_REJECTED = ("Failed to deserialize timing cache", "The timing cache will not be used",
             "timing cache mismatch", "Incompatible timing cache")
_SERIALIZED = re.compile(r"Serialized (\d+) (bytes of [\w ]+cache|timing cache entries)")


@dataclass
class CacheFile:
    """A cache file as read before the build."""

    path: Path
    #: TensorRT's bytes (empty for a new cache).
    data: bytes = b""
    existed: bool = False
    #: ``(module, version)`` of the TensorRT that wrote it, when trtcompile wrote it.
    writer: tuple[str, str] | None = None


@dataclass
class CacheOutcome:
    """What the build did with the cache (report.json's ``engine.cache``)."""

    path: str
    #: ``created`` (no file before), ``reused`` (the builder read it) or ``rejected`` (it did not).
    status: str
    bytes_before: int
    bytes_after: int = 0
    #: Timing entries before and after the build (standard TensorRT; 0 on TensorRT-RTX).
    entries_before: int = 0
    entries_after: int = 0
    #: The builder's messages about the cache (what it serialized, why it did not use it).
    notes: list[str] = field(default_factory=list)

    @property
    def misses(self) -> int:
        """Timings the build measured and added (they were not in the cache)."""
        return max(self.entries_after - self.entries_before, 0)

    @property
    def verdict(self) -> str:
        """``hit`` (everything came from the cache), ``miss``, ``partial``, or the status when the
        builder keeps no timing entries."""
        if self.status != "reused" or not (self.entries_before or self.entries_after):
            return self.status if self.status != "reused" else "reused (no timing entries)"
        if self.misses == 0:
            return "hit"
        return "partial" if self.entries_before else "miss"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "verdict": self.verdict,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "entries_before": self.entries_before, "entries_after": self.entries_after,
                "hits": self.entries_before if self.verdict in ("hit", "partial") else 0,
                "misses": self.misses, "notes": list(self.notes)}


def read_cache(path: str | os.PathLike, trt: types.ModuleType) -> CacheFile:
    """The cache at ``path`` (an empty one when the file does not exist). InputError when it was
    written by another TensorRT."""
    path = Path(path)
    if not path.exists():
        return CacheFile(path)
    if path.is_dir():
        raise InputError(f"--timing-cache {path} is a folder; give a file path")
    data = path.read_bytes()
    match = _HEADER.match(data)
    if match is None:
        return CacheFile(path, data, existed=True)
    module, version = match.group(1).decode(), match.group(2).decode()
    current = (trt.__name__, str(getattr(trt, "__version__", "")))
    if (module, version) != current:
        raise InputError(f"--timing-cache {path} was written by {module} {version}, not by the "
                         f"{current[0]} {current[1]} in use; delete it or give another file")
    return CacheFile(path, data[match.end():], existed=True, writer=(module, version))


def attach(config: Any, cache: CacheFile) -> Any:
    """Give the builder config the cache; returns TensorRT's cache object."""
    timing_cache = config.create_timing_cache(cache.data)
    # ignore_mismatch=False: a cache of another device or version is not used (and said so).
    config.set_timing_cache(timing_cache, False)
    return timing_cache


def entries(timing_cache: Any) -> int:
    """Timing entries in TensorRT's cache object (0 where it cannot list them)."""
    try:
        return len(timing_cache.queryKeys())
    except Exception:  # noqa: BLE001 - TensorRT-RTX's no-op cache, older TensorRT
        return 0


def outcome(cache: CacheFile, timing_cache: Any, entries_before: int, config: Any,
            capture: LogCapture, trt: types.ModuleType) -> tuple[CacheOutcome, bytes]:
    """What the build did with the cache, and the file's new content (header and TensorRT's
    bytes). A file without trtcompile's header that TensorRT could not read is refused
    (InputError): it is not a cache of the TensorRT in use."""
    serialized = bytes(memoryview(config.get_timing_cache().serialize()))
    texts = [" ".join(text.split()) for text in capture.texts()]
    rejected = [text for text in texts if any(marker in text for marker in _REJECTED)]
    if rejected and cache.existed and cache.writer is None and trt.__name__ != "tensorrt_rtx":
        raise InputError(f"--timing-cache {cache.path} is not a cache {trt.__name__} "
                         f"{getattr(trt, '__version__', '')} can read ({rejected[0]}); delete it "
                         "or give another file")
    status = "created" if not cache.existed else ("rejected" if rejected else "reused")
    notes = list(dict.fromkeys(rejected + [t for t in texts if _SERIALIZED.search(t)]))
    record = CacheOutcome(path=str(cache.path), status=status, bytes_before=len(cache.data),
                          bytes_after=len(serialized), entries_before=entries_before,
                          entries_after=entries(config.get_timing_cache()), notes=notes)
    header = MAGIC + f" {trt.__name__} {getattr(trt, '__version__', '')}\n".encode()
    return record, header + serialized


def write_cache(path: str | os.PathLike, content: bytes) -> None:
    """Write the cache file atomically (a concurrent build reads the old one or the new one)."""
    ir.atomic_write_bytes(path, content)


__all__ = ["MAGIC", "CacheFile", "CacheOutcome", "attach", "entries", "outcome", "read_cache",
           "write_cache"]
