"""Running a golden suite (a model zoo) on several processes or on a Ray cluster.

Two existing engines do the scheduling; this module only tells them what one model's work is,
what it needs, and how its result comes back:

* :func:`run_local` (``trtcompile golden --workers N``): ``concurrent.futures``. Each model
  compiles in a process of its own (a one-process ``ProcessPoolExecutor`` started from a
  forkserver that has trtcompile imported), at most N at a time (a ``ThreadPoolExecutor`` of N
  threads, each waiting on one model's process). A process per model is what makes a crash
  attributable: a worker that dies (killed, out of memory, a segfault in native code) breaks
  only its own pool, so exactly that model is reported with a :class:`~trtcompile.errors.WorkerCrashed`
  error and the others carry on. It also returns each model's memory (TensorFlow, TensorRT and
  ONNX Runtime keep theirs until the process ends) before the next one starts.
* :func:`run_ray` (``--ray ADDRESS`` or ``--ray local``): Ray tasks. The entry's files (model,
  external weights, parity data, calibration samples, pass modules) travel as one object ref
  (a tar archive put in the object store), so nodes need no shared filesystem; the outcome comes
  back as the task's return object. Each task declares ``num_cpus=1``, ``memory`` (the estimate
  below) and, for an entry with ``target_gpu = "X"``, one unit of the custom resource
  ``gpu_type:X``, which the nodes holding that GPU declare (``ray start --resources
  '{"gpu_type:X": 1}'``); the engine is then built on such a node. Tasks run with
  ``max_retries=0``: a worker that dies is reported (Ray attributes the death to its task), not
  retried. Ray reuses its worker processes across tasks, as it does by default, so a worker pays
  the imports (ONNX Runtime, Polygraphy, TensorRT, TensorFlow) once rather than once per model;
  a worker that ran a TensorFlow model keeps that memory while it runs the next ones.

Results are the same as the serial run's, in manifest order; only the engine plan bytes and the
builder's log stay in the worker (the golden verdicts need the engine's layer list, which comes
back).

Memory per worker. :func:`entry_memory` estimates one model's peak resident memory as
``WORKER_BASE_BYTES`` (+ ``TENSORFLOW_BYTES`` when the model is lowered from TensorFlow) +
``MODEL_SIZE_FACTOR`` x the model's size on disk. The constants are measured (peak RSS, ``ru_maxrss``,
of a fresh process running one entry of the project's suite, engine included): the ONNX built-in
example peaks at 476 MB (the interpreter with ONNX Runtime, Polygraphy and the TensorRT builder);
the Keras example, lowered through TensorFlow, at 1034 MB; the factor covers the copies of the
weights alive at once (the loaded model, the graph being rewritten, the optimized model, two ONNX
Runtime sessions for parity, the TensorRT network). :func:`default_workers` takes one worker per
core, capped so that the largest estimate times the workers fits in the available memory.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

from trtcompile.checks import available_memory
from trtcompile.errors import InputError, WorkerCrashed
from trtcompile.golden.manifest import GoldenEntry
from trtcompile.golden.runner import GoldenOutcome, progress_bar, run_entry, run_serial

MiB = 1 << 20

#: Peak memory of a worker compiling a small ONNX model with its engine (measured 476 MB).
WORKER_BASE_BYTES = 512 * MiB
#: Extra peak memory of a model lowered from TensorFlow (the Keras example measured 1034 MB).
TENSORFLOW_BYTES = 640 * MiB
#: Copies of the model's weights alive at the peak of a compile.
MODEL_SIZE_FACTOR = 8

#: ``--ray`` value that starts a local Ray cluster for the run (and stops it after).
RAY_LOCAL = "local"
#: ``--ray`` value that connects to the cluster this machine runs (Ray's ``address="auto"``).
RAY_AUTO = "auto"
#: Seconds ``--ray ADDRESS`` waits for the cluster to answer before it gives up (``--ray-timeout``):
#: Ray itself retries an unreachable address for minutes.
RAY_CONNECT_TIMEOUT = 30.0
#: A ``--ray`` address: ``host:port`` (the GCS of a cluster) or ``ray://host:port`` (Ray Client);
#: the host a name, an IPv4 address or a bracketed IPv6 address.
RAY_ADDRESS = re.compile(r"^(?P<scheme>ray://)?(?P<host>[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?"
                         r"|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")
#: Object store of a local cluster: at least this, or twice the models shipped.
RAY_LOCAL_OBJECT_STORE_BYTES = 200 * MiB
#: How ``--ray`` says Ray is missing.
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'
#: Prefix of the custom Ray resource a node of a GPU type declares.
GPU_TYPE_RESOURCE = "gpu_type:"

#: Model files that are TensorFlow (a folder is a SavedModel).
_TENSORFLOW_SUFFIXES = (".keras", ".h5", ".pb")
#: Built-in examples lowered from TensorFlow.
_TENSORFLOW_EXAMPLES = ("googlenet-keras",)


# --------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def entry_memory(entry: GoldenEntry) -> int:
    """Estimated peak memory (bytes) of the process compiling ``entry`` (see the module doc)."""
    estimate = WORKER_BASE_BYTES
    if entry.path is None:
        return estimate + (TENSORFLOW_BYTES if entry.example in _TENSORFLOW_EXAMPLES else 0)
    if entry.path.is_dir() or entry.path.suffix.lower() in _TENSORFLOW_SUFFIXES:
        estimate += TENSORFLOW_BYTES
    return estimate + MODEL_SIZE_FACTOR * sum(_size_on_disk(p) for p in _entry_files(entry))


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(entries: Sequence[GoldenEntry]) -> int:
    """One worker per core, no more than there are entries, and no more than the available
    memory holds at the largest entry's estimate (at least one)."""
    largest = max((entry_memory(e) for e in entries), default=WORKER_BASE_BYTES)
    return max(1, min(cpu_count(), len(entries) or 1, available_memory() // largest))


# --------------------------------------------------------------------------------------------
# What a worker runs
# --------------------------------------------------------------------------------------------


def portable(outcome: GoldenOutcome) -> GoldenOutcome:
    """``outcome`` as it travels back from a worker: the engine without its plan and log (the
    verdict needs its layers only)."""
    if outcome.engine is not None:
        outcome.engine = replace(outcome.engine, plan=b"", log_lines=[])
    if outcome.partition is not None:  # the segments' verdicts travel, their models and plans not
        for segment in outcome.partition.segments:
            if segment.engine is not None:
                segment.engine = replace(segment.engine, plan=b"", log_lines=[])
            segment.model = None
        outcome.partition.model = outcome.partition.epcontext = None
    return outcome


def compile_entry(entry: GoldenEntry) -> GoldenOutcome:
    """A worker's job: :func:`~trtcompile.golden.run_entry`, the outcome made portable."""
    return portable(run_entry(entry))


def crashed(entry: GoldenEntry, seconds: float, how: str) -> GoldenOutcome:
    """The outcome of an entry whose worker died."""
    return GoldenOutcome(entry=entry, seconds=seconds, error=WorkerCrashed(
        f"the worker process compiling it died ({how}) before reporting a result; run the entry "
        f"alone (-k '{entry.name}') to see the crash"))


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return "exit code unknown" if exitcode is None else f"exit code {exitcode}"


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; the driver decides how to stop (it ends workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------------------------
# Local worker processes
# --------------------------------------------------------------------------------------------


def _context() -> multiprocessing.context.BaseContext:
    """A forkserver (spawn where there is none) with trtcompile imported once, so a process per
    model starts in milliseconds; never fork, which would copy TensorFlow's threads."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        import importlib.util

        context = multiprocessing.get_context("forkserver")
        preload = ["trtcompile.golden", "trtcompile.flow",
                   "onnxruntime", "polygraphy.backend.onnxrt"]
        # Polygraphy imports torch, when it is installed, on its first array check (seconds):
        # once in the server instead of once per model.
        if importlib.util.find_spec("torch") is not None:
            preload.append("torch")
        context.set_forkserver_preload(preload)
        return context
    return multiprocessing.get_context("spawn")


class _Processes:
    """The one-process pools alive, so an interrupted run can end them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pools: set[ProcessPoolExecutor] = set()
        self.stopping = threading.Event()

    def kill_all(self) -> None:
        self.stopping.set()
        with self.lock:
            pools = list(self.pools)
        for pool in pools:
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    process.kill()


def _run_in_own_process(entry: GoldenEntry, context, processes: _Processes) -> GoldenOutcome:
    """Compile ``entry`` in a fresh worker process; a dead worker becomes the entry's error."""
    if processes.stopping.is_set():
        raise KeyboardInterrupt
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_worker_init)
    with processes.lock:
        processes.pools.add(pool)
    try:
        future = pool.submit(compile_entry, entry)
        # The pool's one process, for its exit code if it dies.
        worker = next(iter(getattr(pool, "_processes", {}).values()), None)
        try:
            return future.result()
        except BrokenProcessPool:
            if processes.stopping.is_set():
                raise KeyboardInterrupt from None
            if worker is not None:
                worker.join(timeout=5)
            return crashed(entry, time.perf_counter() - started,
                           _how_it_died(worker.exitcode if worker is not None else None))
    finally:
        with processes.lock:
            processes.pools.discard(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def run_local(entries: Sequence[GoldenEntry], workers: int | None = None, *,
              progress: bool = True,
              on_outcome: Callable[[GoldenOutcome], None] | None = None) -> list[GoldenOutcome]:
    """Compile ``entries`` in ``workers`` worker processes at a time (None or 0:
    :func:`default_workers`); outcomes in manifest order. An interrupt (Ctrl-C, or SIGTERM
    turned into one) ends every worker and propagates."""
    if not workers:
        workers = default_workers(entries)
    if workers < 1:
        raise InputError(f"--workers {workers}: expected a positive number of workers")
    context = _context()
    processes = _Processes()
    threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="golden-worker")
    futures = [threads.submit(_run_in_own_process, entry, context, processes) for entry in entries]
    names = {future: entry.name for future, entry in zip(futures, entries)}
    try:
        with progress_bar(len(entries), progress) as bar:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()  # a bug in a worker keeps its traceback
                    if on_outcome is not None:
                        on_outcome(outcome)
                    bar.set_postfix_str(names[future], refresh=False)
                    bar.update(1)
    except BaseException:
        processes.kill_all()
        for future in futures:
            future.cancel()
        threads.shutdown(wait=True, cancel_futures=True)
        raise
    threads.shutdown(wait=True)
    return [future.result() for future in futures]


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------


def import_ray():
    """The ``ray`` module; InputError (exit 2) saying how to install it when it is missing."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed; install the extra with "
                         f"{RAY_INSTALL_HINT} (or pip install 'trtcompile[ray]')") from None
    return ray


def _entry_files(entry: GoldenEntry) -> list[Path]:
    """Every file or folder the entry reads: the model (and the external weights an ONNX file
    names, when they pass the load stage's check), parity data, calibration samples, pass
    modules."""
    files: list[Path] = []
    if entry.path is not None:
        files.append(entry.path)
        if entry.path.is_file() and entry.path.suffix.lower() == ".onnx":
            try:
                files += [entry.path.parent / name for name in _external_data(entry.path)]
            except InputError:  # refused: never read here, the compile reports it
                pass
    files += [p for p in (entry.data, entry.calib_data) if p is not None]
    files += list(entry.pass_modules)
    return files


def _external_data(model_path: Path) -> list[str]:
    """Relative file names of the external weights an ONNX file refers to, each checked as the
    serial compile checks it (inside the model's folder) before any is read; InputError for a
    location outside it (a model naming ``/etc/passwd`` must not ship that file)."""
    from trtcompile.flow.optimize import external_data_locations

    return external_data_locations(model_path)


def pack_entry(entry: GoldenEntry) -> bytes:
    """The entry's files as one tar archive: the model's folder layout kept for an ONNX file's
    external weights (``0/model.onnx``, ``0/weights.data``), one top folder per other file.
    InputError, before a byte is read, when the model names external data outside its folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for arcname, path in _archive_names(entry).items():
            archive.add(path, arcname=arcname)
    return buffer.getvalue()


def _archive_names(entry: GoldenEntry) -> dict[str, Path]:
    names: dict[str, Path] = {}
    if entry.path is not None:
        names[f"model/{entry.path.name}"] = entry.path
        if entry.path.is_file() and entry.path.suffix.lower() == ".onnx":
            for name in _external_data(entry.path):
                names[f"model/{name}"] = entry.path.parent / name
    if entry.data is not None:
        names[f"data/{entry.data.name}"] = entry.data
    if entry.calib_data is not None:
        names[f"calib/{entry.calib_data.name}"] = entry.calib_data
    for index, module in enumerate(entry.pass_modules):
        names[f"passes{index}/{module.name}"] = module
    return names


def unpack_entry(entry: GoldenEntry, archive: bytes, folder: Path) -> GoldenEntry:
    """``entry`` with its paths pointing into ``folder``, where ``archive`` is unpacked."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        tar.extractall(folder, filter="data")

    def moved(prefix: str, path: Path | None) -> Path | None:
        return None if path is None else folder / prefix / path.name

    return replace(
        entry, path=moved("model", entry.path), data=moved("data", entry.data),
        calib_data=moved("calib", entry.calib_data),
        pass_modules=tuple(folder / f"passes{i}" / m.name for i, m in enumerate(entry.pass_modules)))


def ray_task(entry: GoldenEntry, archive: bytes) -> GoldenOutcome:
    """One model as a Ray task: unpack its files into a temporary folder, compile, return the
    portable outcome (holding the entry as the driver knows it, its own paths)."""
    with tempfile.TemporaryDirectory(prefix="trtcompile-golden-") as folder:
        outcome = compile_entry(unpack_entry(entry, archive, Path(folder)))
    outcome.entry = entry
    return outcome


def task_resources(entry: GoldenEntry) -> dict[str, Any]:
    """The Ray task options declaring what compiling ``entry`` needs."""
    options: dict[str, Any] = {"num_cpus": 1, "memory": entry_memory(entry)}
    if entry.target_gpu:
        options["resources"] = {GPU_TYPE_RESOURCE + entry.target_gpu: 1}
    return options


def _check_feasible(ray, entries: Sequence[GoldenEntry]) -> None:
    """Refuse an entry no node of the cluster could run (Ray would wait for it forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for entry in entries:
        demand = task_resources(entry)
        need = {"CPU": demand["num_cpus"], "memory": demand["memory"], **demand.get("resources", {})}
        if any(all(node.get(key, 0) >= amount for key, amount in need.items()) for node in nodes):
            continue
        missing = [key for key in need if not any(node.get(key, 0) >= need[key] for node in nodes)]
        if entry.target_gpu and GPU_TYPE_RESOURCE + entry.target_gpu in missing:
            raise InputError(
                f"model '{entry.name}': target_gpu = \"{entry.target_gpu}\" but no node of the Ray "
                f"cluster offers the resource '{GPU_TYPE_RESOURCE}{entry.target_gpu}' (start the "
                f"nodes with that GPU with ray start --resources='{{\"{GPU_TYPE_RESOURCE}"
                f"{entry.target_gpu}\": 1}}')")
        raise InputError(
            f"model '{entry.name}' needs {need['CPU']} CPU and {need['memory'] / 2**30:.1f} GiB of "
            f"memory on one node; no node of the Ray cluster has that much free ({', '.join(missing)})")


def check_ray_address(address: str) -> tuple[str, int] | None:
    """Refuse a ``--ray`` value that is neither ``local``, ``auto``, ``ray://host:port`` nor
    ``host:port`` (InputError, one line); the host and port to reach, None for ``local`` and
    ``auto``."""
    if address in (RAY_LOCAL, RAY_AUTO):
        return None
    match = RAY_ADDRESS.match(address)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise InputError(f"--ray {address!r}: expected 'local', 'auto', ray://HOST:PORT (Ray "
                         "Client, e.g. ray://head-node:10001) or HOST:PORT (the cluster's GCS, "
                         "e.g. head-node:6379)")
    return match["host"].strip("[]"), int(match["port"])


def _check_reachable(address: str, host: str, port: int, timeout: float) -> None:
    """Refuse an address nothing answers at, within ``timeout`` seconds (Ray would retry it for
    minutes): one TCP connection, closed at once."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        raise InputError(f"--ray {address}: unknown host '{host}'") from None
    except TimeoutError:
        raise InputError(f"--ray {address}: no answer within {timeout:g} s (--ray-timeout); is the "
                         "cluster running and reachable from here?") from None
    except OSError as exc:
        raise InputError(f"--ray {address}: cannot connect ({exc.strerror or exc}); is a Ray "
                         "cluster running there?") from None


def _connect(ray, address: str, timeout: float, **options: Any) -> None:
    """``ray.init(address=...)`` with a deadline: Ray retries a cluster that does not answer (a
    port that is open but no Ray, a head that is down) for minutes, so the call runs in a daemon
    thread and the run gives up after ``timeout`` seconds with one line."""
    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(address=address, **options)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        raise InputError(f"--ray {address}: the Ray cluster did not answer within {timeout:g} s "
                         "(--ray-timeout); is a Ray cluster running there?")
    error = outcome["error"]
    if isinstance(error, ConnectionError):
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({reason})") from None
    if error is not None:
        raise error


def _init_ray(ray, address: str, workers: int | None, object_store: int,
              timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    import logging

    quiet = {"logging_level": logging.WARNING, "log_to_driver": False,
             "configure_logging": True}
    if address == RAY_LOCAL:
        ray.init(num_cpus=workers or cpu_count(), include_dashboard=False,
                 object_store_memory=object_store, **quiet)
        return
    if workers:
        raise InputError("--workers applies to local runs and to --ray local; a Ray cluster "
                         "schedules by the resources each task declares")
    reach = check_ray_address(address)
    if reach is not None:
        _check_reachable(address, *reach, timeout)
    # Connecting from a thread other than the main one makes Ray warn that it cannot install its
    # SIGTERM handler (the run's own handler is in place): its warnings resume once connected.
    _connect(ray, address, timeout, **{**quiet, "logging_level": logging.ERROR})
    logging.getLogger("ray").setLevel(logging.WARNING)


def run_ray(entries: Sequence[GoldenEntry], address: str, *, workers: int | None = None,
            progress: bool = True,
            on_outcome: Callable[[GoldenOutcome], None] | None = None,
            timeout: float | None = None) -> list[GoldenOutcome]:
    """Compile ``entries`` as Ray tasks on the cluster at ``address`` (``"local"``: a local
    cluster of ``workers`` CPUs, default one per core, started for the run and stopped after);
    outcomes in manifest order. Connecting gives up after ``timeout`` seconds (None:
    :data:`RAY_CONNECT_TIMEOUT`). What Ray prints while it runs (a raylet's report of a dead
    worker, for one) goes to stderr: stdout is the result table's."""
    check_ray_address(address)
    ray = import_ray()
    with contextlib.redirect_stdout(sys.stderr):
        return _run_ray(ray, entries, address, workers=workers, progress=progress,
                        on_outcome=on_outcome,
                        timeout=RAY_CONNECT_TIMEOUT if timeout is None else timeout)


def _run_ray(ray, entries: Sequence[GoldenEntry], address: str, *, workers: int | None,
             progress: bool, on_outcome: Callable[[GoldenOutcome], None] | None,
             timeout: float) -> list[GoldenOutcome]:
    # An entry whose files cannot be shipped (external data outside the model's folder) is that
    # entry's error, as in the serial run, and none of its files is read.
    outcomes: dict[int, GoldenOutcome] = {}
    archives: dict[int, bytes] = {}
    for i, entry in enumerate(entries):
        try:
            archives[i] = pack_entry(entry)
        except InputError as exc:
            outcomes[i] = GoldenOutcome(entry=entry, error=exc)
            if on_outcome is not None:
                on_outcome(outcomes[i])
    if not archives:
        return [outcomes[i] for i in range(len(entries))]
    object_store = max(RAY_LOCAL_OBJECT_STORE_BYTES, 2 * sum(map(len, archives.values())))
    if ray.is_initialized():
        raise InputError("--ray: Ray is already initialised in this process")
    _init_ray(ray, address, workers, object_store, timeout)
    refs: list = []
    try:
        _check_feasible(ray, [entries[i] for i in archives])
        task = ray.remote(max_retries=0)(ray_task)
        refs = [task.options(**task_resources(entries[i]), name=f"golden:{entries[i].name}")
                .remote(entries[i], ray.put(archive)) for i, archive in archives.items()]
        started = time.perf_counter()
        index = {ref: i for ref, i in zip(refs, archives)}
        with progress_bar(len(entries), progress) as bar:
            bar.update(len(outcomes))
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    outcome = _ray_result(ray, ref, entries[i], time.perf_counter() - started)
                    outcomes[i] = outcome
                    if on_outcome is not None:
                        on_outcome(outcome)
                    bar.set_postfix_str(entries[i].name, refresh=False)
                    bar.update(1)
        return [outcomes[i] for i in range(len(entries))]
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def _ray_result(ray, ref, entry: GoldenEntry, seconds: float) -> GoldenOutcome:
    """The task's outcome; a worker that died is the entry's error (a bug keeps its traceback)."""
    from ray.exceptions import WorkerCrashedError

    try:
        return ray.get(ref)
    except WorkerCrashedError as exc:
        return crashed(entry, seconds, f"Ray reported: {str(exc).splitlines()[0]}")
    except ray.exceptions.OutOfMemoryError:
        return crashed(entry, seconds, "killed by Ray's memory monitor: out of memory")


__all__ = ["GPU_TYPE_RESOURCE", "MODEL_SIZE_FACTOR", "RAY_AUTO", "RAY_CONNECT_TIMEOUT",
           "RAY_INSTALL_HINT", "RAY_LOCAL", "TENSORFLOW_BYTES", "WORKER_BASE_BYTES",
           "available_memory", "check_ray_address", "compile_entry",
           "cpu_count", "crashed", "default_workers", "entry_memory", "import_ray", "pack_entry",
           "portable", "ray_task", "run_local", "run_ray", "task_resources", "unpack_entry"]


def run_manifest(entries: Sequence[GoldenEntry], *, progress: bool = True,
                 on_outcome: Callable[[GoldenOutcome], None] | None = None,
                 workers: int | None = None, ray: str | None = None,
                 ray_timeout: float | None = None) -> list[GoldenOutcome]:
    """Run ``entries`` with a progress bar on stderr (off when stderr is not a terminal) and
    return their outcomes in manifest order; ``on_outcome`` sees each outcome as it is ready.

    By default the entries run one after the other in this process. ``workers=N`` runs them in
    N worker processes, ``ray=ADDRESS`` (or ``"local"``) as tasks of a Ray cluster (see
    this module; ``ray_timeout``: seconds to connect, default :data:`RAY_CONNECT_TIMEOUT`); the
    verdicts are the same, but outcomes that come back from
    another process carry the engine's layers without its plan bytes or builder log.
    """
    if ray is not None:
        return run_ray(entries, ray, workers=workers, progress=progress,
                       on_outcome=on_outcome, timeout=ray_timeout)
    if workers is not None:
        return run_local(entries, workers, progress=progress, on_outcome=on_outcome)
    return run_serial(entries, progress=progress, on_outcome=on_outcome)
