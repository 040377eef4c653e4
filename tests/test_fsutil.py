"""The output folder contract (trtcompile.fsutil): a compile never loses a user's file.

Each test builds OUT by hand in tmp_path, publishes through OutputFolder as a compile would and
checks OUT byte for byte: user files kept, recorded and unchanged outputs removed, edited ones
kept, the input model never touched, every move undone when publishing fails or is interrupted,
one publisher at a time, files the user names written into devices and FIFOs rather than
replacing them, and copies that would land on an input or an output refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from trtcompile import fsutil
from trtcompile.fsutil import output_folder
from trtcompile.errors import InputError

REPO = Path(__file__).resolve().parent.parent

# A FIFO or lock regression hangs rather than fails: bound every test.
pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple]:
    """Everything below ``folder``: files with bytes and mode, folders, links (hidden ones too)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entries[relative] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            entries[relative] = ("folder",)
        else:
            entries[relative] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return entries


def stage(staging: Path, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` ({relative path: bytes}) into the staging folder; returns the top names."""
    for relative, data in files.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(dict.fromkeys(relative.split("/")[0] for relative in files))


def compile_into(out: Path, files: dict[str, bytes], **folder_options) -> fsutil.Published:
    """Publish ``files`` into ``out`` as one compile does (the report is staged with them)."""
    with fsutil.OutputFolder(out, **folder_options) as folder:
        names = stage(folder.staging, files)
        return folder.publish(names)


FIRST = {"optimized.onnx": b"optimized 1", "model.engine": b"engine 1",
         "passes/000_fold.onnx": b"dump 0", "passes/001_fuse.onnx": b"dump 1",
         "report.json": b'{"files": {}}'}
SECOND = {"optimized.onnx": b"optimized 2", "report.json": b'{"files": {}, "run": 2}'}


# --------------------------------------------------------------------------------------------
# Which files a publish removes, replaces, keeps
# --------------------------------------------------------------------------------------------


def test_user_files_with_output_names_are_kept(tmp_path):
    # trtcompile compile model.onnx -o . in a folder with the user's own passes/, segments/,
    # model.engine, lowered.onnx: no compile wrote them, so none is touched.
    out = tmp_path / "project"
    for relative, data in {"passes/mine.onnx": b"p", "segments/s.onnx": b"s",
                           "model.engine": b"my engine", "lowered.onnx": b"l",
                           "model.onnx": b"input"}.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    before = snapshot(out)
    published = compile_into(out, SECOND, protected=[out / "model.onnx"])
    after = snapshot(out)
    assert {name: entry for name, entry in after.items() if name in before} == before
    assert sorted(set(after) - set(before)) == [fsutil.MANIFEST_NAME, "optimized.onnx",
                                                "report.json"]
    assert (published.removed, published.kept, published.moved_aside) == ([], {}, {})
    assert published.written == ["optimized.onnx", "report.json"]


def test_recorded_unchanged_outputs_are_removed(tmp_path):
    out = tmp_path / "out"
    compile_into(out, FIRST)
    manifest = json.loads((out / fsutil.MANIFEST_NAME).read_text())
    assert manifest["files"]["model.engine"] == {
        "size": 8, "sha256": hashlib.sha256(b"engine 1").hexdigest()}
    assert manifest["files"]["passes"] == {"files": {
        "000_fold.onnx": {"size": 6, "sha256": hashlib.sha256(b"dump 0").hexdigest()},
        "001_fuse.onnx": {"size": 6, "sha256": hashlib.sha256(b"dump 1").hexdigest()}}}
    published = compile_into(out, SECOND)
    assert sorted(p.name for p in out.iterdir()) == sorted([fsutil.MANIFEST_NAME, "optimized.onnx",
                                                            "report.json"])
    assert published.removed == ["model.engine", "passes"]
    assert (out / "optimized.onnx").read_bytes() == b"optimized 2"
    assert set(json.loads((out / fsutil.MANIFEST_NAME).read_text())["files"]) == {
        "optimized.onnx", "report.json"}


def test_recorded_but_edited_outputs_are_kept(tmp_path):
    out = tmp_path / "out"
    compile_into(out, FIRST)
    (out / "model.engine").write_bytes(b"engine 1, tuned by hand")
    (out / "passes" / "notes.txt").write_text("mine")  # a file added to a recorded folder
    published = compile_into(out, SECOND)
    assert (out / "model.engine").read_bytes() == b"engine 1, tuned by hand"
    assert sorted(p.name for p in (out / "passes").iterdir()) == ["000_fold.onnx",
                                                                 "001_fuse.onnx", "notes.txt"]
    assert published.removed == []
    assert published.kept == {"model.engine": "changed since an earlier compile wrote it",
                              "passes": "changed since an earlier compile wrote it"}
    assert published.messages() == ["kept model.engine: changed since an earlier compile wrote it",
                                    "kept passes: changed since an earlier compile wrote it"]
    # Kept files are no longer the compile's: a third compile leaves them alone too, silently.
    third = compile_into(out, SECOND)
    assert (out / "model.engine").read_bytes() == b"engine 1, tuned by hand"
    assert (third.removed, third.kept) == ([], {})


def test_a_user_file_with_a_name_the_compile_writes_is_moved_aside(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "optimized.onnx").write_bytes(b"the user's model")
    (out / "optimized.onnx.orig").write_bytes(b"an older one")
    published = compile_into(out, SECOND)
    assert (out / "optimized.onnx").read_bytes() == b"optimized 2"
    assert (out / "optimized.onnx.orig.2").read_bytes() == b"the user's model"
    assert (out / "optimized.onnx.orig").read_bytes() == b"an older one"
    assert published.messages() == [
        "moved optimized.onnx to optimized.onnx.orig.2: no earlier compile wrote it"]
    # An output the user edited after a compile wrote it, written again: moved aside as well.
    (out / "optimized.onnx").write_bytes(b"edited")
    published = compile_into(out, SECOND)
    assert (out / "optimized.onnx.orig.3").read_bytes() == b"edited"
    assert published.moved_aside == {
        "optimized.onnx": ("optimized.onnx.orig.3", "changed since an earlier compile wrote it")}
    # Unchanged since written: simply replaced, nothing moved aside.
    published = compile_into(out, {**SECOND, "optimized.onnx": b"optimized 3"})
    assert (published.moved_aside, published.removed) == ({}, [])
    assert (out / "optimized.onnx").read_bytes() == b"optimized 3"
    assert not (out / "optimized.onnx.orig.4").exists()


def test_the_input_model_inside_out_is_never_removed(tmp_path):
    # trtcompile compile out/passes/001_fuse.onnx -o out (without --dump-after-each).
    out = tmp_path / "out"
    compile_into(out, FIRST)
    model = out / "passes" / "001_fuse.onnx"
    published = compile_into(out, SECOND, protected=[model])
    assert model.read_bytes() == b"dump 1"
    assert published.kept == {"passes": "it holds the input model"}
    assert published.removed == ["model.engine"]
    # The input named through a symbolic link to OUT is recognised as well.
    other = tmp_path / "other"
    compile_into(other, FIRST)
    (tmp_path / "link").symlink_to(other)
    published = compile_into(other, SECOND,
                             protected=[tmp_path / "link" / "passes" / "001_fuse.onnx"])
    assert published.kept == {"passes": "it holds the input model"}
    assert (other / "passes" / "001_fuse.onnx").read_bytes() == b"dump 1"


def test_an_output_name_holding_the_input_is_moved_aside_not_replaced(tmp_path):
    out = tmp_path / "out"
    compile_into(out, FIRST)
    model = out / "model.engine"
    published = compile_into(out, FIRST, protected=[model])
    assert (out / "model.engine.orig").read_bytes() == b"engine 1"
    assert published.moved_aside == {"model.engine": ("model.engine.orig",
                                                      "it holds the input model")}


def test_an_older_report_without_manifest_lists_outputs_without_records(tmp_path):
    # A folder an earlier version compiled into: report.json lists the names, no digests exist.
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(
        {"files": {"optimized": "optimized.onnx", "engine": "model.engine",
                   "report": "report.json", "elsewhere": "../outside.txt"}}))
    (out / "optimized.onnx").write_bytes(b"old")
    (out / "model.engine").write_bytes(b"old engine")
    (tmp_path / "outside.txt").write_text("not OUT's")
    published = compile_into(out, SECOND)
    assert (out / "optimized.onnx").read_bytes() == b"optimized 2"
    assert (out / "model.engine").read_bytes() == b"old engine"
    assert (tmp_path / "outside.txt").read_text() == "not OUT's"
    assert published.moved_aside == {}
    assert published.kept == {"model.engine": "the earlier compile's report lists it but holds "
                                              "no record of its contents"}


def test_a_hand_edited_manifest_cannot_reach_outside_out(tmp_path):
    out = tmp_path / "out"
    compile_into(out, FIRST)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"x")
    manifest = json.loads((out / fsutil.MANIFEST_NAME).read_text())
    manifest["files"]["../outside.txt"] = fsutil.record(outside)
    (out / fsutil.MANIFEST_NAME).write_text(json.dumps(manifest))
    published = compile_into(out, SECOND)
    assert outside.read_bytes() == b"x"
    assert published.removed == ["model.engine", "passes"]


def test_the_report_moves_in_last_then_the_manifest(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_replace = os.replace
    moved_in = []

    def replace(source, target):
        if Path(target).parent == out:
            moved_in.append(Path(target).name)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with fsutil.OutputFolder(out) as folder:
        stage(folder.staging, FIRST)
        published = folder.publish(["report.json", "passes", "optimized.onnx", "model.engine"])
    assert published.written == ["passes", "optimized.onnx", "model.engine", "report.json"]
    assert moved_in == published.written + [fsutil.MANIFEST_NAME]


def test_publish_refuses_names_not_staged_or_not_plain(tmp_path):
    with fsutil.OutputFolder(tmp_path / "out") as folder:
        with pytest.raises(ValueError, match="'model.engine': it is not in the staging folder"):
            folder.publish(["model.engine"])
        with pytest.raises(ValueError, match="plain name"):
            folder.publish(["../x"])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# All or nothing
# --------------------------------------------------------------------------------------------


def earlier_state(out: Path) -> None:
    """OUT after an earlier compile, then a user file with a name the next compile writes."""
    compile_into(out, FIRST)
    (out / "lowered.onnx").write_bytes(b"the user's")
    (out / "keep.txt").write_text("mine")


NEXT = {"optimized.onnx": b"optimized 2", "lowered.onnx": b"lowered 2",
        "segments/segment_0.onnx": b"segment", "report.json": b'{"run": 2}'}


def count_moves(tmp_path) -> int:
    out = tmp_path / "count"
    earlier_state(out)
    calls = []
    real_replace = os.replace
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", lambda *a: (calls.append(a), real_replace(*a))[1])
        compile_into(out, NEXT)
    return len(calls)


def test_a_failure_mid_publish_leaves_out_as_it_was(tmp_path, monkeypatch):
    moves = count_moves(tmp_path)
    assert moves >= 8  # removals, replacements, moves aside, new outputs, the manifest
    real_replace = os.replace
    for failing in range(moves):
        out = tmp_path / f"out{failing}"
        earlier_state(out)
        before = snapshot(out)
        calls = []

        def replace(source, target, failing=failing, calls=calls):
            calls.append(source)
            if len(calls) == failing + 1 and len(calls) <= moves:
                raise OSError(errno.EIO, "Input/output error")
            return real_replace(source, target)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="Input/output error"):
            compile_into(out, NEXT)
        monkeypatch.setattr(os, "replace", real_replace)
        assert snapshot(out) == before, f"failing move {failing}"


def test_sigint_mid_publish_leaves_out_as_it_was(tmp_path, monkeypatch):
    moves = count_moves(tmp_path)
    real_replace = os.replace
    for interrupted in (0, moves // 2, moves - 1):
        out = tmp_path / f"out{interrupted}"
        earlier_state(out)
        before = snapshot(out)
        calls = []

        def replace(source, target, interrupted=interrupted, calls=calls):
            calls.append(source)
            result = real_replace(source, target)
            if len(calls) == interrupted + 1:
                os.kill(os.getpid(), signal.SIGINT)  # lands while the moves go on
            return result

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            compile_into(out, NEXT)
        monkeypatch.setattr(os, "replace", real_replace)
        assert snapshot(out) == before, f"interrupted after move {interrupted}"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_while_undoing_waits_for_the_undo(tmp_path, monkeypatch):
    # A move fails; a SIGINT arrives as the first move is being undone: the undo still completes
    # and the interrupt is delivered afterwards.
    out = tmp_path / "out"
    earlier_state(out)
    before = snapshot(out)
    real_replace = os.replace
    calls = []

    def replace(source, target):
        calls.append(source)
        if len(calls) == 5:
            raise OSError(errno.EIO, "Input/output error")
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        compile_into(out, NEXT)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) == 5 + 4  # the four moves done are undone
    assert snapshot(out) == before


def test_a_failed_compile_removes_the_out_it_created(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError, match="pass failed"), fsutil.OutputFolder(out) as folder:
        assert folder.staging.parent == out
        assert folder.created == [tmp_path / "new", tmp_path / "new" / "deeper", out]
        stage(folder.staging, SECOND)
        raise RuntimeError("pass failed")
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_below_one_is_refused(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"m")
    with pytest.raises(InputError, match=r"output .*model.onnx exists and is not a folder"):
        fsutil.OutputFolder(model).__enter__()
    with pytest.raises(InputError, match=r"cannot create output folder .*: .*model.onnx is not a "
                                         r"folder"):
        fsutil.OutputFolder(model / "out").__enter__()
    assert model.read_bytes() == b"m"


def test_a_read_only_out_is_refused_in_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):  # root ignores modes: refuse as a read-only mount would
        if Path(path).parent == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(InputError) as raised:
        fsutil.OutputFolder(out).__enter__()
    assert str(raised.value) == (f"cannot write to {out} (Permission denied); choose another "
                                 "output folder")
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0555")
def test_a_read_only_out_is_refused_by_mode(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(InputError, match=r"cannot write to .*out \(Permission denied\)"):
            fsutil.OutputFolder(out).__enter__()
    finally:
        out.chmod(0o755)


# --------------------------------------------------------------------------------------------
# File systems
# --------------------------------------------------------------------------------------------


def test_out_on_another_file_system_than_its_parent(tmp_path):
    # /dev/shm is a tmpfs: staging inside OUT keeps every move a rename on OUT's file system.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    out = Path(tempfile.mkdtemp(prefix="trtcompile-test.", dir=shm))
    try:
        with fsutil.OutputFolder(out) as folder:
            assert os.stat(folder.staging).st_dev == os.stat(out).st_dev
            folder.publish(stage(folder.staging, FIRST))
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [fsutil.MANIFEST_NAME, "model.engine", "optimized.onnx", "passes", "report.json"])
    finally:
        shutil.rmtree(out)


def exdev_between_folders(monkeypatch) -> list[tuple[str, str]]:
    """os.replace fails with EXDEV between two folders, as across a mount point."""
    real_replace = os.replace
    refused = []

    def replace(source, target):
        if os.path.dirname(os.fspath(source)) != os.path.dirname(os.fspath(target)):
            refused.append((os.fspath(source), os.fspath(target)))
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    return refused


def test_moves_fall_back_to_copy_and_rename_across_file_systems(tmp_path, monkeypatch):
    expected_out = tmp_path / "expected"
    earlier_state(expected_out)
    compile_into(expected_out, NEXT)
    out = tmp_path / "out"
    earlier_state(out)
    refused = exdev_between_folders(monkeypatch)
    published = compile_into(out, NEXT)
    assert len(refused) >= 8
    assert snapshot(out) == snapshot(expected_out)
    assert published.removed == ["model.engine", "passes"]


def test_an_interrupted_copy_across_file_systems_is_undone(tmp_path, monkeypatch):
    out = tmp_path / "out"
    earlier_state(out)
    before = snapshot(out)
    exdev_between_folders(monkeypatch)
    real_remove = output_folder._remove
    calls = []

    def remove(path):  # passes/ cannot be removed after its copy is in place
        calls.append(path)
        if path == out / "passes":
            raise OSError(errno.EIO, "Input/output error")
        return real_remove(path)

    monkeypatch.setattr(output_folder, "_remove", remove)
    with pytest.raises(OSError, match="Input/output error"):
        compile_into(out, NEXT)
    assert calls[0] == out / "model.engine" and calls[1] == out / "passes"
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------------
# One publisher at a time
# --------------------------------------------------------------------------------------------


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from trtcompile import fsutil
    from trtcompile.errors import InputError

    out = Path(sys.argv[1])
    try:
        with fsutil.OutputFolder(out, lock_timeout=float(sys.argv[2])) as folder:
            (folder.staging / "optimized.onnx").write_bytes(b"child")
            folder.publish(["optimized.onnx"])
    except InputError as exc:
        print(exc)
        sys.exit(2)
""")


def start_child(out: Path, timeout: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(timeout)], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_a_second_compile_waits_for_the_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with fsutil.folder_lock(out):
        child = start_child(out, 60)
        time.sleep(1.0)
        assert child.poll() is None  # waiting
        assert not (out / "optimized.onnx").exists()
    assert child.wait(60) == 0
    assert (out / "optimized.onnx").read_bytes() == b"child"
    assert not (out / fsutil.LOCK_NAME).exists()


def test_a_second_compile_refuses_after_the_timeout(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with fsutil.folder_lock(out):
        child = start_child(out, 0.5)
        output, _ = child.communicate(timeout=60)
    assert child.returncode == 2
    assert output == (f"another compile is writing {out} (waited 0.5 s); wait for it to finish "
                      "or choose another output folder\n")
    assert sorted(p.name for p in out.iterdir()) == []  # its staging folder is gone too


def test_a_dead_compiles_staging_is_removed_unless_it_holds_replaced_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / (fsutil.STAGING_PREFIX + "dead")
    (dead / "passes").mkdir(parents=True)
    (dead / ".owner").touch()
    interrupted = out / (fsutil.STAGING_PREFIX + "killed-mid-publish")
    (interrupted / ".replaced").mkdir(parents=True)
    (interrupted / ".replaced" / "model.engine").write_bytes(b"old engine")
    (interrupted / ".owner").touch()
    with fsutil.OutputFolder(out) as live, fsutil.OutputFolder(out) as other:
        assert live.staging.exists()  # a live compile's staging is left alone
        names = sorted(p.name for p in out.iterdir())
        assert dead.name not in names and interrupted.name in names
        other.publish(stage(other.staging, SECOND))
    assert (interrupted / ".replaced" / "model.engine").read_bytes() == b"old engine"


# --------------------------------------------------------------------------------------------
# Files the user names
# --------------------------------------------------------------------------------------------


def test_dev_null_stays_a_character_device():
    before = os.stat("/dev/null")
    fsutil.write_user_file("/dev/null", b"engine bytes", flag="--save-engine")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev, after.st_mode) == (before.st_ino, before.st_rdev,
                                                            before.st_mode)


def test_dev_full_is_refused_in_one_line():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(InputError) as raised:
        fsutil.write_user_file("/dev/full", b"x", flag="--report-json")
    assert str(raised.value) == "cannot write --report-json /dev/full (No space left on device)"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_with_a_reader_receives_the_bytes(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader_opened = threading.Event()

    def read():
        with open(fifo, "rb") as handle:
            reader_opened.set()
            received.append(handle.read())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not reader_opened.is_set():  # open() of the reader returns once a writer opens too
        try:
            data = b"x" * (1 << 20)  # more than a pipe buffer: the writer waits for the reader
            fsutil.write_user_file(fifo, data, flag="--report-html")
            break
        except InputError:  # the reader has not opened yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
    reader.join(10)
    assert received == [b"x" * (1 << 20)]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_fifo_nobody_reads_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as raised:
        fsutil.write_user_file(fifo, b"x", flag="--report-json")
    assert str(raised.value) == (f"--report-json {fifo} is a FIFO no process is reading; start "
                                 "the reader first")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_socket_and_a_folder_are_refused(tmp_path):
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        with pytest.raises(InputError, match=r"^--save-engine .*sock is a socket; give a file "
                                             r"or a FIFO$"):
            fsutil.write_user_file(path, b"x", flag="--save-engine")
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        server.close()
    with pytest.raises(InputError, match=r"^--report-html .* is a folder; give a file path$"):
        fsutil.write_user_file(tmp_path, b"x", flag="--report-html")


def test_a_regular_file_is_replaced_whole_keeping_its_mode_and_links(tmp_path):
    target = tmp_path / "engine.plan"
    target.write_bytes(b"old")
    target.chmod(0o640)
    old_inode = target.stat().st_ino
    fsutil.write_user_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != old_inode  # a new file renamed into place, not rewritten
    link = tmp_path / "latest.plan"
    link.symlink_to(target.name)
    fsutil.write_user_file(link, b"newer")
    assert link.is_symlink() and target.read_bytes() == b"newer"
    created = fsutil.write_user_file(tmp_path / "new" / "report.json", b"{}")
    assert created.read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.plan", "latest.plan", "new"]


# --------------------------------------------------------------------------------------------
# Collisions
# --------------------------------------------------------------------------------------------


def test_collisions_are_refused_naming_both(tmp_path):
    out = tmp_path / "out"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"m")
    outputs = [out / "optimized.onnx", out / "report.json", out / "model.engine", out / "passes"]
    check = fsutil.check_no_collisions
    with pytest.raises(InputError) as raised:
        check({"--save-engine": out / "optimized.onnx"}, outputs, [model])
    assert str(raised.value) == (f"--save-engine {out / 'optimized.onnx'} would overwrite the "
                                 "compile's own optimized.onnx; choose another name")
    with pytest.raises(InputError, match=r"--report-html .*report.json would overwrite the "
                                         r"compile's own .*report.json"):
        check({"--report-html": out / "report.json"}, outputs, [model],
              may_equal={"--report-json": out / "report.json"})
    with pytest.raises(InputError, match=r"--report-html .*passes/index.html would overwrite the "
                                         r"compile's own .*passes"):
        check({"--report-html": out / "passes" / "index.html"}, outputs, [model])
    with pytest.raises(InputError) as raised:
        check({"--report-json": tmp_path / "r.json", "--report-html": tmp_path / "r.json"},
              outputs, [model])
    assert str(raised.value) == (f"--report-json {tmp_path / 'r.json'} and --report-html "
                                 f"{tmp_path / 'r.json'} name the same file; give them different "
                                 "paths")
    with pytest.raises(InputError, match=r"--save-engine .*model.onnx would overwrite the input "
                                         r"model .*model.onnx"):
        check({"--save-engine": tmp_path / "." / "model.onnx"}, outputs, [model])
    dumped = out / "passes" / "003_fold.onnx"
    with pytest.raises(InputError, match=r"the compile writes .*passes, which would overwrite the "
                                         r"input model .*003_fold.onnx"):
        check({}, outputs, [dumped])


def test_what_does_not_collide_is_accepted(tmp_path):
    out = tmp_path / "out"
    outputs = [out / "optimized.onnx", out / "report.json", out / "passes"]
    fsutil.check_no_collisions(
        {"--report-json": out / "report.json", "--report-html": out / "report.html",
         "--save-engine": tmp_path / "model.engine"},
        outputs, [tmp_path / "model.onnx"], may_equal={"--report-json": out / "report.json"})
    fsutil.check_no_collisions({"--report-json": "/dev/null", "--report-html": "/dev/null"},
                               outputs, [tmp_path / "model.onnx"])


# --------------------------------------------------------------------------------------------
# Records and the documented contract
# --------------------------------------------------------------------------------------------


def test_records_describe_files_folders_and_links(tmp_path):
    (tmp_path / "folder" / "empty").mkdir(parents=True)
    (tmp_path / "folder" / "a.onnx").write_bytes(b"abc")
    (tmp_path / "folder" / "up").symlink_to("..")
    assert fsutil.record(tmp_path / "folder" / "a.onnx") == {
        "size": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    assert fsutil.record(tmp_path / "folder") == {"files": {
        "a.onnx": fsutil.record(tmp_path / "folder" / "a.onnx"), "empty": {"folder": True},
        "up": {"link": ".."}}}
    assert fsutil.record(tmp_path / "missing") is None


def test_the_cli_reference_states_the_contract():
    section = (REPO / "docs" / "cli.md").read_text().split("### What a compile writes")[1]
    section = section.split("\n### ")[0]
    for phrase in (fsutil.MANIFEST_NAME, fsutil.LOCK_NAME, fsutil.STAGING_PREFIX,
                   f"<name>{fsutil.ASIDE_SUFFIX}", "size and SHA-256", "input model",
                   "/dev/null", "FIFO", "five minutes"):
        assert phrase in section, phrase
    assert fsutil.LOCK_TIMEOUT == 5 * 60  # as the section says
