"""The built-in passes: the one explicit registry.

Each pass lives in its own module named like the pass (``conv-bias-activation-fusion`` is
``passes/conv_bias_activation_fusion.py``, class ``ConvBiasActivationFusion``). Nothing registers
itself on import: a pass is built in when it is listed in ``BUILTIN_PASSES`` below. This module is
data: ``BUILTIN_PASSES`` and the named pipelines ``PIPELINES``, which
:func:`trtcompile.flow.registry.builtin_registry` puts in a registry with the combinators.
"""

from passes.attention_head_layout import AttentionHeadLayout
from passes.average_pool_conv_fusion import AveragePoolConvFusion
from passes.common_subexpression_elimination import CommonSubexpressionElimination
from passes.concat_elimination import ConcatElimination
from passes.conv_bias_activation_fusion import ConvBiasActivationFusion
from passes.conv_split_fission import ConvSplitFission
from passes.dead_layer_elimination import DeadLayerElimination
from passes.flatten_gemm_conv import FlattenGemmConv
from passes.fold_constants import FoldConstants
from passes.global_pool_window import GlobalPoolWindow
from passes.grouped_query_attention import GroupedQueryAttention
from passes.horizontal_fusion import HorizontalFusion
from passes.partition import Partition
from passes.precision_fp16 import PrecisionFp16
from passes.quantize_int8 import QuantizeInt8
from passes.transpose_cancellation import TransposeCancellation

#: Built-in passes, in the order ``trtcompile passes`` lists them.
BUILTIN_PASSES = (
    DeadLayerElimination,
    FoldConstants,
    CommonSubexpressionElimination,
    ConvBiasActivationFusion,
    ConvSplitFission,
    GlobalPoolWindow,
    FlattenGemmConv,
    HorizontalFusion,
    AveragePoolConvFusion,
    ConcatElimination,
    TransposeCancellation,
    AttentionHeadLayout,
    GroupedQueryAttention,
    PrecisionFp16,
    QuantizeInt8,
    Partition,
)

#: The default pipeline. Cleanup and folding first so every later pass sees initializers and a minimal
#: graph; layout Transposes from the lowering cancel before fusion so convolutions meet their bias,
#: BatchNorm and activation; vertical fusion, horizontal fusion and concat elimination then iterate
#: with cleanup, transpose cancellation and folding until nothing changes (each can expose work for
#: the others: merging two equal readers of a Transpose can make pushing it pay, merging a reader
#: into a graph output can give a Shape's input the output's declared shape). Common subexpression
#: elimination runs in that loop right after vertical fusion, not before it: merging two convolutions
#: with equal weights whose BatchNorms differ leaves one convolution with several readers that no
#: longer fuses (Inception v2 light model: 84 engine layers against 82); once each convolution has
#: absorbed its own epilogue, what is still equal is a whole layer. Last, a convolution whose
#: output is only split along the channels becomes one convolution per piece (conv-split-fission:
#: TensorRT copies Split outputs out, 77 -> 69 engine layers on a YOLOv8n-style network); it runs
#: once, after horizontal fusion settled. Then come the two layout rewrites that need to see fused
#: convolutions, after the fission so they see its pieces as convolutions too: global-pool-window
#: (a global mean of a conv read by a linear layer becomes a pooling window TensorRT reads in place:
#: ResNet-50 58 -> 57, MobileNetV3 87 -> 82) and flatten-gemm-conv (a classifier on a flattened map
#: becomes a conv whose kernel covers it: VGG-19 27 -> 26). A piece conv-split-fission makes may be
#: followed by its own bias, scale or activation (a Split output read by a Mul, say), which fusion
#: then absorbs; pieces that absorbed the same epilogue and are adjacent in one Concat are one
#: layer again for horizontal fusion (free_split_only: it writes the Concat's range directly), and
#: concat elimination drops their Split. Without those last passes the pipeline run on its own
#: output would still rewrite, and the default pipeline is a fixed point of itself
#: (tests/property/test_idempotence.py).
#: transpose-cancellation leaves Flatten->MatMul layouts to TensorRT here: folding that last Transpose
#: into the classifier weights removes an ONNX layer but, measured on VGG19, costs TensorRT a layout
#: copy (25 -> 26 engine layers), because TensorRT already absorbs an NHWC flatten into the gemm.
#: grouped-query-attention runs once, right after folding (it needs the shapes folding gives and the
#: head splits as exported, before transpose cancellation moves their Transposes): the shared key and
#: value heads of grouped-query attention are read by broadcast from one per-head projection GEMM
#: (Llama 57 -> 53 engine layers), FP32 engines only.
#: attention-head-layout runs once, on the folded graph, before fusion: it lays out FP32 attention
#: blocks so TensorRT reads the heads from the merged Q/K/V GEMM (BERT-base 159 -> 136 engine
#: layers) and leaves attention alone when the engine is built in FP16 or INT8.
DEFAULT_PIPELINE = (
    "dead-layer-elimination,fold-constants,grouped-query-attention,"
    "transpose-cancellation{fold-matmul-weights=false},dead-layer-elimination,attention-head-layout,"
    "fixed-point(conv-bias-activation-fusion,common-subexpression-elimination,horizontal-fusion,"
    "concat-elimination,dead-layer-elimination,transpose-cancellation{fold-matmul-weights=false},"
    "fold-constants),"
    "conv-split-fission,global-pool-window,flatten-gemm-conv,conv-bias-activation-fusion,"
    "horizontal-fusion,concat-elimination"
)

#: Pipelines known by name; a name stands for its text anywhere in pipeline text, and reports always
#: show the expanded passes.
PIPELINES = {
    "default": DEFAULT_PIPELINE,
    # The fewest layers these passes reach, at a price in arithmetic: kernel padding and average-pool
    # folding each add MACs (up to half the model's, see docs/benchmarks.md) to remove layers. For
    # latency-bound engines (small batches) where per-layer overhead dominates.
    # (In the fixed point only: the horizontal fusion after conv-split-fission re-merges its pieces.)
    "fewest-layers": DEFAULT_PIPELINE.replace(
        "horizontal-fusion,",
        "horizontal-fusion{pad-kernels=true max-extra-macs=0.5},"
        "average-pool-conv-fusion{max-extra-macs=0.5},", 1),
    # The default pipeline, then the rewrites that add arithmetic to remove layers, each group kept
    # only where TensorRT builds an engine with fewer compute layers within 10% more MACs (see
    # trtcompile.flow.engine_guided.EngineGuided). Costs one engine build per group that changes the graph.
    "tuned": (
        "engine-guided{max-extra-macs=0.1}(" + DEFAULT_PIPELINE + ","
        "fixed-point(horizontal-fusion{pad-kernels=true},concat-elimination,dead-layer-elimination),"
        "fixed-point(average-pool-conv-fusion,horizontal-fusion{pad-kernels=true},"
        "concat-elimination,dead-layer-elimination))"),
}

__all__ = ["BUILTIN_PASSES", "DEFAULT_PIPELINE", "PIPELINES", *[cls.__name__ for cls in BUILTIN_PASSES]]
