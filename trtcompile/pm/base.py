"""What a pass is and what it reports: :class:`Pass`, :class:`PassResult`, :class:`PassContext`.

A pass is a frozen dataclass deriving from :class:`Pass` whose fields are its options, with a
registered kebab-case ``name`` and one method ``run(graph, ctx) -> PassResult``. The pass reports what
it did as counts in domain words and, for each candidate it rejected, why. It neither measures time
nor counts layers nor claims that it changed the graph: the manager derives all of that.

Options round-trip through pipeline text (``conv-bias-activation-fusion{activations=relu,clip}``);
:class:`OptionFields` holds that logic once for passes and combinators alike.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from trtcompile.errors import PipelineError

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A candidate a pass considered and left alone: the nodes involved and the reason."""

    nodes: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"nodes": [...], "reason": ...}``."""
        return {"nodes": list(self.nodes), "reason": self.reason}


@dataclass
class PassResult:
    """What one run of a pass did, in the pass's own words.

    ``counts`` are rewrites by kind (``fused_conv_relu=53``); ``rejections`` are the candidates it
    considered and did not rewrite, each with the reason (``bias is not per-channel``);
    ``tables`` are what a pass measured, one row per node, under a name the reports know
    (``precision_risk``: the range and float16 error ``precision-fp16`` measured per node).
    """

    counts: dict[str, int] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the count ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def reject(self, nodes: gs.Node | str | Iterable[gs.Node | str], reason: str) -> None:
        """Record that the candidate made of ``nodes`` was left alone because of ``reason``."""
        self.rejections.append(Rejection(node_names(nodes), reason))

    def rejection_summary(self) -> dict[str, int]:
        """Number of rejections per reason."""
        summary: dict[str, int] = {}
        for rejection in self.rejections:
            summary[rejection.reason] = summary.get(rejection.reason, 0) + 1
        return summary


#: The rejection reason of a candidate :meth:`PassContext.may_rewrite` refused.
REWRITE_LIMIT_REASON = "rewrite limit reached (bisecting)"


@dataclass(frozen=True)
class Rewrite:
    """One rewrite a pass applied: its number in the run, the pass, the rule and the nodes."""

    index: int
    pass_name: str
    rule: str
    nodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the pass under ``pass``."""
        return {"index": self.index, "pass": self.pass_name, "rule": self.rule,
                "nodes": list(self.nodes)}


@dataclass
class PassContext:
    """What a pass may read besides the graph.

    ``model_dir`` is the folder of the model being compiled (for external data); ``seed`` seeds
    anything random a pass does; ``resources`` carries inputs specific passes and combinators need,
    keyed by their name (for example the calibration data of ``quantize-int8``, the judge of
    ``engine-guided``); ``log`` prints a line for the user.
    """

    model_dir: Path | None = None
    seed: int = 0
    resources: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None
    #: Rewrites granted before :meth:`may_rewrite` refuses every further one; None: no limit.
    #: What ``trtcompile bisect`` searches over (LLVM's ``-opt-bisect-limit``).
    rewrite_limit: int | None = None
    #: Every rewrite granted in this context, numbered from 1 across passes and iterations.
    rewrites: list[Rewrite] = field(default_factory=list)
    #: Rewrites refused because the limit was reached.
    refused: int = 0
    #: The pass running now (set by the manager), named in each :class:`Rewrite`.
    current_pass: str = ""

    def may_rewrite(self, rule: str, nodes: gs.Node | str | Iterable[gs.Node | str],
                    result: PassResult | None = None) -> bool:
        """Ask before applying one rewrite: True grants it (and records it); False means leave the
        candidate alone (it is then recorded in ``result`` as rejected by the rewrite limit).

        Every rewrite site of a pass asks once, before touching the graph::

            if not ctx.may_rewrite("fold-batchnorm", chain.nodes, result):
                continue

        ``rule`` names the rewrite rule in the pass's words; ``nodes`` are the nodes it rewrites.
        With no ``rewrite_limit`` every rewrite is granted.
        """
        if self.rewrite_limit is not None and len(self.rewrites) >= self.rewrite_limit:
            self.refused += 1
            if result is not None:
                result.reject(nodes, REWRITE_LIMIT_REASON)
            return False
        self.rewrites.append(Rewrite(len(self.rewrites) + 1, self.current_pass, rule,
                                     node_names(nodes)))
        return True


def node_names(nodes: gs.Node | str | Iterable[gs.Node | str]) -> tuple[str, ...]:
    """Names of ``nodes`` (nodes or names, one or several), as a tuple."""
    if isinstance(nodes, (gs.Node, str)):
        nodes = [nodes]
    return tuple(n.name if isinstance(n, gs.Node) else str(n) for n in nodes)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def kebab(name: str) -> str:
    """``max_iterations`` -> ``max-iterations`` (option names in pipeline text)."""
    return name.replace("_", "-")


def snake(name: str) -> str:
    """``max-iterations`` -> ``max_iterations`` (option names as dataclass fields)."""
    return name.replace("-", "_")


def format_value(value: Any) -> str:
    """An option value as pipeline text parses it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def convert_option(owner: str, key: str, annotation: Any, raw: list[str]) -> Any:
    """The value of option ``key`` of ``owner`` (a pass or combinator name) from its text pieces,
    as ``annotation`` types it; PipelineError naming both when it does not convert."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item_type = args[0] if args else str
        return tuple(convert_option(owner, key, item_type, [r]) for r in raw if r != "")
    if len(raw) != 1:
        raise PipelineError(f"option '{key}' of pass '{owner}' takes one value, got {','.join(raw)}")
    text = raw[0]
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        type_name = getattr(annotation, "__name__", str(annotation))
        raise PipelineError(
            f"option '{key}' of pass '{owner}' expects {type_name}, got '{text}'") from None
    return text


class OptionFields:
    """Options as dataclass fields, printed and parsed in pipeline text.

    Shared by :class:`Pass` and the pipeline combinators; a subclass names in ``NOT_OPTIONS`` the
    fields that are not options (a combinator's nested ``elements``).
    """

    name: ClassVar[str] = ""
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The dataclass fields that are options."""
        if not dataclasses.is_dataclass(cls):
            return []
        return [f for f in dataclasses.fields(cls) if f.name not in cls.NOT_OPTIONS]

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Option name (snake_case) to its annotated type."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in cls.option_fields()}

    def options(self) -> dict[str, Any]:
        """All options with their values, kebab-case keys (lists as lists)."""
        return {
            kebab(f.name): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in self.option_fields()
        }

    def non_default_options(self) -> dict[str, Any]:
        """Options whose value differs from the default."""
        changed = {}
        for f in self.option_fields():
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            value = getattr(self, f.name)
            if value != default:
                changed[kebab(f.name)] = list(value) if isinstance(value, tuple) else value
        return changed

    def options_text(self) -> str:
        """``{key=value ...}`` of the non-default options, or nothing."""
        options = self.non_default_options()
        if not options:
            return ""
        return "{" + " ".join(f"{k}={format_value(v)}" for k, v in options.items()) + "}"

    @classmethod
    def summary(cls) -> str:
        """The docstring's first paragraph (its summary sentence, which may wrap), on one line."""
        doc = inspect.getdoc(cls) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())

    @classmethod
    def reference(cls) -> str:
        """The whole docstring: rules, requirements, guarantees."""
        return inspect.getdoc(cls) or ""


# --------------------------------------------------------------------------------------------
# Passes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass(OptionFields):
    """Base class of passes. Subclasses are frozen dataclasses; their fields are the options.

    Set the class attribute ``name`` to the kebab-case pipeline name and implement :meth:`run`.
    Option fields may be ``bool``, ``int``, ``float``, ``str`` or ``tuple[str, ...]`` (a list) and
    must have defaults. The class docstring is the pass's reference text: number its rewrite rules
    and say what it requires and preserves (``trtcompile passes`` prints it).
    """

    name: ClassVar[str] = ""

    #: ONNX ops (default domain) at least one of which every rewrite of the pass starts from:
    #: in a graph none of whose scopes (main graph, If/Loop/Scan bodies, local function bodies)
    #: holds one, the pass changes nothing, and the manager records the run without running it
    #: or walking the graph after it (``transpose-cancellation`` needs a ``Transpose``). Empty:
    #: the pass may change any graph (``fold-constants``). A pass that also tidies the graph
    #: where it finds nothing to rewrite (a cleanup, a sort) must leave this empty.
    needs_ops: ClassVar[frozenset[str]] = frozenset()

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        """Rewrite ``graph`` in place and return what was done."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def to_text(self) -> str:
        """Pipeline text for this pass with its non-default options."""
        return self.name + self.options_text()
