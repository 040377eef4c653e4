"""Lowering TensorFlow models to ONNX with tf2onnx, and running them as the parity reference.

This package imports TensorFlow; :mod:`trtcompile.frontend.tensorflow` imports it only inside a lowering
(normally in a worker process started with ``python -m trtcompile.frontend.tf_lowering``) or when the
reference runner is first called, so importing trtcompile stays fast.

The lowering, stage by stage:

1. **Source function.** A SavedModel signature (``tf.saved_model.load(...).signatures[name]``), or a
   ``tf.function`` traced over a Keras model's ``call`` (``.keras``/``.h5``, loaded with
   ``compile=False`` and Keras safe mode), or a frozen ``GraphDef`` (``.pb``). The ONNX graph's input
   and output names come from here: signature keys, Keras input/output layer names, or frozen-graph
   tensor names without the ``:0`` suffix.
2. **Freezing.** Variables become ``Const`` nodes in a ``GraphDef`` by TensorFlow's own
   ``_replace_variables_by_constants`` (through tf2onnx's ``convert_variables_to_constants_large_model``).
   The public ``convert_variables_to_constants_v2`` does the same work and then rebuilds an eager
   ``ConcreteFunction`` from the frozen graph, which nobody needs here: for Keras VGG19 that rebuild
   alone copied the 574 MB of weights a dozen times (about 25 s and 5 GB).
3. **Grappler** with tf2onnx's settings (``constfold``, ``function``, ``dependency``), as tf2onnx
   always does. Grappler copies the whole ``GraphDef`` many times (meta-graph export, serialization,
   one copy per optimizer and iteration, deserialization): on VGG19 it peaked at 9.5 GB. Large weights
   that grappler cannot fold anyway (kernels of MatMul/convolutions, :data:`HIDDEN_WEIGHT_BYTES` and up)
   are therefore replaced by placeholders while grappler runs and put back afterwards; grappler still
   sees, and folds, everything else exactly as in a plain tf2onnx conversion.
4. **tf2onnx** ``process_tf_graph`` (handlers + rewriters) with the requested opset, shape overrides
   and ``inputs_as_nchw``; then tf2onnx's ONNX optimizers: none in ``faithful`` mode (our passes do that
   work), all of them in ``tf2onnx-optimized`` mode.

The reference runner (:class:`TensorFlowReference`) runs the original model with TensorFlow on
ONNX-named feeds and returns ONNX-named outputs.

The package, by concern: :mod:`~trtcompile.frontend.tf_lowering.records` (what the stages hand on),
:mod:`~trtcompile.frontend.tf_lowering.freeze` (stages 1 and 2),
:mod:`~trtcompile.frontend.tf_lowering.grappler` (stage 3), :mod:`~trtcompile.frontend.tf_lowering.lower`
(stage 4 and the whole lowering), :mod:`~trtcompile.frontend.tf_lowering.reference` (the reference
runner) and :mod:`~trtcompile.frontend.tf_lowering.worker` (the worker process). Every name is
importable from ``trtcompile.frontend.tf_lowering`` itself.
"""

import os

# Before anything imports TensorFlow: its C++ start-up lines below warnings stay off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trtcompile.frontend.tf_lowering.freeze import (  # noqa: E402
    PLUMBING_OPS,
    count_source_ops,
    first_line,
    import_tensorflow_quietly,
    keras_io_names,
    load_keras_model,
    load_signature,
    read_graph_def,
    source_graph,
)
from trtcompile.frontend.tf_lowering.grappler import (  # noqa: E402
    HIDDEN_WEIGHT_BYTES,
    WEIGHT_CONSUMERS,
    run_grappler,
)
from trtcompile.frontend.tf_lowering.lower import (  # noqa: E402
    DEFAULT_OPSET,
    SUPPORTED_OPSETS,
    convert,
    lower,
    peak_rss_mb,
    tool_name,
)
from trtcompile.frontend.tf_lowering.records import (  # noqa: E402
    LoweringResult,
    SourceGraph,
    TensorBinding,
)
from trtcompile.frontend.tf_lowering.reference import TensorFlowReference  # noqa: E402
from trtcompile.frontend.tf_lowering.worker import worker_main  # noqa: E402

__all__ = [
    "DEFAULT_OPSET", "HIDDEN_WEIGHT_BYTES", "PLUMBING_OPS", "SUPPORTED_OPSETS", "WEIGHT_CONSUMERS",
    "LoweringResult", "SourceGraph", "TensorBinding", "TensorFlowReference", "convert",
    "count_source_ops", "first_line", "import_tensorflow_quietly", "keras_io_names",
    "load_keras_model", "load_signature", "lower", "peak_rss_mb", "read_graph_def", "run_grappler",
    "source_graph", "tool_name", "worker_main",
]
