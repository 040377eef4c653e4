"""The built-in passes: the one explicit registry.

Each pass lives in its own module named like the pass (``conv-bias-activation-fusion`` is
``passes/conv_bias_activation_fusion.py``, class ``ConvBiasActivationFusion``). Nothing registers
itself on import: a pass is built in when it is listed in ``BUILTIN_PASSES`` below.
"""

from passes.dead_layer_elimination import DeadLayerElimination

#: Built-in passes, in the order ``trtcompile passes`` lists them.
BUILTIN_PASSES = (
    DeadLayerElimination,
)

#: The default pipeline. Cleanup first so every later pass sees a minimal graph; the fusion passes
#: then iterate with folding and cleanup until nothing changes.
DEFAULT_PIPELINE = "dead-layer-elimination"

__all__ = ["BUILTIN_PASSES", "DEFAULT_PIPELINE", *[cls.__name__ for cls in BUILTIN_PASSES]]
