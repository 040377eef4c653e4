"""Built-in example models: what ``trtcompile compile`` runs on when no model is given.

The default example, ``googlenet-keras``, is the Keras model of
:mod:`trtcompile.frontend.keras_example`, exported once into the cache and lowered through the
TensorFlow frontend, so a compile with no model shows the whole path from TensorFlow to engine.

``googlenet-onnx`` is a GoogLeNet-style network generated in code
(:mod:`trtcompile.frontend.onnx_example`), deterministically (fixed seed), with onnx-graphsurgeon
and numpy, so it needs no download, no file in the repository and no TensorFlow:

* stem: Conv(3x3, stride 2)-BatchNormalization-Relu, MaxPool(3x3, stride 2);
* two inception blocks: three 1x1 convolutions sharing the block input (the branch heads), a
  1x1->3x3 branch, a 1x1->3x3->3x3 branch, a MaxPool->1x1 branch, Concat of the four;
* a residual block: Conv-BN-Relu, Conv-BN, Add with the block input, Relu;
* GlobalAveragePool, Flatten, Gemm classifier head.

Every convolution has a bias and is followed by an unfused BatchNormalization (and usually a Relu),
so folding, conv+bias+activation fusion, horizontal fusion of the parallel 1x1 convolutions and
concat elimination all have work to do.

Examples are listed in :data:`EXAMPLES` by name; each one builds a :class:`LoadedModel`, so an
example may come from any frontend (a Keras version of the same network lowers through the
TensorFlow frontend). :data:`DEFAULT_EXAMPLE` names the one ``trtcompile compile`` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtcompile.errors import InputError

if TYPE_CHECKING:  # the catalog is read by ``trtcompile --help``, which must not import numpy
    import onnx
    import onnx_graphsurgeon as gs

    from trtcompile.frontend import FrontendOptions, LoadedModel

#: Seed of every weight of the generated examples.
EXAMPLE_SEED = 20240601

#: Input shape of the ONNX example (NCHW): small enough that parity and engine builds take seconds.
GOOGLENET_INPUT_SHAPE = (1, 3, 64, 64)
GOOGLENET_CLASSES = 10


def googlenet_graph(seed: int = EXAMPLE_SEED) -> gs.Graph:
    """The GoogLeNet-style example as an onnx-graphsurgeon graph (deterministic for a seed)."""
    from trtcompile.frontend import onnx_example

    return onnx_example.googlenet_graph(seed, input_shape=GOOGLENET_INPUT_SHAPE,
                                        classes=GOOGLENET_CLASSES)


def googlenet_onnx(seed: int = EXAMPLE_SEED) -> onnx.ModelProto:
    """The GoogLeNet-style example as an ONNX model (deterministic for a given seed)."""
    from trtcompile.frontend import onnx_example

    return onnx_example.googlenet_onnx(seed, input_shape=GOOGLENET_INPUT_SHAPE,
                                       classes=GOOGLENET_CLASSES)


@dataclass(frozen=True)
class Example:
    """A built-in example: a name, one line for the terminal, and how to build it."""

    name: str
    description: str
    load: Callable[[FrontendOptions], LoadedModel]


def _load_googlenet_onnx(options: FrontendOptions) -> LoadedModel:
    from trtcompile.frontend import LoadedModel

    return LoadedModel(model=googlenet_onnx(), source_path=None, kind="example",
                       description=EXAMPLES["googlenet-onnx"].description)


def _load_googlenet_keras(options: FrontendOptions) -> LoadedModel:
    from trtcompile.frontend import keras_example, tensorflow

    loaded = tensorflow.load(keras_example.cached_example_savedmodel(), options)
    loaded.description = EXAMPLES["googlenet-keras"].description
    return loaded


#: The built-in examples by name.
EXAMPLES: dict[str, Example] = {
    "googlenet-keras": Example(
        "googlenet-keras",
        "built-in example: GoogLeNet-style Keras model, exported as a TensorFlow SavedModel and "
        "lowered with tf2onnx (input image ?x64x64x3, 10 classes)",
        _load_googlenet_keras),
    "googlenet-onnx": Example(
        "googlenet-onnx",
        "built-in example: GoogLeNet-style network generated in ONNX "
        f"(input {'x'.join(map(str, GOOGLENET_INPUT_SHAPE))}, {GOOGLENET_CLASSES} classes)",
        _load_googlenet_onnx),
}

#: The example ``trtcompile compile`` runs when no model is given.
DEFAULT_EXAMPLE = "googlenet-keras"


def load_example(name: str | None = None, options: FrontendOptions | None = None) -> LoadedModel:
    """Build the example ``name`` (default: :data:`DEFAULT_EXAMPLE`) as a loaded model."""
    from trtcompile.frontend import FrontendOptions

    name = name or DEFAULT_EXAMPLE
    if name not in EXAMPLES:
        raise InputError(f"unknown example '{name}' (examples: {', '.join(sorted(EXAMPLES))})")
    return EXAMPLES[name].load(options or FrontendOptions())


__all__ = ["DEFAULT_EXAMPLE", "EXAMPLES", "Example", "googlenet_graph", "googlenet_onnx", "load_example"]
