"""The output-folder contract of docs/cli.md, through the command as users run it.

A compile removes only what an earlier compile recorded writing there (and that is unchanged),
never a user's file, never the input model, never anything outside OUT; copies never take an
output's or the input's name; devices and FIFOs are written into, not replaced; publishing is
atomic, safe across file systems and serialized by a lock; an interrupt while publishing leaves
OUT as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import onnx
import pytest

from tests.backend import models
from tests.helpers import CONV_BRANCHES, REPO, output_names
from trtcompile import cli, ir
from trtcompile.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED

FAST = ["--no-engine", "--no-progress", "-q", "--pipeline", "dead-layer-elimination"]


def compile_(*args: str) -> int:
    return cli.main(["compile", *args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (the manifest and lock excluded)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".trtcompile")}


def test_compiling_into_the_current_folder_keeps_the_users_files(tmp_path, monkeypatch) -> None:
    """``cd proj && trtcompile compile model.onnx -o .``: the project's own passes/, segments/,
    model.engine and lowered.onnx are not the compile's (no compile recorded them) and stay."""
    project = tmp_path / "proj"
    (project / "passes").mkdir(parents=True)
    (project / "passes" / "__init__.py").write_text("# the user's package\n")
    (project / "segments").mkdir()
    (project / "segments" / "notes.md").write_text("mine\n")
    (project / "model.engine").write_bytes(b"my engine")
    (project / "lowered.onnx").write_bytes(b"my lowered model")
    shutil.copy(CONV_BRANCHES, project / "model.onnx")
    before = snapshot(project)
    monkeypatch.chdir(project)
    assert compile_("model.onnx", "-o", ".", *FAST) == 0
    after = snapshot(project)
    assert {name: data for name, data in after.items() if name in before} == before
    assert set(after) - set(before) == {"optimized.onnx", "report.json"}
    # A second compile with the engine off again still keeps them all.
    assert compile_("model.onnx", "-o", ".", *FAST) == 0
    assert {name: data for name, data in snapshot(project).items() if name in before} == before


def test_the_input_model_inside_out_is_never_removed(tmp_path) -> None:
    """``compile out/passes/001_....onnx -o out``: the earlier compile's passes/ holds the input
    now, so it stays although this compile writes no dumps."""
    out = tmp_path / "out"
    assert compile_(str(CONV_BRANCHES), "-o", str(out), *FAST, "--dump-after-each") == 0
    dumped = sorted((out / "passes").glob("*.onnx"))[-1]
    model_bytes = dumped.read_bytes()
    assert compile_(str(dumped), "-o", str(out), *FAST) == 0
    assert dumped.read_bytes() == model_bytes
    assert (out / "report.json").is_file()


def test_copies_may_not_take_an_output_or_the_input(tmp_path, capsys) -> None:
    out = tmp_path / "o1"
    for flags, message in (
            (["--save-engine", str(out / "optimized.onnx")], "would overwrite the compile's own "
                                                              "optimized.onnx"),
            (["--report-html", str(out / "report.json")], "would overwrite the compile's own "
                                                           "report.json"),
            (["--report-json", str(CONV_BRANCHES)], "would overwrite the input model")):
        engine = [] if flags[0] == "--save-engine" else ["--no-engine"]
        code = compile_(str(CONV_BRANCHES), "-o", str(out), "--no-progress", "-q",
                        "--pipeline", "none", *engine, *flags)
        err = capsys.readouterr().err
        assert code == EXIT_BAD_INPUT, err
        assert message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/null"),
                    reason="replacing a device node needs root; only root can be hurt by it")
def test_devices_are_written_into_not_replaced(tmp_path) -> None:
    assert compile_(str(CONV_BRANCHES), "-o", str(tmp_path / "out"), *FAST,
                    "--report-json", "/dev/null", "--report-html", "/dev/null") == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_receives_the_report_and_stays_a_fifo(tmp_path) -> None:
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    try:
        assert compile_(str(CONV_BRANCHES), "-o", str(tmp_path / "out"), *FAST,
                        "--report-json", str(fifo)) == 0
    finally:
        reader.join(timeout=60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(received[0]) == json.loads((tmp_path / "out" / "report.json").read_text())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                    reason="mounting a tmpfs needs root")
def test_out_on_another_file_system_than_its_parent(tmp_path) -> None:
    """``-o /out`` in a container, a tmpfs, a mounted volume: OUT is a mount point, so anything
    staged in its parent would be on another file system. Staging inside OUT makes every move a
    rename."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        assert os.stat(mount).st_dev != os.stat(tmp_path).st_dev
        assert compile_(str(CONV_BRANCHES), "-o", str(mount), *FAST) == 0
        assert output_names(mount) == ["optimized.onnx", "report.json"]
        assert compile_(str(CONV_BRANCHES), "-o", str(mount), *FAST, "--dump-after-each") == 0
        assert output_names(mount) == ["optimized.onnx", "passes", "report.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def run_child(args: list[str], env: dict[str, str] | None = None, script: str | None = None
              ) -> subprocess.Popen:
    child_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **(env or {}))
    command = [sys.executable, "-c", script, *args] if script else \
        [sys.executable, "-m", "trtcompile.cli", *args]
    return subprocess.Popen(command, env=child_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_concurrent_compiles_into_one_out_leave_one_whole_result(tmp_path) -> None:
    """Two compiles of two models into one OUT: publishing is serialized by a lock, so OUT holds
    one compile's optimized.onnx with that same compile's report, never a mix."""
    other = tmp_path / "other.onnx"
    ir.save(models.conv_relu_model(), other)
    out = tmp_path / "out"
    children = [run_child(["compile", str(model), "-o", str(out), *FAST])
                for model in (CONV_BRANCHES, other)]
    for child in children:
        assert child.wait(timeout=600) == 0, child.stderr.read().decode()
    report = json.loads((out / "report.json").read_text())
    optimized = onnx.load(out / "optimized.onnx")
    source = onnx.load(report["model"]["source"])
    assert len(optimized.graph.node) == report["layers"]["optimized"]
    assert [i.name for i in optimized.graph.input] == [i.name for i in source.graph.input]
    assert not [p for p in out.iterdir() if p.name.startswith(".trtcompile-staging")]


#: Runs the command with every move of the publish slowed, printing a marker before the first,
#: so a signal lands in the middle of publishing.
SLOW_PUBLISH = textwrap.dedent("""
    import sys, time
    from trtcompile.fsutil import output_folder
    real_move = output_folder._move
    def slow_move(source, target):
        sys.stderr.write("publishing\\n"); sys.stderr.flush()
        time.sleep(0.5)
        return real_move(source, target)
    output_folder._move = slow_move
    from trtcompile.cli import main
    sys.exit(main(["compile", *sys.argv[1:]]))
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_publishing_leaves_out_as_it_was(tmp_path, signum) -> None:
    out = tmp_path / "out"
    assert compile_(str(CONV_BRANCHES), "-o", str(out), *FAST, "--dump-after-each") == 0
    before = snapshot(out)
    other = tmp_path / "other.onnx"
    ir.save(models.conv_relu_model(), other)
    child = run_child([str(other), "-o", str(out), *FAST], script=SLOW_PUBLISH)
    seen = b""
    while b"publishing" not in seen:
        chunk = os.read(child.stderr.fileno(), 65536)
        assert chunk, f"the compile ended before publishing: {seen.decode()}"
        seen += chunk
    time.sleep(0.7)  # past the first move, inside the publish
    child.send_signal(signum)
    err = (seen + child.stderr.read()).decode()
    assert child.wait(timeout=120) == EXIT_INTERRUPTED, err
    assert err.splitlines()[-1].startswith("trtcompile: interrupted"), err
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".trtcompile-staging")]
