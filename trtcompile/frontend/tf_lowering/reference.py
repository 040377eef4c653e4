"""The parity reference for TensorFlow models: the source model run with TensorFlow on ONNX-named
feeds, returning ONNX-named outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from trtcompile.errors import InputError
from trtcompile.frontend.tf_lowering.freeze import (
    import_tensorflow_quietly,
    keras_io_names,
    load_keras_model,
    load_signature,
    read_graph_def,
)
from trtcompile.frontend.tf_lowering.records import TensorBinding


class TensorFlowReference:
    """Runs the source model with TensorFlow on ONNX-named feeds; returns ONNX-named outputs.

    The model is loaded on the first call (TensorFlow is imported then, not before). Inputs lowered
    with ``inputs_as_nchw`` are transposed back to NHWC before TensorFlow sees them.
    """

    def __init__(self, path: Path, kind: str, options, inputs: Sequence[TensorBinding],
                 outputs: Sequence[TensorBinding]):
        self.path, self.kind, self.options = Path(path), kind, options
        self.inputs, self.outputs = list(inputs), list(outputs)
        self._run = None

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._run is None:
            self._run = self._build()
        missing = [b.onnx_name for b in self.inputs if b.onnx_name not in feeds]
        if missing:
            raise InputError(f"reference run is missing inputs: {', '.join(missing)}")
        tf_feeds = {}
        for binding in self.inputs:
            value = np.asarray(feeds[binding.onnx_name])
            if binding.nchw:
                value = np.transpose(value, (0, 2, 3, 1))
            if binding.dtype != "string":  # strings stay as they are (TensorFlow takes str/bytes)
                value = value.astype(binding.dtype, copy=False)
            tf_feeds[binding.feed_key] = value
        results = self._run(tf_feeds)
        return {b.onnx_name: np.asarray(results[b.feed_key]) for b in self.outputs}

    def _build(self):
        from trtcompile import progress

        with progress.stage("importing TensorFlow for the reference run",
                            getattr(self.options, "progress", False)):
            import_tensorflow_quietly()
            import tensorflow as tf

        if self.kind == "savedmodel":
            loaded, function = load_signature(self.path, self.options.signature)

            def run_signature(feeds):
                outputs = function(**{k: tf.constant(v) for k, v in feeds.items()})
                if not isinstance(outputs, Mapping):
                    outputs = {f"output_{i}": t for i, t in enumerate(tf.nest.flatten(outputs))}
                return {k: t.numpy() for k, t in outputs.items()}

            run_signature.keep_alive = loaded  # the signature needs its SavedModel object alive
            return run_signature
        if self.kind in ("keras", "h5"):
            model = load_keras_model(self.path, self.options.safe_mode)
            input_names, output_names = keras_io_names(model)

            def run_keras(feeds):
                values = [tf.constant(feeds[name]) for name in input_names]
                results = model(values if len(values) > 1 else values[0], training=False)
                return {name: t.numpy() for name, t in zip(output_names, tf.nest.flatten(results))}

            return run_keras
        if self.kind == "frozen-pb":
            graph_def = read_graph_def(self.path)
            feed_names = [b.feed_key for b in self.inputs]
            fetch_names = [b.feed_key for b in self.outputs]
            wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
            pruned = wrapped.prune([wrapped.graph.get_tensor_by_name(n) for n in feed_names],
                                   [wrapped.graph.get_tensor_by_name(n) for n in fetch_names])

            def run_frozen(feeds):
                results = pruned(*[tf.constant(feeds[n]) for n in feed_names])
                return {n: t.numpy() for n, t in zip(fetch_names, results)}

            return run_frozen
        raise InputError(f"no TensorFlow reference for model kind '{self.kind}'")
