"""Parallel golden runs (trtcompile/golden/scheduling.py): worker processes, a worker that dies, Ctrl-C and
SIGTERM, Ray (a local cluster, target_gpu placement, Ray missing), the memory estimate, and the
caches several processes share (the Keras example export, INT8 calibration caches)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import onnx
import pytest

from tests.helpers import CONV_PIPELINE, GOLDEN, REPO, run_main, run_trtcompile
from trtcompile import golden
from trtcompile.golden import scheduling as parallel
from trtcompile.errors import InputError, WorkerCrashed

#: A pass that kills the process it runs in (a worker dying in native code, or OOM-killed).
KILLER_PASS = '''
import os
import signal
from dataclasses import dataclass
from typing import ClassVar

from trtcompile.pass_manager import Pass, PassResult


@dataclass(frozen=True)
class KillWorker(Pass):
    """Kills its own process with SIGKILL."""

    name: ClassVar[str] = "kill-worker"

    def run(self, graph, ctx):
        os.kill(os.getpid(), signal.SIGKILL)
        return PassResult()
'''


def suite_with_crash(folder: Path) -> Path:
    """A manifest of three entries, the middle one killing its worker."""
    (folder / "killer.py").write_text(KILLER_PASS)
    manifest = folder / "manifest.toml"
    manifest.write_text(textwrap.dedent(f"""
        [[model]]
        name = "branches"
        path = "{GOLDEN / 'conv_branches.onnx'}"
        pipeline = "{CONV_PIPELINE}"

        [[model]]
        name = "dies"
        path = "{GOLDEN / 'conv_branches.onnx'}"
        pipeline = "kill-worker"
        pass_modules = ["killer.py"]

        [[model]]
        name = "transposes"
        path = "{GOLDEN / 'nhwc_transposes.onnx'}"
        data = "{GOLDEN / 'nhwc_transposes.npz'}"
        """).lstrip())
    return manifest


#: How a worker killed by SIGKILL is reported. The forkserver start method reads a dead child's
#: status from the forkserver and, when that read fails (a race seen on a loaded machine), records
#: exit code 255 instead: both are the same crash.
KILLED = ("killed by SIGKILL", "exit code 255")


def check_crash_reported(outcomes: list[golden.GoldenOutcome], how: str | tuple[str, ...]) -> None:
    assert [o.entry.name for o in outcomes] == ["branches", "dies", "transposes"]
    branches, dies, transposes = outcomes
    assert branches.status == "ok" and transposes.status == "ok", branches.explain()
    assert dies.status == "ERROR" and isinstance(dies.error, WorkerCrashed)
    hows = (how,) if isinstance(how, str) else how
    assert any(h in str(dies.error) for h in hows) and "-k 'dies'" in str(dies.error)


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def test_worker_killed_is_that_models_error_and_others_finish(tmp_path: Path) -> None:
    manifest = golden.load_manifest(suite_with_crash(tmp_path))
    seen = []
    outcomes = golden.run_manifest(manifest.entries, progress=False, workers=2,
                                   on_outcome=lambda o: seen.append(o.entry.name))
    check_crash_reported(outcomes, KILLED)
    assert sorted(seen) == ["branches", "dies", "transposes"]
    serial_branches = golden.run_entry(manifest.entries[0])
    assert outcomes[0].layers == serial_branches.layers
    assert outcomes[0].passes == serial_branches.passes


def test_cli_worker_crash_in_table_junit_and_exit_code(tmp_path: Path) -> None:
    junit = tmp_path / "golden.xml"
    result = run_trtcompile("golden", str(suite_with_crash(tmp_path)), "--workers", "2",
                            "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = result.stdout.splitlines()[1:4]
    assert [row.split()[0] for row in rows] == ["branches", "dies", "transposes"]
    assert rows[1].endswith("ERROR") and rows[0].endswith("ok") and rows[2].endswith("ok")
    assert any("1 of 3 golden models failed: dies (error (WorkerCrashed): the worker process "
               f"compiling it died ({how})" in result.stderr for how in KILLED), result.stderr
    cases = {case.get("name"): case for case in ElementTree.parse(junit).iter("testcase")}
    assert cases["dies"].find("error").get("type") == "WorkerCrashed"
    assert cases["branches"].find("error") is None and cases["transposes"].find("error") is None


def test_bad_workers_value_is_refused(capsys) -> None:
    manifest = str(GOLDEN / "manifest.toml")
    for value in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as stopped:
            run_main(["golden", manifest, "--workers", value], capsys)
        assert stopped.value.code == 2
        assert "--workers: expected a positive number or 'auto'" in capsys.readouterr().err


def children_of(pid: int) -> set[int]:
    """Process ids of every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupt_ends_workers_and_writes_nothing(tmp_path: Path, signum: int) -> None:
    """A signal during a worker run: exit 130 as for a compile, every worker process ended, no
    JUnit report."""
    junit = tmp_path / "golden.xml"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "trtcompile.cli", "golden", str(GOLDEN / "manifest.toml"),
         "--workers", "2", "--junit", str(junit)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until models are compiling: the forkserver and at least one model's process.
        deadline = time.monotonic() + 60
        while len(children_of(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = children_of(process.pid)
        assert len(workers) >= 3, "the run started no worker processes"
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out + err
    assert err.splitlines()[-1] == (f"trtcompile: interrupted ({signal.Signals(signum).name}); "
                                    "nothing was written"), err
    assert "Traceback" not in err
    assert not junit.exists() and not list(tmp_path.iterdir())
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if alive(pid)], "worker processes outlived the run"


# --------------------------------------------------------------------------------------------
# Memory estimate
# --------------------------------------------------------------------------------------------


def test_memory_estimate_and_default_workers(tmp_path: Path, monkeypatch) -> None:
    manifest = golden.load_manifest(GOLDEN / "manifest.toml")
    by_name = {entry.name: entry for entry in manifest.entries}
    onnx_example = parallel.entry_memory(by_name["googlenet-example"])
    keras_example = parallel.entry_memory(by_name["googlenet-keras-example"])
    small = parallel.entry_memory(by_name["nhwc-transposes"])
    assert onnx_example == parallel.WORKER_BASE_BYTES
    assert keras_example == parallel.WORKER_BASE_BYTES + parallel.TENSORFLOW_BYTES
    files = (GOLDEN / "nhwc_transposes.onnx", GOLDEN / "nhwc_transposes.npz")
    assert small == parallel.WORKER_BASE_BYTES + parallel.MODEL_SIZE_FACTOR * sum(
        p.stat().st_size for p in files)

    monkeypatch.setattr(parallel, "cpu_count", lambda: 8)
    monkeypatch.setattr(parallel, "available_memory", lambda: 3 * keras_example)
    assert parallel.default_workers(manifest.entries) == 3  # memory caps 8 cores at 3
    assert parallel.default_workers(manifest.entries[2:]) == 2  # no more than the entries
    monkeypatch.setattr(parallel, "available_memory", lambda: keras_example // 2)
    assert parallel.default_workers(manifest.entries) == 1
    monkeypatch.setattr(parallel, "available_memory", lambda: 100 * keras_example)
    assert parallel.default_workers(manifest.entries) == 4


# --------------------------------------------------------------------------------------------
# target_gpu, files shipped to Ray tasks
# --------------------------------------------------------------------------------------------


def test_target_gpu_is_validated(tmp_path: Path) -> None:
    model = GOLDEN / "conv_branches.onnx"

    def manifest(extra: str) -> Path:
        path = tmp_path / "manifest.toml"
        path.write_text(f'[[model]]\nname = "m"\npath = "{model}"\n{extra}\n')
        return path

    entry, = golden.load_manifest(manifest('engine = true\ntarget_gpu = "RTX4090"')).entries
    assert entry.target_gpu == "RTX4090"
    assert parallel.task_resources(entry) == {
        "num_cpus": 1, "memory": parallel.entry_memory(entry),
        "resources": {"gpu_type:RTX4090": 1}}
    with pytest.raises(InputError, match=r":5: model 'm', key 'target_gpu': 'RTX 4090' is not a "
                                         r"GPU type name"):
        golden.load_manifest(manifest('engine = true\ntarget_gpu = "RTX 4090"'))
    with pytest.raises(InputError, match=r"key 'target_gpu': needs engine = true"):
        golden.load_manifest(manifest('target_gpu = "A100"'))
    with pytest.raises(InputError, match=r"key 'target_gpu': expected a non-empty string"):
        golden.load_manifest(manifest('engine = true\ntarget_gpu = 4090'))


def test_entry_files_travel_in_one_archive(tmp_path: Path) -> None:
    """An ONNX model with external weights, parity data and a pass module arrive complete in
    the task's folder, and the unpacked entry compiles like the original."""
    source = tmp_path / "source"
    source.mkdir()
    model = onnx.load(GOLDEN / "conv_branches.onnx")
    onnx.save_model(model, source / "branches.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="branches.weights", size_threshold=0)
    (source / "my_passes.py").write_text(KILLER_PASS)
    np.savez(source / "inputs.npz", input=np.random.default_rng(0).normal(
        size=(1, 4, 8, 8)).astype(np.float32))
    manifest = source / "manifest.toml"
    manifest.write_text(textwrap.dedent(f"""
        [[model]]
        name = "branches"
        path = "branches.onnx"
        pipeline = "{CONV_PIPELINE}"
        data = "inputs.npz"
        pass_modules = ["my_passes.py"]
        """))
    entry, = golden.load_manifest(manifest).entries
    archive = parallel.pack_entry(entry)
    moved = parallel.unpack_entry(entry, archive, tmp_path / "task")
    assert moved.path == tmp_path / "task" / "model" / "branches.onnx"
    assert (moved.path.parent / "branches.weights").read_bytes() == \
        (source / "branches.weights").read_bytes()
    assert moved.data.read_bytes() == (source / "inputs.npz").read_bytes()
    assert moved.pass_modules[0].read_text() == KILLER_PASS
    here, there = golden.run_entry(entry), golden.run_entry(moved)
    assert here.status == there.status == "ok", there.explain()
    assert (here.layers, here.passes, here.max_abs_error) == \
        (there.layers, there.passes, there.max_abs_error)


def _leaky_model(tmp_path: Path, how: str) -> Path:
    """The small golden model with its weights as external data, every tensor pointing at a file
    outside the model's folder: by an absolute path, by ``..``, or through a symbolic link."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not the model's " * 4096)
    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save_model(onnx.load(GOLDEN / "conv_branches.onnx"), folder / "branches.onnx",
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="branches.weights", size_threshold=0)
    (folder / "branches.weights").unlink()
    location = {"absolute": str(secret), "parent": "../secret.bin", "symlink": "link.bin"}[how]
    if how == "symlink":
        (folder / "link.bin").symlink_to(secret)
    model = onnx.load(folder / "branches.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
            elif entry.key == "offset":
                entry.value = "0"
    onnx.save(model, folder / "branches.onnx")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('[[model]]\nname = "leaky"\npath = "models/branches.onnx"\n')
    return manifest


@pytest.mark.parametrize("how, problem", [
    ("absolute", "an absolute path; external data must be a relative path inside the model's folder"),
    ("parent", "outside the model's folder; external data must stay inside the folder of the "
               ".onnx file"),
    ("symlink", "outside the model's folder; external data must stay inside the folder of the "
                ".onnx file"),
])
def test_external_data_outside_the_model_folder_is_never_shipped(tmp_path: Path, capsys,
                                                                 how: str, problem: str) -> None:
    manifest = _leaky_model(tmp_path, how)
    entry, = golden.load_manifest(manifest).entries
    with pytest.raises(InputError, match="external data") as refused:
        parallel.pack_entry(entry)
    assert problem in str(refused.value)
    assert parallel.entry_memory(entry) == parallel.WORKER_BASE_BYTES + \
        parallel.MODEL_SIZE_FACTOR * entry.path.stat().st_size  # the outside file is not counted
    # Every runner says the same, exit 2; the Ray run refuses the entry before starting Ray.
    for flags in ((), ("--workers", "1"), ("--ray", "local")):
        code, out, err = run_main(["golden", "--no-progress", "-q", str(manifest), *flags], capsys)
        assert code == 2, (flags, err)
        assert "leaky (error (InputError): " in err and problem in err, (flags, err)
        assert "not the model's" not in err


@pytest.mark.parametrize("address", ["foo", "host:99999", "ray:/head:10001", "http://head:8265",
                                     "head:port", ":6379"])
def test_a_ray_address_ray_cannot_use_is_refused_before_any_work(tmp_path: Path, capsys,
                                                                 address: str) -> None:
    junit = tmp_path / "r.xml"
    code, out, err = run_main(["golden", str(tmp_path / "absent.toml"), "--ray", address,
                               "--junit", str(junit)], capsys)
    assert code == 2 and out == "" and not junit.exists()
    assert err == (f"trtcompile: error: --ray {address!r}: expected 'local', 'auto', "
                   "ray://HOST:PORT (Ray Client, e.g. ray://head-node:10001) or HOST:PORT (the "
                   "cluster's GCS, e.g. head-node:6379)\n")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_ray_address_nothing_answers_at_exits_2_at_once(address: str) -> None:
    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    result = run_trtcompile("golden", str(GOLDEN / "manifest.toml"), "--ray", address, "-q",
                            timeout=120)  # Ray alone retries this address for minutes
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"trtcompile: error: --ray {address}: cannot connect (Connection refused); is a Ray "
        "cluster running there?"]


def test_a_ray_cluster_that_does_not_answer_is_given_up_after_the_timeout(tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    """Something listens at the address but Ray's handshake never completes: the run gives up
    after --ray-timeout seconds with one line instead of waiting as long as Ray retries."""
    import socket
    import threading
    import types

    answer = threading.Event()

    def init(address=None, **options):
        if not answer.wait(timeout=20):  # released by the test; 20 s: a run that waits for it
            raise RuntimeError("ray.init was waited for")

    fake = types.ModuleType("ray")
    fake.init, fake.is_initialized, fake.shutdown = init, (lambda: False), (lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f'[[model]]\nname = "m"\npath = "{GOLDEN / "conv_branches.onnx"}"\n')
    try:
        code, out, err = run_main(["golden", str(manifest), "--ray", f"127.0.0.1:{port}",
                                   "--ray-timeout", "1", "-q"], capsys)
    finally:
        answer.set()
        listener.close()
    assert code == 2, err
    assert err == (f"trtcompile: error: --ray 127.0.0.1:{port}: the Ray cluster did not answer "
                   "within 1 s (--ray-timeout); is a Ray cluster running there?\n")


def test_ray_missing_says_how_to_install(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    junit = tmp_path / "r.xml"
    code, out, err = run_main(["golden", str(GOLDEN / "manifest.toml"), "--ray", "local",
                               "--junit", str(junit)], capsys)
    assert code == 2 and out == "" and not junit.exists()
    assert err.strip() == ('trtcompile: error: --ray needs Ray, which is not installed; install '
                           'the extra with pip install -e ".[ray]" (or pip install '
                           "'trtcompile[ray]')")


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def ray_cluster():
    """A Ray cluster of two nodes in this process's session (torn down after): a head with 1 CPU
    and a node with 1 CPU declaring ``gpu_type:RTX4090``."""
    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * parallel.MiB, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=100 * parallel.MiB,
                     resources={"gpu_type:RTX4090": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_ray_cluster_places_target_gpu_and_reports_a_dead_worker(tmp_path: Path,
                                                                 ray_cluster) -> None:
    manifest = suite_with_crash(tmp_path)
    text = manifest.read_text().replace(
        '[[model]]\nname = "branches"',
        '[[model]]\nname = "branches"\nengine = true\ntarget_gpu = "RTX4090"')
    manifest.write_text(text)
    junit = tmp_path / "golden.xml"
    result = run_trtcompile("golden", str(manifest), "--ray", ray_cluster.address,
                            "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = result.stdout.splitlines()[1:4]
    assert [row.split()[0] for row in rows] == ["branches", "dies", "transposes"], result.stdout
    assert [row.split()[-1] for row in rows] == ["ok", "ERROR", "ok"], result.stdout
    assert "dies (error (WorkerCrashed): the worker process compiling it died (Ray " \
           "reported" in result.stderr
    cases = {case.get("name"): case for case in ElementTree.parse(junit).iter("testcase")}
    assert cases["branches"].find("properties/property[@name='engine_compute_layers']") is not None

    # No node offers the GPU type: refused before anything runs.
    manifest.write_text(text.replace('target_gpu = "RTX4090"', 'target_gpu = "H100"'))
    junit.unlink()
    result = run_trtcompile("golden", str(manifest), "--ray", ray_cluster.address,
                            "--junit", str(junit))
    assert result.returncode == 2 and not junit.exists()
    assert ("model 'branches': target_gpu = \"H100\" but no node of the Ray cluster offers the "
            "resource 'gpu_type:H100'") in result.stderr


# --------------------------------------------------------------------------------------------
# Shared caches
# --------------------------------------------------------------------------------------------


def _export_in_child(cache: str, log: str, barrier, seconds: float) -> None:
    """Child process: the example export replaced by a slow fake that logs each call."""
    os.environ["TRTCOMPILE_CACHE_DIR"] = cache
    from trtcompile.frontend import keras_example

    def fake_export(directory):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        path = Path(directory) / "googlenet_example"
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"fake")
        time.sleep(seconds)
        return path

    keras_example.example_savedmodel = fake_export
    if barrier is not None:
        barrier.wait()
    result = keras_example.cached_example_savedmodel()
    with open(log + ".result", "a") as handle:
        handle.write(f"{result}\n")


def test_example_export_runs_once_across_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    cache, log = tmp_path / "cache", tmp_path / "exports.log"
    barrier = context.Barrier(3)
    processes = [context.Process(target=_export_in_child, args=(str(cache), str(log), barrier, 1.0))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert len(log.read_text().split()) == 1  # one export; the two others waited and reused it
    path, = set((tmp_path / "exports.log.result").read_text().split())
    assert (Path(path) / "trtcompile-complete").is_file()
    assert sorted(p.name for p in (cache / "examples").iterdir()) == \
        sorted([Path(path).name, Path(path).name + ".lock"])  # no staging folder left


def test_example_export_killed_midway_leaves_nothing_used(tmp_path: Path) -> None:
    """A process killed while exporting (holding the lock) publishes nothing; the next one
    exports a complete model."""
    context = multiprocessing.get_context("spawn")
    cache, log = tmp_path / "cache", tmp_path / "exports.log"
    victim = context.Process(target=_export_in_child, args=(str(cache), str(log), None, 60.0))
    victim.start()
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    victim.kill()
    victim.join()
    examples = cache / "examples"
    assert not [p for p in examples.iterdir() if p.name.startswith("googlenet_example-seed")
                and not p.name.endswith(".lock")]
    survivor = context.Process(target=_export_in_child, args=(str(cache), str(log), None, 0.0))
    survivor.start()
    survivor.join(60)
    assert survivor.exitcode == 0 and len(log.read_text().split()) == 2
    path = Path((tmp_path / "exports.log.result").read_text().split()[0])
    assert (path / "trtcompile-complete").is_file() and (path / "saved_model.pb").is_file()


def _calibrate_in_child(cache: str, log: str, barrier) -> None:
    """Child process: resolve_ranges on a shared cache file, with calibration slowed down."""
    from tests.test_calibration import feeds, two_input_model
    from trtcompile import calibration
    from trtcompile.calibration import cache as calibration_cache

    real = calibration_cache.collect_ranges  # where resolve_ranges looks it up

    def slow_collect(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return real(*args, **kwargs)

    calibration_cache.collect_ranges = slow_collect
    setup = calibration.Calibration(data=calibration.CalibrationData(feeds()),
                                    cache_path=Path(cache), progress=False)
    barrier.wait()
    ranges, source = calibration.resolve_ranges(
        two_input_model(), ["a", "r"], setup, method="entropy", percentile=99.99,
        num_bins=2048, batch_size=8, max_batches=0)
    with open(log + ".result", "a") as handle:
        handle.write(f"{source} {ranges['a']!r} {ranges['r']!r}\n")


def test_calibration_cache_written_once_across_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    cache, log = tmp_path / "ranges.json", tmp_path / "calibrations.log"
    barrier = context.Barrier(3)
    processes = [context.Process(target=_calibrate_in_child, args=(str(cache), str(log), barrier))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert len(log.read_text().split()) == 1  # calibrated once
    results = sorted(line.split() for line in (tmp_path / "calibrations.log.result")
                     .read_text().splitlines())
    assert [r[0] for r in results] == ["cache", "cache", "calibration"]
    assert len({tuple(r[1:]) for r in results}) == 1  # every process got the same ranges
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ranges")) == \
        ["ranges.json", "ranges.json.lock"]  # no temporary file left
