"""Records of written files, path relations, and the files a user names (written whole, devices
and FIFOs written into, never replaced)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtcompile.errors import InputError

#: The lock file publishing holds (``fcntl.flock``) inside OUT; removed when released.
LOCK_NAME = ".trtcompile.lock"
#: Prefix of the staging folders inside OUT (one per compile in progress).
STAGING_PREFIX = ".trtcompile-staging."
#: The manifest inside OUT: what the last compile wrote there, with sizes and SHA-256 digests.
MANIFEST_NAME = ".trtcompile-outputs.json"
#: Version of the manifest's format.
MANIFEST_VERSION = 1
#: Suffix given to a user's file moved aside because the compile writes its name.
ASIDE_SUFFIX = ".orig"
#: Seconds a compile waits for another one publishing into the same OUT before it refuses.
LOCK_TIMEOUT = 300.0

_OWNER = ".owner"  # inside a staging folder: locked while its compile lives
_TRASH = ".replaced"  # inside a staging folder: OUT's entries this publish removed or replaced
_CREATING_PREFIX = ".trtcompile-new."  # a staging folder not yet locked: sweeping skips it
_HASH_CHUNK = 1 << 20
_LOCK_POLL = 0.05


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def record(path: str | os.PathLike) -> dict[str, Any] | None:
    """What ``path`` holds, to tell later whether it changed: a file ``{"size", "sha256"}``, a
    folder ``{"files": {relative path: record}}`` (every file below it, symbolic links as
    ``{"link": target}``, empty folders as ``{"folder": true}``), a symbolic link ``{"link":
    target}``, anything else ``{"type": kind}``; None when nothing is there. Links are never
    followed, so a record never describes anything outside ``path``."""
    path = Path(path)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return {"link": os.readlink(path)}
    if stat.S_ISREG(info.st_mode):
        return {"size": info.st_size, "sha256": _sha256(path)}
    if stat.S_ISDIR(info.st_mode):
        files: dict[str, Any] = {}
        for folder, subfolders, names in os.walk(path):
            relative = Path(folder).relative_to(path)
            if not subfolders and not names and folder != str(path):
                files[relative.as_posix()] = {"folder": True}
            for name in names + [s for s in subfolders if os.path.islink(os.path.join(folder, s))]:
                files[(relative / name).as_posix()] = record(Path(folder) / name)
        return {"files": dict(sorted(files.items()))}
    return {"type": _kind(info.st_mode)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unchanged(path: Path, recorded: Any) -> bool:
    """True if ``path`` still holds what ``recorded`` describes (the size is compared first, so a
    changed file of another size is not hashed)."""
    if not isinstance(recorded, dict):
        return False
    if "sha256" in recorded:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_size != recorded.get("size"):
            return False
    return record(path) == recorded


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "folder"), (stat.S_ISREG, "file")):
        if test(mode):
            return name
    return "special file"


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(path))


def _within(inner: str, outer: str) -> bool:
    """True if real path ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _same(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    if _real(first) == _real(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _writes_regular(path: str | os.PathLike) -> bool:
    """True if writing ``path`` creates or replaces a regular file (not a device, FIFO, socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def check_no_collisions(targets: Mapping[str, str | os.PathLike],
                        compile_outputs: Sequence[str | os.PathLike],
                        inputs: Sequence[str | os.PathLike],
                        may_equal: Mapping[str, str | os.PathLike] | None = None) -> None:
    """Refuse, before any work, copies and outputs that would overwrite each other or an input.

    ``targets`` maps a flag (``--save-engine``) to the file the user asked for; ``compile_outputs``
    are the paths the compile writes into OUT (files and folders); ``inputs`` the input model(s);
    ``may_equal`` maps a flag to the one compile output it may name because it gets the same
    bytes (``--report-json OUT/report.json``). Raises :class:`InputError` naming both paths when a
    target is an input, is or lies inside a compile output, or is another target's file, and when
    an input is or lies inside a compile output. Devices, FIFOs and sockets are written into, not
    replaced, so two copies may both name ``/dev/null``.
    """
    allowed = {flag: _real(path) for flag, path in (may_equal or {}).items()}
    seen: dict[str, tuple[str, str | os.PathLike]] = {}
    for flag, target in targets.items():
        for source in inputs:
            if _same(target, source):
                raise InputError(f"{flag} {target} would overwrite the input model {source}; "
                                 "give another path")
        if not _writes_regular(target):
            continue
        real = _real(target)
        for output in compile_outputs:
            if _within(real, _real(output)) and allowed.get(flag) != _real(output):
                raise InputError(f"{flag} {target} would overwrite the compile's own "
                                 f"{Path(output).name}; choose another name")
        if real in seen:
            other_flag, other = seen[real]
            raise InputError(f"{other_flag} {other} and {flag} {target} name the same file; "
                             "give them different paths")
        seen[real] = (flag, target)
    for source in inputs:
        for output in compile_outputs:
            if _within(_real(source), _real(output)) or _same(source, output):
                raise InputError(f"the compile writes {output}, which would overwrite the input "
                                 f"model {source}; move the model or choose another -o folder")


# --------------------------------------------------------------------------------------------
# Files the user names
# --------------------------------------------------------------------------------------------


def write_user_file(path: str | os.PathLike, data: bytes, flag: str | None = None) -> Path:
    """Write ``data`` to a file the user named (``--save-engine``, ``--report-json``, ...).

    A regular file or a new path gets a temporary file in the same folder and a rename (readers
    never see half a file; an existing file keeps its permissions; a symbolic link stays a link
    and its target is written). A character or block device (``/dev/null``) and a FIFO with a
    reader are written into, never replaced. A FIFO nobody reads, a socket and a folder are
    refused with :class:`InputError`, as is any write error (``/dev/full``: no space). ``flag``
    names the option in messages. Returns the path written.
    """
    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"cannot write {label} ({exc.strerror or exc})") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"{label} is a folder; give a file path")
    if info is not None and stat.S_ISSOCK(info.st_mode):
        raise InputError(f"{label} is a socket; give a file or a FIFO")
    try:
        if info is None or stat.S_ISREG(info.st_mode):
            _replace_file(Path(_real(path)), data, info)
        elif stat.S_ISFIFO(info.st_mode):
            _write_fifo(path, data, label)
        else:  # a character or block device: write into it, no O_CREAT, no O_TRUNC
            descriptor = os.open(path, os.O_WRONLY)
            try:
                _write_all(descriptor, data)
            finally:
                os.close(descriptor)
    except OSError as exc:
        raise InputError(f"cannot write {label} ({exc.strerror or exc})") from None
    return path


def _replace_file(path: Path, data: bytes, info: os.stat_result | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _write_fifo(path: Path, data: bytes, label: str) -> None:
    try:  # non-blocking: with no reader, open fails at once (ENXIO) instead of hanging
        descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise InputError(f"{label} is a FIFO no process is reading; start the reader "
                             "first") from None
        raise
    try:
        os.set_blocking(descriptor, True)  # a slow reader is waited for, not an error
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


