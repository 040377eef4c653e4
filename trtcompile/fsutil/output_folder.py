"""The output folder: a lock, a staging folder inside OUT, an all-or-nothing publish that removes
only what an earlier compile recorded writing."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trtcompile.errors import InputError
from trtcompile.fsutil.files import (
    _CREATING_PREFIX,
    _LOCK_POLL,
    _OWNER,
    _TRASH,
    ASIDE_SUFFIX,
    LOCK_NAME,
    LOCK_TIMEOUT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    STAGING_PREFIX,
    _real,
    _same,
    _unchanged,
    _within,
    record,
)

# --------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive lock on the output folder ``folder`` (which must exist) for a block.

    :meth:`OutputFolder.publish` holds it while it moves files, so two compiles into one folder
    publish one after the other. Waits up to ``timeout`` seconds, then raises
    :class:`InputError`. The lock file is removed on release; a waiter that then holds a lock on
    the removed file notices and locks the new one, so no two holders ever overlap.
    """
    lock_path = Path(folder) / LOCK_NAME
    deadline = time.monotonic() + timeout
    while True:
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot lock {folder} ({exc.strerror or exc}); choose another "
                             "output folder") from None
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise InputError(
                            f"another compile is writing {folder} (waited {timeout:g} s); wait "
                            "for it to finish or choose another output folder") from None
                    time.sleep(_LOCK_POLL)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            held = os.fstat(descriptor)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev,
                                                                             held.st_ino):
                try:
                    yield
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path)  # still holding it: nobody can lock this file anew
                return
        finally:
            os.close(descriptor)  # closing releases the lock


# --------------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Published:
    """What :meth:`OutputFolder.publish` did to OUT.

    ``written``: the names moved in; ``removed``: outputs of an earlier compile this one does
    not write, removed because they were unchanged; ``kept``: outputs of an earlier compile left
    in place, with why (changed since, holds the input model, no record of them);
    ``moved_aside``: a file of the user's that had a name this compile writes, with its new name
    and why.
    """

    written: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    kept: dict[str, str] = dataclasses.field(default_factory=dict)
    moved_aside: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def messages(self) -> list[str]:
        """One line per file kept or moved aside, for the terminal."""
        lines = [f"kept {name}: {reason}" for name, reason in self.kept.items()]
        lines += [f"moved {name} to {new_name}: {reason}"
                  for name, (new_name, reason) in self.moved_aside.items()]
        return lines


_CHANGED = "changed since an earlier compile wrote it"
_NOT_OURS = "no earlier compile wrote it"
_INPUT = "it holds the input model"
_NO_RECORD = "the earlier compile's report lists it but holds no record of its contents"


class OutputFolder:
    """A compile's output folder OUT, written atomically (context manager).

    ``__enter__`` checks OUT can be written (creating it, and any missing parent, if needed:
    they are removed again if the compile publishes nothing), removes staging folders compiles
    that died left behind, and creates this compile's staging folder inside OUT. Write the outputs
    into :attr:`staging`, then call :meth:`publish` once. ``__exit__`` removes the staging folder
    (with the outputs the publish replaced).

    ``protected``: paths (the input model) no entry of OUT that is or holds them may be removed
    or overwritten. ``report``: the name of the compile's report in OUT, published last; an
    earlier report's ``files`` (name by key) tells which names an older compile that kept no
    manifest wrote. ``lock_timeout``: seconds to wait for another compile publishing into OUT.
    ``keep_others``: outputs an earlier publish recorded and this one does not write stay, with
    their records (a folder shared by several writers, such as a Triton model repository holding
    one model per export); a name this one writes is still replaced only when unchanged.
    """

    def __init__(self, path: str | os.PathLike, protected: Sequence[str | os.PathLike] = (),
                 report: str = "report.json", lock_timeout: float = LOCK_TIMEOUT,
                 keep_others: bool = False):
        self.path = Path(path)
        self.keep_others = keep_others
        self.protected = [_real(p) for p in protected]
        self.report = report
        self.lock_timeout = lock_timeout
        self.created: list[Path] = []  # folders __enter__ created, outermost first
        self._root: Path | None = None
        self._staging: Path | None = None
        self._owner: int | None = None
        self._published = False
        self._keep_staging = False  # an undo failed: the staging still holds the user's files

    # -- context ------------------------------------------------------------------------------

    def __enter__(self) -> OutputFolder:
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise InputError(f"output {self.path} exists and is not a folder; choose another -o")
        missing = []
        ancestor = Path(os.path.abspath(self.path))
        while not os.path.lexists(ancestor):
            missing.append(ancestor)
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise InputError(f"cannot create output folder {self.path}: {ancestor} is not a "
                             "folder")
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                self._remove_created()
                raise InputError(f"cannot create output folder {self.path} ({exc.strerror or exc});"
                                 " choose another -o folder") from None
            self.created.append(folder)
        self._root = Path(_real(self.path))
        try:
            self._sweep()
            self._staging = self._make_staging()
        except OSError as exc:
            self._remove_created()
            raise InputError(f"cannot write to {self.path} ({exc.strerror or exc}); choose another "
                             "output folder") from None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._staging is not None and not self._keep_staging:
            shutil.rmtree(self._staging, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None
        self._staging = None
        if not self._published:
            self._remove_created()

    @property
    def staging(self) -> Path:
        """The folder to write the outputs into (inside OUT, hidden, removed on exit)."""
        if self._staging is None:
            raise RuntimeError("OutputFolder.staging is available inside its with block")
        return self._staging

    def _make_staging(self) -> Path:
        # Created under another prefix and renamed once locked, so a sweeping compile never
        # takes a staging folder whose owner has not locked it yet for a dead one.
        creating = Path(tempfile.mkdtemp(prefix=_CREATING_PREFIX, dir=self._root))
        try:
            self._owner = os.open(creating / _OWNER, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staging = self._root / (STAGING_PREFIX + creating.name[len(_CREATING_PREFIX):])
            os.rename(creating, staging)
        except BaseException:
            if self._owner is not None:
                os.close(self._owner)
                self._owner = None
            shutil.rmtree(creating, ignore_errors=True)
            raise
        return staging

    def _sweep(self) -> None:
        """Remove staging folders whose compile died (their owner lock is free) unless they hold
        outputs a killed publish had moved out of OUT."""
        for entry in self._root.iterdir():
            if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() \
                    or not entry.is_dir():
                continue
            try:
                descriptor = os.open(entry / _OWNER, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live compile
            finally:
                os.close(descriptor)
            trash = entry / _TRASH
            if not trash.is_dir() or not any(trash.iterdir()):
                shutil.rmtree(entry, ignore_errors=True)

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: never anything someone else put there
        self.created = []

    # -- publish ------------------------------------------------------------------------------

    def publish(self, names: Sequence[str]) -> Published:
        """Move ``names`` (files and folders in :attr:`staging`) into OUT, all or nothing.

        Under the lock on OUT: outputs of an earlier compile this one does not write are removed
        when the manifest records them unchanged, otherwise kept; an entry of a name in ``names``
        is replaced when it is such an unchanged output, otherwise moved aside to
        ``<name>.orig``; entries holding a protected path are never removed. Then the new
        outputs move in (the report last) and the manifest records them. An exception, SIGINT or
        SIGTERM before the end undoes every move and propagates (SIGINT and SIGTERM are deferred
        while moving and delivered after the undo). Returns what happened, see
        :class:`Published`.
        """
        if self._staging is None:
            raise RuntimeError("OutputFolder.publish() is called inside its with block")
        if self._published:
            raise RuntimeError("OutputFolder.publish() is called once")
        names = list(dict.fromkeys(names))
        for name in names:
            if not _plain(name) or _reserved(name):
                raise ValueError(f"cannot publish {name!r}: give a plain name in OUT")
            if not os.path.lexists(self._staging / name):
                raise ValueError(f"cannot publish {name!r}: it is not in the staging folder")
        if self.report in names:  # the report last: its presence means OUT is complete
            names.remove(self.report)
            names.append(self.report)
        manifest = {"trtcompile_outputs": MANIFEST_VERSION, "report": self.report,
                    "files": {name: record(self._staging / name) for name in names}}
        (self._staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        with folder_lock(self._root, self.lock_timeout):
            return self._publish_locked(names)

    def _publish_locked(self, names: list[str]) -> Published:
        published = Published(written=list(names))
        recorded, legacy = self._earlier_outputs()
        trash = self._staging / _TRASH
        trash.mkdir(exist_ok=True)
        moves: list[tuple[Path, Path]] = []  # (from, to), in order
        aside_taken: set[str] = set()

        if self.keep_others:
            self._carry_records(recorded, names)
        for name in sorted(set(recorded) | set(legacy)):
            entry = self._root / name
            if name in names or not os.path.lexists(entry) or self.keep_others:
                continue
            if self._holds_input(entry):
                published.kept[name] = _INPUT
            elif name in recorded and _unchanged(entry, recorded[name]):
                moves.append((entry, trash / name))
                published.removed.append(name)
            else:
                published.kept[name] = _CHANGED if name in recorded else _NO_RECORD
        for name in names:
            entry = self._root / name
            if os.path.lexists(entry):
                if self._holds_input(entry):
                    reason = _INPUT
                elif name in recorded:
                    reason = None if _unchanged(entry, recorded[name]) else _CHANGED
                else:
                    reason = None if name in legacy else _NOT_OURS
                if reason is None:
                    moves.append((entry, trash / name))
                else:
                    aside = self._aside_name(name, aside_taken)
                    moves.append((entry, self._root / aside))
                    published.moved_aside[name] = (aside, reason)
            moves.append((self._staging / name, entry))
        manifest = self._root / MANIFEST_NAME
        if os.path.lexists(manifest):
            moves.append((manifest, trash / MANIFEST_NAME))
        moves.append((self._staging / MANIFEST_NAME, manifest))

        with _signals_deferred() as received:
            done: list[tuple[Path, Path]] = []
            try:
                for source, target in moves:
                    done.append((source, target))  # before the move: undo checks what happened
                    _move(source, target)
                if received:
                    raise KeyboardInterrupt
            except BaseException:
                self._undo(done)
                raise
        self._published = True
        return published

    def _carry_records(self, recorded: dict[str, Any], names: list[str]) -> None:
        """Add to the staged manifest the records of the earlier outputs this publish keeps
        (``keep_others``) and that are still as recorded: they stay known as written here."""
        path = self._staging / MANIFEST_NAME
        manifest = json.loads(path.read_text())
        for name, value in recorded.items():
            entry = self._root / name
            if name not in names and os.path.lexists(entry) and _unchanged(entry, value):
                manifest["files"][name] = value
        path.write_text(json.dumps(manifest, indent=1) + "\n")

    def _earlier_outputs(self) -> tuple[dict[str, Any], set[str]]:
        """What earlier compiles wrote into OUT: ``{name: record}`` from the manifest, and the
        names an older compile's report lists when there is no manifest (contents unknown)."""
        manifest = _read_json(self._root / MANIFEST_NAME)
        if manifest is not None:
            files = manifest.get("files")
            if isinstance(files, dict):
                return {name: value for name, value in files.items()
                        if isinstance(name, str) and _plain(name) and not _reserved(name)}, set()
            return {}, set()
        report = _read_json(self._root / self.report)
        listed = report.get("files") if report is not None else None
        if not isinstance(listed, dict):
            return {}, set()
        names = {name for name in listed.values()
                 if isinstance(name, str) and _plain(name) and not _reserved(name)}
        return {}, names | {self.report}

    def _holds_input(self, entry: Path) -> bool:
        real = os.path.join(_real(entry.parent), entry.name)  # the entry itself, not a link target
        return any(_within(protected, real) for protected in self.protected) or any(
            _same(entry, protected) for protected in self.protected if not entry.is_symlink())

    def _aside_name(self, name: str, taken: set[str]) -> str:
        candidate, number = name + ASIDE_SUFFIX, 1
        while candidate in taken or os.path.lexists(self._root / candidate):
            number += 1
            candidate = f"{name}{ASIDE_SUFFIX}.{number}"
        taken.add(candidate)
        return candidate

    def _undo(self, done: list[tuple[Path, Path]]) -> None:
        """Move back, newest first, what ``done`` moved; a move that had not happened is skipped,
        one that stopped half way (a copy across file systems) is cleaned up. If a move cannot be
        undone the staging folder is kept, as it holds OUT's earlier entries."""
        failed = []
        for source, target in reversed(done):
            try:
                if not os.path.lexists(target):
                    continue
                if os.path.lexists(source):  # a copy whose source was not removed yet
                    _remove(target)
                else:
                    _move(target, source)
            except OSError as exc:
                failed.append(f"{target} -> {source}: {exc.strerror or exc}")
        if failed:
            self._keep_staging = True
            raise OSError(f"publishing into {self.path} failed and could not be undone ("
                          f"{'; '.join(failed)}); the earlier files are in {self._staging}")


def ours_unchanged(folder: str | os.PathLike, name: str) -> bool:
    """Whether the entry ``name`` of ``folder`` is an output a publish into ``folder`` recorded in
    its manifest and that is unchanged since (so a new publish may replace it)."""
    manifest = _read_json(Path(folder) / MANIFEST_NAME) or {}
    files = manifest.get("files")
    return isinstance(files, dict) and name in files and _unchanged(Path(folder) / name,
                                                                    files[name])


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and os.sep not in name \
        and (os.altsep is None or os.altsep not in name)


def _reserved(name: str) -> bool:
    return name in (LOCK_NAME, MANIFEST_NAME) or name.startswith((STAGING_PREFIX,
                                                                  _CREATING_PREFIX))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (which does not exist); across file systems (a mount
    inside OUT) copy to a temporary name beside ``target``, rename that, then remove
    ``source``."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = target.parent / f".trtcompile-copy.{os.getpid()}.{target.name}"
    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, temporary, symlinks=True)
        else:
            shutil.copy2(source, temporary, follow_symlinks=False)
        os.replace(temporary, target)
    except BaseException:
        if os.path.lexists(temporary):
            _remove(temporary)
        raise
    _remove(source)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM are recorded, not acted on, during the block (the list it yields holds
    them); on leaving, the previous handlers are restored and the signals sent again."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:  # an ignored signal stays ignored
            previous[number] = signal.signal(number,
                                             lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


