"""``python -m trtcompile.backend.plugin_probe MODEL [--library=L] [--module=M]``: parse MODEL with
the plugins loaded, in a process of its own (see :func:`trtcompile.backend.plugins.check_parse_survives`).

Exit status 0: parsed; 1: the parser rejected the model (the parent reports that itself); killed
by a signal or any other status: TensorRT ended the process.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Load the plugins, parse the model; the exit status says how it went."""
    import onnx

    from trtcompile.backend.build_config import network_flags
    from trtcompile.backend.loader import load_tensorrt
    from trtcompile.backend.log import capture_log, log_router
    from trtcompile.backend.plugins import load_plugins

    model_path = argv[0]
    libraries = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--library=")]
    modules = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--module=")]
    trt = load_tensorrt()
    load_plugins(trt, libraries, modules)
    router = log_router(trt)
    with capture_log(trt):
        builder = trt.Builder(router)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, router)
        ok = parser.parse(onnx.load(model_path).SerializeToString())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
