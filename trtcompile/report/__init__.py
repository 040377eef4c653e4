"""The compile report: ``report.json`` and its terminal rendering.

:func:`build_report` assembles one JSON-ready dict from what each stage produced; the terminal
output (:func:`render`) is drawn from that same dict, so what the table shows and what
``report.json`` holds cannot disagree.

Terminal layout::

    pass                          layers before  after  delta     time  counts
    lowering (tf2onnx 1.17.0)          312 ops    431            1.2 s  tensorflow_ops=312 ...
    dead-layer-elimination                 61     61      0   0.4 ms
    ...
    total                                  61     38    -23   41.0 ms

    parity: passed (seed 0, atol=0.0001, rtol=0.001)
    ...
    engine: TensorRT-RTX 1.7.1.116, model.engine
    ...
    engine parity: not run — executing an engine needs a supported NVIDIA GPU; ...

The package: :mod:`~trtcompile.report.document` builds ``report.json``,
:mod:`~trtcompile.report.tables` lays out plain-text tables (the pass table, ``--why-not``) and
:mod:`~trtcompile.report.terminal` renders the whole terminal report. Every name is importable from
``trtcompile.report`` itself.
"""

from trtcompile.report.document import (
    ENGINE_PARITY_NOT_RECORDED,
    GRAPH_RECORDED_NODES,
    TOOL_DISTRIBUTIONS,
    build_report,
    dumps,
    engine_origins,
    graph_edges,
    graph_section,
    model_summary,
    parity_section,
    precision_risk_section,
    tool_versions,
)
from trtcompile.report.tables import (
    REJECTION_REASONS_SHOWN,
    TERMINAL_WIDTH,
    format_counts,
    format_pass_table,
    format_seconds,
    format_table,
    format_why_not,
    pass_label,
    rejection_summary,
    rejections_of,
)
from trtcompile.report.terminal import (
    ENGINE_EXCERPT_LAYERS,
    PARTITION_EXCERPT_NODES,
    RISK_EXCERPT_NODES,
    comparison_table,
    format_engine,
    format_engine_parity,
    format_parity,
    format_partition,
    format_precision_risk,
    format_profiles,
    render,
    segment_engine_text,
    segment_engines,
    shape_set_text,
)

__all__ = [
    "ENGINE_EXCERPT_LAYERS", "ENGINE_PARITY_NOT_RECORDED", "GRAPH_RECORDED_NODES",
    "PARTITION_EXCERPT_NODES", "REJECTION_REASONS_SHOWN", "RISK_EXCERPT_NODES", "TOOL_DISTRIBUTIONS", "build_report",
    "comparison_table", "dumps", "engine_origins", "format_counts", "format_engine",
    "format_engine_parity", "format_parity", "format_partition", "format_pass_table", "format_precision_risk",
    "format_profiles", "format_seconds", "format_table", "format_why_not", "graph_edges",
    "graph_section", "model_summary", "parity_section", "pass_label", "precision_risk_section",
    "rejection_summary", "rejections_of", "render", "segment_engine_text", "segment_engines",
    "shape_set_text", "TERMINAL_WIDTH", "tool_versions",
]
