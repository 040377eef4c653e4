"""The IR every pass reads and rewrites: onnx-graphsurgeon graphs, and what the compiler adds to them.

The bottom layer of trtcompile: it imports nothing of the package but :mod:`trtcompile.errors`.

* :mod:`~trtcompile.ir.graph`: layer counts, scopes, navigation, fresh names, local functions;
* :mod:`~trtcompile.ir.summary`: the structural fingerprint, and the summary of a graph
  (fingerprint, layers, op histogram) the pass manager takes after every pass;
* :mod:`~trtcompile.ir.io`: loading and saving models (IR version, atomic writes);
* :mod:`~trtcompile.ir.provenance`: which input nodes each rewritten node stands for;
* :mod:`~trtcompile.ir.fused_layer`: the fused-conv layer form (a call of a local function);
* :mod:`~trtcompile.ir.rewrite`: local rewrites (pattern, check, rewrite) and their driver;
* :mod:`~trtcompile.ir.bfloat16`: a bfloat16 model as ONNX Runtime's CPU provider runs it
  (float32 arithmetic, bfloat16 rounding where tensors are stored);
* :mod:`~trtcompile.ir.analysis` and :mod:`~trtcompile.ir.cost`: shapes and MACs, cached by
  graph fingerprint.

``from trtcompile import ir`` gives the helpers of :mod:`~trtcompile.ir.graph`, :mod:`~trtcompile.ir.io`
and :mod:`~trtcompile.ir.provenance` as ``ir.<name>``, shape inference as ``ir.inferred_dims``, and the
other modules as ``ir.fused_layer``, ``ir.rewrite``, ``ir.analysis``, ``ir.cost``.
"""

from trtcompile.ir import (
    analysis,
    bfloat16,
    cost,
    fused_layer,
    graph,
    interface,
    io,
    provenance,
    rewrite,
    summary,
)
from trtcompile.ir.analysis import (
    SHAPE_VALUE_LIMIT,
    ShapeFacts,
    inferred_dims,
    known_dims,
    merged_dims,
    reshaped,
    swap_last_axes,
)
from trtcompile.ir.graph import (
    CONTROL_FLOW_OPS,
    DEFAULT_OPSET,
    IR_VERSION,
    NON_COMPUTE_OPS,
    SEGMENT_PREFIX,
    TRTCOMPILE_DOMAIN,
    NameScope,
    add_local_function,
    call,
    call_key,
    compute_node_count,
    constant_attr_array,
    constant_ints,
    constant_shape,
    constant_value,
    consumers,
    split_sizes,
    dead_nodes,
    find_function,
    model_digest,
    function_body_key,
    function_key,
    function_of,
    functions_by_key,
    has_single_use,
    histogram_delta,
    is_fused_layer,
    is_lowerable_constant,
    is_onnx_domain,
    is_onnx_op,
    is_segment,
    iter_nodes,
    layer_count,
    live_nodes,
    lower_constant,
    op_histogram,
    op_key,
    opset,
    outer_reads,
    outer_scope_reads,
    output_names,
    producer,
    replace_uses,
    same_pads,
    scope_nodes,
    scopes,
    static_shape,
    subgraphs,
    text_attr,
    to_networkx,
    toposort,
)
from trtcompile.ir.summary import GraphSummary, fingerprint, summarize
from trtcompile.ir.interface import OverridableInput, is_overridable, overridable_initializers
from trtcompile.ir.io import (
    ORT_ERROR_SEVERITY,
    atomic_write_bytes,
    evaluable_ir_version,
    exclusive_lock,
    export_model,
    import_model,
    load,
    name_nodes,
    overridable_initializer_names,
    quiet_graphsurgeon,
    save,
    set_onnxruntime_severity,
)
from trtcompile.ir.provenance import Structure, trace_provenance
from trtcompile.ir.rewrite import detach_dropped

__all__ = [
    "CONTROL_FLOW_OPS", "DEFAULT_OPSET", "IR_VERSION", "NON_COMPUTE_OPS", "ORT_ERROR_SEVERITY", "SEGMENT_PREFIX",
    "SHAPE_VALUE_LIMIT", "TRTCOMPILE_DOMAIN", "GraphSummary", "NameScope", "OverridableInput", "ShapeFacts", "Structure",
    "add_local_function", "analysis", "atomic_write_bytes", "bfloat16", "call", "call_key",
    "compute_node_count", "constant_attr_array", "constant_ints", "constant_shape", "constant_value", "consumers", "split_sizes", "dead_nodes", "detach_dropped", "cost",
    "evaluable_ir_version", "exclusive_lock", "export_model", "find_function", "fingerprint",
    "model_digest",
    "function_body_key", "function_key", "function_of", "functions_by_key", "fused_layer", "graph", "has_single_use",
    "histogram_delta", "import_model", "interface", "inferred_dims", "io", "is_fused_layer", "is_onnx_domain",
    "is_lowerable_constant", "is_onnx_op", "is_overridable", "is_segment", "iter_nodes", "known_dims", "layer_count", "merged_dims", "live_nodes", "load", "lower_constant",
    "name_nodes", "op_histogram", "op_key", "opset", "outer_reads", "outer_scope_reads", "output_names", "overridable_initializer_names",
    "overridable_initializers",
    "producer", "provenance", "quiet_graphsurgeon", "replace_uses", "reshaped", "set_onnxruntime_severity", "rewrite", "same_pads", "save", "summary",
    "scope_nodes", "scopes", "static_shape", "subgraphs", "summarize", "swap_last_axes", "text_attr", "to_networkx", "toposort",
    "trace_provenance",
]
