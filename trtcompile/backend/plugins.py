"""Plugins: libraries and Python modules that register plugin creators with TensorRT, so an ONNX
op the parser does not know becomes a plugin layer inside the engine (the parser looks a creator up
by the node's op type, ``plugin_version`` and ``plugin_namespace`` attributes) instead of falling
back to ONNX Runtime.

* ``--plugin-library lib.so`` (trtexec's ``--staticPlugins``/``--dynamicPlugins``): loaded into
  TensorRT's plugin registry (``IPluginRegistry.load_library``);
* ``--plugin-module my_plugins.py``: a Python file defining ``plugin_creators(trt)``, which returns
  the creator objects to register (``trt`` is the TensorRT module in use, so one file serves
  ``tensorrt`` and ``tensorrt_rtx``); a module that registers creators itself on import works too.

Loading is once per process and file. TensorRT's parser can end the process (``std::terminate``)
while it turns a Python plugin into a layer where the TensorRT in use cannot host one (TensorRT-RTX
1.7 does): :func:`check_parse_survives` parses the model in a child process first and turns that
into a one-line BackendError instead of a crash.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from trtcompile.errors import BackendError, InputError


@dataclass
class PluginSet:
    """Plugins loaded for a build: creators by op name, and where each came from."""

    #: ``{creator name: source}`` (the library or Python file that registered it).
    creators: dict[str, str] = field(default_factory=dict)
    #: Creators registered from Python files (the ones :func:`check_parse_survives` guards).
    python_creators: set[str] = field(default_factory=set)

    def plugin_nodes(self, model: onnx.ModelProto) -> dict[str, str]:
        """``{node name: op type}`` of the top-level nodes a loaded creator will implement."""
        return {node.name: node.op_type for node in model.graph.node
                if node.op_type in self.creators}


_LOADED: dict[tuple[str, str], PluginSet] = {}
_LOCK = threading.Lock()
_SURVIVED: set[tuple] = set()


def _creator_names(registry) -> set[str]:
    names = set()
    for attribute in ("all_creators", "plugin_creator_list"):
        for creator in getattr(registry, attribute, None) or []:
            names.add(str(getattr(creator, "name", "")))
    return names


def load_plugins(trt: types.ModuleType, libraries=(), modules=()) -> PluginSet:
    """Load ``libraries`` and ``modules`` into ``trt``'s plugin registry (each once per process);
    the creators they registered. InputError for a file that does not load."""
    plugins = PluginSet()
    registry = trt.get_plugin_registry()
    for kind, paths in (("library", libraries), ("module", modules)):
        for path in paths:
            key = (kind, os.path.realpath(path))
            with _LOCK:
                if key not in _LOADED:
                    before = _creator_names(registry)
                    python = _load_module(trt, registry, Path(path)) if kind == "module" \
                        else _load_library(trt, registry, Path(path))
                    added = (_creator_names(registry) - before) | python
                    _LOADED[key] = PluginSet({name: str(path) for name in sorted(added)},
                                             python if kind == "module" else set())
                loaded = _LOADED[key]
            plugins.creators.update(loaded.creators)
            plugins.python_creators |= loaded.python_creators
    return plugins


def _load_library(trt: types.ModuleType, registry, path: Path) -> set[str]:
    try:
        handle = registry.load_library(os.fspath(path))
    except Exception as error:  # noqa: BLE001 - the bindings raise for a library they cannot open
        raise InputError(f"--plugin-library {path}: {trt.__name__} cannot load it "
                         f"({' '.join(str(error).split())})") from None
    if handle is None:
        raise InputError(f"--plugin-library {path}: {trt.__name__} cannot load it (not a plugin "
                         "library, or built for another TensorRT)")
    return set()


def _load_module(trt: types.ModuleType, registry, path: Path) -> set[str]:
    name = f"trtcompile_plugins_{abs(hash(os.path.realpath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"--plugin-module {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        creators = list(module.plugin_creators(trt)) if hasattr(module, "plugin_creators") else []
    except Exception as error:  # noqa: BLE001 - the user's code: say where, in one line
        raise InputError(f"--plugin-module {path}: {type(error).__name__}: "
                         f"{' '.join(str(error).split())}") from None
    names = set()
    for creator in creators:
        namespace = str(getattr(creator, "plugin_namespace", "") or "")
        if not registry.register_creator(creator, namespace):
            if str(creator.name) not in _creator_names(registry):
                raise InputError(f"--plugin-module {path}: {trt.__name__} refused to register "
                                 f"plugin creator '{creator.name}'")
        names.add(str(creator.name))
        # The registry holds a native pointer: the Python object must outlive the process's use.
        _KEEP_ALIVE.append(creator)
    if not creators and not hasattr(module, "plugin_creators"):
        return set()
    return names


_KEEP_ALIVE: list = []


def check_parse_survives(trt: types.ModuleType, model: onnx.ModelProto, plugins: PluginSet,
                         libraries=(), modules=()) -> None:
    """Parse ``model`` with the plugins loaded in a child process when it has nodes a Python
    plugin implements; BackendError in one line when TensorRT ends that process (the parent would
    otherwise die with it). Each model and plugin set is checked once per process."""
    nodes = {name: op for name, op in plugins.plugin_nodes(model).items()
             if op in plugins.python_creators}
    if not nodes:
        return
    key = (model.SerializeToString(deterministic=True).__hash__(), tuple(libraries), tuple(modules))
    if key in _SURVIVED:
        return
    with tempfile.TemporaryDirectory(prefix="trtcompile-plugin-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, os.fspath(path))
        command = [sys.executable, "-m", "trtcompile.backend.plugin_probe", os.fspath(path),
                   *[f"--library={p}" for p in libraries], *[f"--module={p}" for p in modules]]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
            str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])))
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode < 0 or result.returncode not in (0, 1):
        listed = ", ".join(f"'{name}' ({op})" for name, op in nodes.items())
        from trtcompile.backend.build_config import tensorrt_name

        raise BackendError(f"{tensorrt_name(trt)} ended the process while turning the Python "
                           f"plugin node(s) {listed} into engine layers (exit status "
                           f"{result.returncode}); this TensorRT cannot host Python plugins: use "
                           "a --plugin-library, or let the node fall back to ONNX Runtime")
    _SURVIVED.add(key)


__all__ = ["PluginSet", "check_parse_survives", "load_plugins"]
