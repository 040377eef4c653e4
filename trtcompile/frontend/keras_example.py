"""The built-in example: a small GoogLeNet-style Keras model, exported as a TensorFlow SavedModel.

The model has every structure the optimization passes work on, at a size that lowers and builds in
seconds:

* stem: 3x3/2 conv-BN-ReLU (no conv bias: BN folding has work to do) and a 3x3/2 max pool;
* two inception blocks: parallel 1x1 convs sharing the block input (horizontal fusion), 1x1->3x3 and
  1x1->5x5 chains, a 3x3 max pool->1x1 branch, all concatenated along channels (concat elimination);
* a residual block: conv-BN-ReLU, conv-BN, identity shortcut Add, ReLU (elementwise fusion);
* global average pooling and a dense head (softmax probabilities).

Weights are deterministic: the model is built with seeded initializers and then every weight,
BatchNormalization statistics included, is overwritten from a seeded NumPy generator, so that no BN is
an identity and no bias is zero (which TensorFlow's grappler would otherwise fold away).
Input: ``image`` NHWC ``[batch, 64, 64, 3]`` float32, batch unknown. Output: ``probabilities [batch, 10]``.

TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Seed of the example's initializers and weights.
EXAMPLE_SEED = 2024
INPUT_SHAPE = (64, 64, 3)
NUM_CLASSES = 10


def _conv_bn_relu(layers, x, filters: int, kernel: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _inception(layers, x, name: str, b1: int, b3r: int, b3: int, b5r: int, b5: int, pool: int):
    """GoogLeNet inception block: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1, concatenated."""
    branch1 = layers.Conv2D(b1, 1, activation="relu", name=f"{name}_1x1")(x)
    branch3 = layers.Conv2D(b3r, 1, activation="relu", name=f"{name}_3x3_reduce")(x)
    branch3 = layers.Conv2D(b3, 3, padding="same", activation="relu", name=f"{name}_3x3")(branch3)
    branch5 = layers.Conv2D(b5r, 1, activation="relu", name=f"{name}_5x5_reduce")(x)
    branch5 = layers.Conv2D(b5, 5, padding="same", activation="relu", name=f"{name}_5x5")(branch5)
    branch_pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch_pool = layers.Conv2D(pool, 1, activation="relu", name=f"{name}_pool_proj")(branch_pool)
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, branch_pool])


def build_example_model():
    """The example Keras functional model with its deterministic weights."""
    from trtcompile.frontend.tf_lowering import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(EXAMPLE_SEED)
    layers = keras.layers
    image = keras.Input(INPUT_SHAPE, name="image")
    x = _conv_bn_relu(layers, image, 32, 3, "stem", strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = _inception(layers, x, "inception_3a", 16, 16, 24, 4, 8, 8)
    x = _inception(layers, x, "inception_3b", 24, 24, 32, 8, 12, 12)
    shortcut = x  # 80 channels
    y = _conv_bn_relu(layers, x, 80, 3, "residual_a")
    y = layers.Conv2D(80, 3, padding="same", use_bias=False, name="residual_b_conv")(y)
    y = layers.BatchNormalization(name="residual_b_bn")(y)
    x = layers.Add(name="residual_add")([y, shortcut])
    x = layers.ReLU(name="residual_relu")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(x)
    model = keras.Model(image, probabilities, name="googlenet_example")
    _deterministic_weights(model)
    return model


def _deterministic_weights(model) -> None:
    rng = np.random.default_rng(EXAMPLE_SEED)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "variance" in weight.path:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in weight.path:
            value = rng.uniform(0.8, 1.2, shape)
        elif len(shape) > 1:  # He-style scale keeps activations in range through the ReLU stack
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        weight.assign(value.astype(weight.dtype))


def example_savedmodel(directory: str | os.PathLike) -> Path:
    """Export the example as a SavedModel folder ``<directory>/googlenet_example`` and return its path.

    The signature is ``serving_default`` with input ``image`` and output ``output_0``.
    """
    path = Path(directory) / "googlenet_example"
    build_example_model().export(str(path), verbose=False)
    return path


def example_keras_file(directory: str | os.PathLike) -> Path:
    """Save the example as ``<directory>/googlenet_example.keras`` and return its path."""
    path = Path(directory) / "googlenet_example.keras"
    build_example_model().save(path)
    return path


def cache_dir() -> Path:
    """Folder for built-in example models: ``$TRTCOMPILE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/trtcompile``, else ``~/.cache/trtcompile``."""
    explicit = os.environ.get("TRTCOMPILE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trtcompile"


#: File written into a cached example folder last, once the export is complete.
CACHE_COMPLETE_MARKER = "trtcompile-complete"


def _is_complete(path: Path) -> bool:
    return (path / CACHE_COMPLETE_MARKER).is_file() and (path / "saved_model.pb").is_file()


def cached_example_savedmodel() -> Path:
    """The example SavedModel, exported once into :func:`cache_dir` and reused.

    The folder name carries the seed and the Keras version, so a different Keras rebuilds it.
    Processes sharing the cache (golden workers, Ray tasks on one node) take an exclusive lock
    on ``<folder>.lock`` before exporting, so one of them exports and the others wait and reuse
    its result. The model is exported into a staging folder, marked complete
    (:data:`CACHE_COMPLETE_MARKER`) and renamed into place, so an interrupted export never leaves
    a half-written model where it would be used; a folder without the marker (a partial copy, an
    older layout) is set aside and rebuilt.
    """
    import shutil
    import tempfile
    from importlib.metadata import version

    from trtcompile.ir import exclusive_lock

    # The installed version, read without importing Keras (and TensorFlow) on a cache hit.
    root = cache_dir() / "examples"
    path = root / f"googlenet_example-seed{EXAMPLE_SEED}-keras{version('keras')}"
    if _is_complete(path):
        return path
    with exclusive_lock(root / f"{path.name}.lock"):
        if _is_complete(path):  # another process exported it while this one waited
            return path
        staging = Path(tempfile.mkdtemp(prefix=".googlenet_example.", dir=root))
        try:
            exported = example_savedmodel(staging)
            (exported / CACHE_COMPLETE_MARKER).write_text(
                f"seed={EXAMPLE_SEED} keras={version('keras')}\n")
            if path.exists():  # incomplete: move it aside atomically, then delete it
                os.replace(path, staging / "incomplete")
            os.replace(exported, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path
