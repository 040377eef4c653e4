"""The lowering's worker process: lower one model described by a request file and write the model
and the result (or the input error) next to it, for :mod:`trtcompile.frontend.tensorflow`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx

from trtcompile.errors import InputError
from trtcompile.frontend.tf_lowering.lower import lower, peak_rss_mb


def worker_main(argv: Sequence[str]) -> int:
    """``python -m trtcompile.frontend.tf_lowering REQUEST.json``: lower one model in this process.

    The request names the model, its kind, the frontend options and an output folder; the worker
    writes ``model.onnx`` and ``result.json`` there, or ``error.json`` for bad input.
    """
    import tensorflow  # noqa: F401  (imported first so that result.seconds times the lowering alone)

    from trtcompile.frontend.model import FrontendOptions

    request = json.loads(Path(argv[0]).read_text())
    out_dir = Path(request["out_dir"])
    options_data = request["options"]
    options_data["input_shapes"] = {k: list(v) for k, v in options_data["input_shapes"].items()}
    options = FrontendOptions(**options_data)
    try:
        model, result = lower(Path(request["path"]), request["kind"], options)
    except InputError as error:
        (out_dir / "error.json").write_text(json.dumps({"message": str(error)}))
        return 2
    model_path = out_dir / "model.onnx"
    if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF:
        onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data")
    else:
        model_path.write_bytes(model.SerializeToString())
    del model
    result.peak_rss_mb = peak_rss_mb()
    (out_dir / "result.json").write_text(result.to_json())
    return 0
