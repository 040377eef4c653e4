"""What the manager observed: one :class:`PassRecord` per element run, one :class:`PipelineReport`
per pipeline run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trtcompile.pm.base import Rejection, Rewrite


@dataclass
class PassRecord:
    """What the manager observed about one run of one pass (or of a combinator that records its
    own run, such as ``engine-guided``)."""

    index: int
    name: str
    text: str
    options: dict[str, Any]
    iteration: int | None
    layers_before: int
    layers_after: int
    seconds: float
    changed: bool
    histogram_delta: dict[str, int]
    #: What the pass said it did, by kind (its PassResult counts: ``fused_conv_relu=53``).
    counts: dict[str, int]
    rejections: list[Rejection]
    #: What the pass measured, by table name (its PassResult tables: ``precision_risk``).
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Why the manager did not run the pass (the graph holds none of the ops its rewrites start
    #: from: ``no Transpose in the graph``); empty when it ran (or repeated an earlier run).
    skipped: str = ""

    @property
    def delta(self) -> int:
        """Layers after minus layers before."""
        return self.layers_after - self.layers_before

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pipeline_text`` is :attr:`text`)."""
        return {
            "index": self.index,
            "name": self.name,
            "pipeline_text": self.text,
            "options": self.options,
            "iteration": self.iteration,
            "layers_before": self.layers_before,
            "layers_after": self.layers_after,
            "delta": self.delta,
            "seconds": round(self.seconds, 6),
            "changed": self.changed,
            "histogram_delta": self.histogram_delta,
            "counts": self.counts,
            "rejections": [r.to_dict() for r in self.rejections],
            # Only passes that measure something have tables: other records stay as they were.
            **({"tables": self.tables} if self.tables else {}),
            **({"skipped": self.skipped} if self.skipped else {}),
        }


@dataclass
class PipelineReport:
    """The pass manager's account of one pipeline run."""

    pipeline: str
    layers_before: int = 0
    layers_after: int = 0
    histogram_before: dict[str, int] = field(default_factory=dict)
    histogram_after: dict[str, int] = field(default_factory=dict)
    records: list[PassRecord] = field(default_factory=list)
    #: What combinators reported, by their ``report_section``: one entry per run of a
    #: ``fixed-point`` under ``fixed_points`` (iterations, converged), one per group an
    #: ``engine-guided`` tried under ``engine_guided``. Every registered combinator's section is
    #: present, empty when it did not run.
    sections: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"fixed_points": []})
    seconds: float = 0.0
    #: The rewrites passes were granted during the run (:meth:`PassContext.may_rewrite`), in order.
    rewrites: list[Rewrite] = field(default_factory=list)
    #: For each node of the rewritten graph that is not an input node left as it was: the names
    #: of the input graph's nodes it stands for (a fused layer: the nodes it absorbed, over every
    #: pass that rewrote it; a node a pass added next to unchanged ones: none). Traced by the
    #: manager from each pass's before and after graphs (:func:`trtcompile.ir.trace_provenance`),
    #: so every pass, a user's included, is covered without recording anything itself.
    provenance: dict[str, list[str]] = field(default_factory=dict)
    #: The input graph's top-level node names as the passes saw them (unnamed nodes named).
    input_node_names: list[str] = field(default_factory=list)

    @property
    def fixed_points(self) -> list[dict[str, Any]]:
        """One entry per ``fixed-point`` run: its text, iterations, whether it converged."""
        return self.sections.setdefault("fixed_points", [])

    def section(self, key: str) -> list[dict[str, Any]]:
        """The entries combinators reported under ``key`` (empty when none ran)."""
        return self.sections.get(key, [])

    def origins(self, node_name: str) -> list[str]:
        """The input graph's nodes the rewritten graph's node ``node_name`` stands for."""
        return self.provenance.get(node_name, [node_name])

    def rejections(self, pass_name: str) -> list[Rejection]:
        """All rejections recorded by runs of ``pass_name``, without duplicates, in order."""
        seen: dict[Rejection, None] = {}
        for record in self.records:
            if record.name == pass_name:
                for rejection in record.rejections:
                    seen.setdefault(rejection, None)
        return list(seen)

    def layers_after_pass(self) -> dict[str, int]:
        """Layer count after the last run of each pass, by pass name."""
        return {record.name: record.layers_after for record in self.records}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: pipeline, layers, histograms, passes, each section, seconds, provenance."""
        return {
            "pipeline": self.pipeline,
            "layers": {"input": self.layers_before, "optimized": self.layers_after},
            "histogram": {"input": self.histogram_before, "optimized": self.histogram_after},
            "passes": [record.to_dict() for record in self.records],
            "fixed_points": [], **self.sections,
            "seconds": round(self.seconds, 6),
            "provenance": self.provenance,
        }
