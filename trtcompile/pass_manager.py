"""Passes, pipelines and the pass manager.

A pass is a frozen dataclass deriving from :class:`Pass` whose fields are its options, with a
registered kebab-case ``name`` and one method ``run(graph, ctx) -> PassResult``. The pass reports what
it did as counts in domain words and, for each candidate it rejected, why. It neither measures time
nor counts layers nor claims that it changed the graph: the :class:`PassManager` derives all of that.

Pipelines are text, round-tripping through :func:`parse_pipeline` and :func:`print_pipeline`::

    fold-constants,dead-layer-elimination,fixed-point{max-iterations=8}(conv-bias-activation-fusion{activations=relu,clip},horizontal-fusion)

* passes are separated by commas;
* options go in braces as ``key=value``, separated by spaces or commas; a list option takes several
  comma-separated values (``activations=relu,clip``): a token without ``=`` continues the list;
* ``fixed-point(...)`` runs its nested pipeline until an iteration leaves the graph unchanged
  (``max-iterations`` bounds it, default 8);
* ``engine-guided(...)`` tries each element of its nested pipeline as one group of candidate
  rewrites, builds a TensorRT engine of the result and keeps the group only where the engine is
  not worse (see :class:`EngineGuided`); options ``max-builds``, ``max-seconds``,
  ``max-extra-macs``;
* ``default`` stands for the default pipeline.

Instruments observe the run without passes knowing: :class:`DumpInstrument` writes the IR after
every pass to ``NNN_<pass>.onnx``, :class:`VerifyInstrument` runs the onnx checker and ONNX Runtime
parity against the pass input after every pass.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import inspect
import sys
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from trtcompile import ir
from trtcompile.errors import InputError, PassFailed, PipelineError, TrtcompileError

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A candidate a pass considered and left alone: the nodes involved and the reason."""

    nodes: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "reason": self.reason}


@dataclass
class PassResult:
    """What one run of a pass did, in the pass's own words.

    ``counts`` are rewrites by kind (``fused_conv_relu=53``); ``rejections`` are the candidates it
    considered and did not rewrite, each with the reason (``bias is not per-channel``).
    """

    counts: dict[str, int] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the count ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def reject(self, nodes: gs.Node | str | Iterable[gs.Node | str], reason: str) -> None:
        """Record that the candidate made of ``nodes`` was left alone because of ``reason``."""
        self.rejections.append(Rejection(_node_names(nodes), reason))

    def rejection_summary(self) -> dict[str, int]:
        """Number of rejections per reason."""
        summary: dict[str, int] = {}
        for rejection in self.rejections:
            summary[rejection.reason] = summary.get(rejection.reason, 0) + 1
        return summary


@dataclass
class PassContext:
    """What a pass may read besides the graph.

    ``model_dir`` is the folder of the model being compiled (for external data); ``seed`` seeds
    anything random a pass does; ``resources`` carries inputs specific passes need, keyed by the
    pass name (for example the calibration data of ``quantize-int8``); ``log`` prints a line for the
    user.
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
                                     _node_names(nodes)))
        return True


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
        return {"index": self.index, "pass": self.pass_name, "rule": self.rule,
                "nodes": list(self.nodes)}


def _node_names(nodes: gs.Node | str | Iterable[gs.Node | str]) -> tuple[str, ...]:
    if isinstance(nodes, (gs.Node, str)):
        nodes = [nodes]
    return tuple(n.name if isinstance(n, gs.Node) else str(n) for n in nodes)


# --------------------------------------------------------------------------------------------
# Passes
# --------------------------------------------------------------------------------------------


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _snake(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class Pass:
    """Base class of passes. Subclasses are frozen dataclasses; their fields are the options.

    Set the class attribute ``name`` to the kebab-case pipeline name and implement :meth:`run`.
    Option fields may be ``bool``, ``int``, ``float``, ``str`` or ``tuple[str, ...]`` (a list) and
    must have defaults. The class docstring is the pass's reference text: number its rewrite rules
    and say what it requires and preserves (``trtcompile passes`` prints it).
    """

    name: ClassVar[str] = ""

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        """Rewrite ``graph`` in place and return what was done."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    # Options ---------------------------------------------------------------------------------

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The dataclass fields that are the pass's options."""
        return list(dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Option name (snake_case) to its annotated type."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in cls.option_fields()}

    def options(self) -> dict[str, Any]:
        """All options with their values, kebab-case keys (lists as lists)."""
        return {
            _kebab(f.name): list(v) if isinstance(v := getattr(self, f.name), tuple) else v
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
                changed[_kebab(f.name)] = list(value) if isinstance(value, tuple) else value
        return changed

    def to_text(self) -> str:
        """Pipeline text for this pass with its non-default options."""
        options = self.non_default_options()
        if not options:
            return self.name
        return f"{self.name}{{{' '.join(f'{k}={_format_value(v)}' for k, v in options.items())}}}"

    @classmethod
    def summary(cls) -> str:
        """The docstring's first paragraph (its summary sentence, which may wrap), on one line."""
        doc = inspect.getdoc(cls) or ""
        return " ".join(doc.split("\n\n", 1)[0].split())

    @classmethod
    def reference(cls) -> str:
        """The whole docstring: rules, requirements, guarantees."""
        return inspect.getdoc(cls) or ""


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _convert(pass_name: str, key: str, annotation: Any, raw: list[str]) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item_type = args[0] if args else str
        return tuple(_convert(pass_name, key, item_type, [r]) for r in raw if r != "")
    if len(raw) != 1:
        raise PipelineError(f"option '{key}' of pass '{pass_name}' takes one value, got {','.join(raw)}")
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
            f"option '{key}' of pass '{pass_name}' expects {type_name}, got '{text}'") from None
    return text


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class PassRegistry:
    """Maps pipeline names to pass classes. Built explicitly; nothing registers on import."""

    def __init__(self, passes: Iterable[type[Pass]] = ()):
        self._passes: dict[str, type[Pass]] = {}
        for cls in passes:
            self.register(cls)

    def register(self, cls: type[Pass]) -> type[Pass]:
        """Add a pass class. Its ``name`` must be kebab-case and not yet taken."""
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"{cls!r} is not a Pass subclass")
        if not cls.name or cls.name != cls.name.lower() or " " in cls.name or "_" in cls.name:
            raise ValueError(f"pass {cls.__name__} needs a kebab-case 'name', got {cls.name!r}")
        if cls.name in self._passes and self._passes[cls.name] is not cls:
            raise ValueError(f"pass name '{cls.name}' is already registered by "
                             f"{self._passes[cls.name].__module__}.{self._passes[cls.name].__name__}")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"pass {cls.__name__} must be a dataclass (its fields are its options)")
        self._passes[cls.name] = cls
        return cls

    def __contains__(self, name: str) -> bool:
        return name in self._passes

    def __getitem__(self, name: str) -> type[Pass]:
        return self._passes[name]

    def __iter__(self):
        return iter(self._passes.values())

    def names(self) -> list[str]:
        """Names of the registered passes, in registration order."""
        return list(self._passes)

    def copy(self) -> PassRegistry:
        """A new registry holding the same passes (registering into it leaves this one alone)."""
        return PassRegistry(self._passes.values())

    def load_module(self, path: str | Path) -> list[type[Pass]]:
        """Import a user's Python file and register its passes.

        The module's ``PASSES`` list is used when present; otherwise every :class:`Pass` subclass
        defined in the module (not imported into it) with a ``name``.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"pass module not found: {path}")
        module_name = f"trtcompile_user_passes_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise InputError(f"pass module is not a Python file: {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)  # user code: its exceptions are theirs, keep the traceback
        found = getattr(module, "PASSES", None)
        if found is None:
            found = [
                obj for obj in vars(module).values()
                if isinstance(obj, type) and issubclass(obj, Pass) and obj is not Pass
                and obj.__module__ == module.__name__ and obj.name
            ]
        if not found:
            raise InputError(f"pass module {path} defines no Pass subclass with a name")
        for cls in found:
            self.register(cls)
        return list(found)


def default_registry() -> PassRegistry:
    """A fresh registry holding the built-in passes of the ``passes`` package."""
    import passes  # the one explicit list of built-in passes

    return PassRegistry(passes.BUILTIN_PASSES)


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPoint:
    """Runs ``elements`` repeatedly until one whole iteration changes nothing."""

    elements: tuple[PipelineElement, ...]
    max_iterations: int = 8
    name: ClassVar[str] = "fixed-point"

    def to_text(self) -> str:
        options = "" if self.max_iterations == 8 else f"{{max-iterations={self.max_iterations}}}"
        return f"{self.name}{options}({print_pipeline(self.elements)})"


@dataclass(frozen=True)
class EngineGuided:
    """Keeps each group of rewrites only where TensorRT builds a better engine from it.

    Every element of ``elements`` (a pass, or a ``fixed-point`` group) is one candidate group. In
    order, each group runs on the graph as the groups kept so far left it; the manager builds an
    engine from the result (TensorRT's own fusion verdict: its compute layers) and keeps the group
    when

    * the engine has fewer compute layers, and the MACs stay within ``1 + max_extra_macs`` times
      the fewest MACs the graph has had in ``engine-guided`` (its input's, or less once a kept
      group removed arithmetic, e.g. folding a constant subgraph); or
    * the engine has as many compute layers and the group adds no MACs (a neutral rewrite, such
      as folding or cleanup, which later groups may build on).

    MACs compare only states that price the same layers: a group after which fewer layers have
    unknown cost (folding made their shapes known) resets the MAC reference to its own figure.
    Otherwise the graph goes back to what it was before the group, with the reason recorded
    (``engine 85 -> 87 compute layers``). Builds are cached by graph fingerprint, so a group that
    leaves the graph as an earlier state costs nothing; a group that changes nothing is kept
    without a build. At most ``max_builds`` engines are built and no build starts after
    ``max_seconds``; groups left then are not tried (recorded as skipped). The engine of each
    candidate is judged by ``PassContext.resources["engine-guided"]`` when set (a callable from a
    graph to its engine's compute layers, e.g. one that builds with the compile's optimization
    profiles), else by a TensorRT build without profiles.

    Worth it when the rewrites' effect on the engine is not known in advance: rewrites that add
    arithmetic to remove layers (``pad-kernels``, ``average-pool-conv-fusion``), and models
    unlike the ones the default pipeline was measured on. Each build takes seconds on a CPU, so
    a pipeline of N groups costs about N + 1 builds.
    """

    elements: tuple[PipelineElement, ...]
    max_builds: int = 32
    max_seconds: float = 600.0
    max_extra_macs: float = 0.0
    name: ClassVar[str] = "engine-guided"

    #: Option name -> (attribute, type, default).
    OPTIONS: ClassVar[dict[str, tuple[str, type, Any]]] = {
        "max-builds": ("max_builds", int, 32),
        "max-seconds": ("max_seconds", float, 600.0),
        "max-extra-macs": ("max_extra_macs", float, 0.0),
    }

    def to_text(self) -> str:
        options = " ".join(f"{key}={_format_value(getattr(self, attr))}"
                           for key, (attr, _, default) in self.OPTIONS.items()
                           if getattr(self, attr) != default)
        return f"{self.name}{'{' + options + '}' if options else ''}({print_pipeline(self.elements)})"


PipelineElement = Pass | FixedPoint | EngineGuided
Pipeline = tuple[PipelineElement, ...]


class _Parser:
    def __init__(self, text: str, registry: PassRegistry, named: dict[str, str],
                 expanding: tuple[str, ...] = ()):
        self.text = text
        self.pos = 0
        self.registry = registry
        self.named = named
        self.expanding = expanding

    def error(self, message: str) -> PipelineError:
        return PipelineError(f"pipeline text, at character {self.pos + 1}: {message}: '{self.text}'")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def ident(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in "-_."):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a pass name")
        return self.text[start:self.pos]

    def pipeline(self, closing: str = "") -> list[PipelineElement]:
        elements = []
        while True:
            if self.peek() == closing:
                break
            elements.extend(self.element())
            nxt = self.peek()
            if nxt == ",":
                self.pos += 1
                continue
            if nxt == closing:
                break
            raise self.error(f"expected ',' or {closing or 'end of text'!r}, got {nxt!r}")
        return elements

    def options(self) -> list[tuple[str, list[str]]]:
        # called with the '{' consumed
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.error("missing '}'")
        body = self.text[self.pos:end]
        self.pos = end + 1
        options: list[tuple[str, list[str]]] = []
        for token in body.replace(",", " , ").split():
            if token == ",":
                continue
            if "=" in token:
                key, value = token.split("=", 1)
                options.append((key.strip(), [value.strip()] if value.strip() else []))
            elif options:
                options[-1][1].append(token)
            else:
                raise self.error(f"option '{token}' has no value (write key=value)")
        return options

    def element(self) -> list[PipelineElement]:
        name = self.ident()
        if name in self.named and name not in self.registry:
            if self.peek() == "{":
                raise self.error(f"named pipeline '{name}' takes no options")
            if name in self.expanding:
                raise PipelineError(f"named pipeline '{name}' refers to itself")
            inner = _Parser(self.named[name], self.registry, self.named, (*self.expanding, name))
            elements = inner.pipeline()
            if inner.peek():
                raise inner.error("unexpected text")
            return elements
        raw_options: list[tuple[str, list[str]]] = []
        if self.peek() == "{":
            self.pos += 1
            raw_options = self.options()
        if name == EngineGuided.name:
            kwargs: dict[str, Any] = {}
            for key, values in raw_options:
                if key not in EngineGuided.OPTIONS:
                    raise PipelineError(f"engine-guided has options {', '.join(EngineGuided.OPTIONS)}; "
                                        f"got '{key}'")
                attr, type_, _ = EngineGuided.OPTIONS[key]
                kwargs[attr] = _convert("engine-guided", key, type_, values)
            if kwargs.get("max_builds", 1) < 1 or kwargs.get("max_seconds", 1.0) <= 0 \
                    or not kwargs.get("max_extra_macs", 0.0) >= 0:
                raise PipelineError("engine-guided needs max-builds >= 1, max-seconds > 0 and "
                                    "max-extra-macs >= 0")
            if self.peek() != "(":
                raise self.error("engine-guided needs a nested pipeline in parentheses")
            self.pos += 1
            inner = self.pipeline(closing=")")
            self.pos += 1
            if not inner:
                raise self.error("engine-guided needs at least one pass")
            return [EngineGuided(tuple(inner), **kwargs)]
        if name == FixedPoint.name:
            max_iterations = 8
            for key, values in raw_options:
                if _snake(key) != "max_iterations":
                    raise PipelineError(f"fixed-point has one option, max-iterations; got '{key}'")
                max_iterations = _convert("fixed-point", key, int, values)
                if max_iterations < 1:
                    raise PipelineError("fixed-point max-iterations must be at least 1")
            if self.peek() != "(":
                raise self.error("fixed-point needs a nested pipeline in parentheses")
            self.pos += 1
            inner = self.pipeline(closing=")")
            self.pos += 1
            if not inner:
                raise self.error("fixed-point needs at least one pass")
            return [FixedPoint(tuple(inner), max_iterations)]
        if name not in self.registry:
            known = ", ".join(sorted(self.registry.names()))
            raise PipelineError(f"unknown pass '{name}' in pipeline (known passes: {known})")
        cls = self.registry[name]
        types_ = cls.option_types()
        kwargs = {}
        for key, values in raw_options:
            attr = _snake(key)
            if attr not in types_:
                valid = ", ".join(_kebab(k) for k in types_) or "none"
                raise PipelineError(f"pass '{name}' has no option '{key}' (options: {valid})")
            kwargs[attr] = _convert(name, key, types_[attr], values)
        try:
            return [cls(**kwargs)]
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"pass '{name}': {exc}") from None


def parse_pipeline(text: str, registry: PassRegistry | None = None) -> Pipeline:
    """Parse pipeline text into pass instances.

    Names of named pipelines (``default``, ``fewest-layers``: see :func:`named_pipelines`) expand in
    place, so ``default,precision-fp16`` is the default pipeline followed by a pass.
    """
    registry = registry or default_registry()
    text = text.strip()
    if text in ("", "none"):
        return ()
    parser = _Parser(text, registry, named_pipelines())
    elements = parser.pipeline()
    if parser.peek():
        raise parser.error("unexpected text")
    return tuple(elements)


def print_pipeline(pipeline: Sequence[PipelineElement]) -> str:
    """Pipeline text that parses back to ``pipeline``."""
    return ",".join(element.to_text() for element in pipeline)


def named_pipelines() -> dict[str, str]:
    """Pipelines known by name (``passes.PIPELINES``): name to pipeline text."""
    import passes

    return dict(passes.PIPELINES)


def default_pipeline_text() -> str:
    """The default pipeline, as text."""
    import passes

    return passes.DEFAULT_PIPELINE


def iter_passes(pipeline: Sequence[PipelineElement]) -> Iterable[Pass]:
    """Every pass of a pipeline, flattening fixed-point groups."""
    for element in pipeline:
        if isinstance(element, (FixedPoint, EngineGuided)):
            yield from iter_passes(element.elements)
        else:
            yield element


# --------------------------------------------------------------------------------------------
# Records and reports
# --------------------------------------------------------------------------------------------


@dataclass
class PassRecord:
    """What the manager observed about one run of one pass."""

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
    stats: dict[str, int]
    rejections: list[Rejection]

    @property
    def delta(self) -> int:
        return self.layers_after - self.layers_before

    def to_dict(self) -> dict[str, Any]:
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
            "stats": self.stats,
            "rejections": [r.to_dict() for r in self.rejections],
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
    fixed_points: list[dict[str, Any]] = field(default_factory=list)
    #: One entry per group an ``engine-guided`` element tried: the group, the engine compute
    #: layers and MACs before and with it, whether it was kept and why.
    engine_guided: list[dict[str, Any]] = field(default_factory=list)
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
        return {
            "pipeline": self.pipeline,
            "layers": {"input": self.layers_before, "optimized": self.layers_after},
            "histogram": {"input": self.histogram_before, "optimized": self.histogram_after},
            "passes": [record.to_dict() for record in self.records],
            "fixed_points": self.fixed_points,
            "engine_guided": self.engine_guided,
            "seconds": round(self.seconds, 6),
            "provenance": self.provenance,
        }


# --------------------------------------------------------------------------------------------
# Instruments
# --------------------------------------------------------------------------------------------


class Instrument:
    """Observes a pipeline run. Override the hooks you need."""

    def before_pipeline(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Called once before the first pass."""

    def before_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, index: int) -> None:
        """Called before each pass run; ``index`` numbers runs from 1."""

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        """Called after each pass run with the manager's record. Raise to stop the pipeline."""


class DumpInstrument(Instrument):
    """Writes the IR before the first pass (``000_input.onnx``) and after each pass
    (``NNN_<pass>.onnx``) into ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.paths: list[Path] = []

    def before_pipeline(self, graph: gs.Graph, ctx: PassContext) -> None:
        self.paths.append(ir.save(ir.export_model(graph.copy()), self.directory / "000_input.onnx"))

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        path = self.directory / f"{record.index:03d}_{pass_.name}.onnx"
        self.paths.append(ir.save(ir.export_model(graph.copy()), path))


class VerifyInstrument(Instrument):
    """After each pass that changed the graph: the onnx checker on the exported model, then ONNX
    Runtime parity of the pass output against the pass input, on seeded inputs drawn from
    ``distribution`` (floating point: standard normal by default; see :mod:`trtcompile.verify`)
    at every size in ``verify.DYNAMIC_SIZES`` of the unknown dimensions ``input_shapes`` leaves
    open (or at ``shape_sets``, a compile's optimization-profile shapes). A failure stops the pipeline with :class:`~trtcompile.errors.PassFailed` naming the pass
    and the passes before it and saying what broke: the checker's message, an output whose shape
    or element type changed, values that differ, or the pass output not running on ONNX Runtime.
    """

    def __init__(self, atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0,
                 input_shapes: dict[str, Sequence[int]] | None = None,
                 distribution: Any = None,
                 shape_sets: Sequence[dict[str, Sequence[int]]] | None = None):
        self.atol = atol
        self.rtol = rtol
        self.seed = seed
        self.input_shapes = input_shapes
        self.distribution = distribution
        #: Input shape sets to check at (e.g. a compile's optimization profiles); None: every
        #: unknown dimension at each size of ``verify.DYNAMIC_SIZES``.
        self.shape_sets = [dict(s) for s in shape_sets] if shape_sets else None
        self._before = None

    def before_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, index: int) -> None:
        try:
            self._before = ir.export_model(graph.copy())
        except Exception as exc:  # noqa: BLE001 - onnx-graphsurgeon's export errors vary
            raise VerificationFailed(f"the pass input cannot be exported as ONNX: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def after_pass(self, pass_: Pass, graph: gs.Graph, ctx: PassContext, record: PassRecord) -> None:
        import onnx

        from trtcompile import verify

        if not record.changed:
            return
        try:
            after = ir.export_model(graph.copy())
        except Exception as exc:  # noqa: BLE001 - onnx-graphsurgeon's export errors vary
            raise VerificationFailed(f"the pass output cannot be exported as ONNX: "
                                     f"{type(exc).__name__}: {exc}") from exc
        try:
            onnx.checker.check_model(after, full_check=False)
        except onnx.checker.ValidationError as exc:
            raise VerificationFailed(f"onnx checker: {str(exc).splitlines()[0]}") from None
        shape_sets = self.shape_sets or verify.dynamic_shape_sets(self._before, self.input_shapes)
        for position, shapes in enumerate(shape_sets):
            try:
                result = verify.compare_models(
                    self._before, after, atol=self.atol, rtol=self.rtol, seed=self.seed,
                    input_shapes=shapes, reference_name="pass input", candidate_name="pass output",
                    distribution=self.distribution)
            except verify.ModelRunError as exc:
                at = _shapes_text(exc.input_shapes)
                if exc.which == "pass output":
                    raise VerificationFailed(f"the pass output does not run on ONNX Runtime at "
                                             f"{at}: {exc.reason}") from None
                if position == 0:
                    raise VerificationFailed(f"the pass input does not run on ONNX Runtime at "
                                             f"{at}: {exc.reason}") from None
                continue  # the model's unknown dimensions do not take this size
            if result.passed:
                continue
            changed = [o.describe(name) for name, o in result.outputs.items() if o.change]
            if changed:
                raise VerificationFailed(f"output {'; '.join(changed)} (inputs at "
                                         f"{_shapes_text(result.input_shapes)})")
            raise VerificationFailed(f"output differs from the pass input: {result.summary()}")


def _shapes_text(shapes: dict[str, Sequence[int]]) -> str:
    return ", ".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


class VerificationFailed(Exception):
    """Raised by an instrument when a pass's output fails verification."""


# --------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------


class PassManager:
    """Runs a pipeline on a graph and records what each pass did.

    >>> pm = PassManager("fold-constants,dead-layer-elimination")
    >>> report = pm.run(graph)            # graph is rewritten in place
    >>> [(r.name, r.layers_before, r.layers_after) for r in report.records]
    """

    def __init__(self, pipeline: str | Sequence[PipelineElement] = "default", *,
                 registry: PassRegistry | None = None,
                 instruments: Sequence[Instrument] = (),
                 ctx: PassContext | None = None):
        self.registry = registry or default_registry()
        if isinstance(pipeline, str):
            pipeline = parse_pipeline(pipeline, self.registry)
        self.pipeline: Pipeline = tuple(pipeline)
        self.instruments = list(instruments)
        self.ctx = ctx or PassContext()
        #: Engine compute layers by graph fingerprint, for ``engine-guided`` (one manager, one
        #: process: fingerprints are not stable across processes).
        self._engine_cache: dict[int, int] = {}

    @property
    def text(self) -> str:
        """The pipeline as canonical text."""
        return print_pipeline(self.pipeline)

    def run(self, graph: gs.Graph) -> PipelineReport:
        """Run the pipeline on ``graph`` (in place) and return the report."""
        report = PipelineReport(pipeline=self.text)
        report.layers_before = ir.layer_count(graph)
        report.histogram_before = ir.op_histogram(graph)
        report.input_node_names = [node.name for node in graph.nodes]
        for instrument in self.instruments:
            try:
                instrument.before_pipeline(graph, self.ctx)
            except TrtcompileError:
                raise
            except Exception as exc:  # noqa: BLE001 - third-party errors become the project's
                raise InputError(f"{type(instrument).__name__} could not start: "
                                 f"{type(exc).__name__}: {exc}") from exc
        start = time.perf_counter()
        first_rewrite = len(self.ctx.rewrites)
        # Rewrites allocate many small objects; on 100k-node graphs Python's cyclic collector then
        # runs often and costs several times the rewrites themselves. Collect once at the end.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            state = _RunState(fingerprint=ir.fingerprint(graph), structure=ir.Structure(graph))
            self._run_elements(self.pipeline, graph, report, state, iteration=None)
            report.provenance = {name: list(origins) for name, origins in state.provenance.items()}
        finally:
            if gc_was_enabled:
                gc.enable()
        report.seconds = time.perf_counter() - start
        report.rewrites = self.ctx.rewrites[first_rewrite:]
        report.layers_after = ir.layer_count(graph)
        report.histogram_after = ir.op_histogram(graph)
        return report

    def _run_elements(self, elements: Sequence[PipelineElement], graph: gs.Graph,
                      report: PipelineReport, state: _RunState, iteration: int | None) -> bool:
        changed_any = False
        for element in elements:
            if isinstance(element, FixedPoint):
                changed_any |= self._run_fixed_point(element, graph, report, state)
            elif isinstance(element, EngineGuided):
                changed_any |= self._run_engine_guided(element, graph, report, state, iteration)
            else:
                changed_any |= self._run_pass(element, graph, report, state, iteration)
        return changed_any

    def _run_fixed_point(self, group: FixedPoint, graph: gs.Graph, report: PipelineReport,
                         state: _RunState) -> bool:
        changed_any = False
        converged = False
        iterations = 0
        for iteration in range(1, group.max_iterations + 1):
            iterations = iteration
            changed = self._run_elements(group.elements, graph, report, state, iteration)
            changed_any |= changed
            if not changed:
                converged = True
                break
        report.fixed_points.append({
            "pipeline": group.to_text(), "iterations": iterations, "converged": converged,
        })
        if not converged:
            self.ctx.log(f"warning: {group.to_text()} did not converge in {group.max_iterations} "
                         "iterations")
        return changed_any

    def _run_engine_guided(self, group: EngineGuided, graph: gs.Graph, report: PipelineReport,
                           state: _RunState, iteration: int | None) -> bool:
        from trtcompile import cost

        start = time.perf_counter()
        judge = self.ctx.resources.get(EngineGuided.name) or _engine_compute_layers
        builds = 0
        cache_hits = 0
        failures: dict[int, str] = {}

        def engine_layers(candidate: gs.Graph, fingerprint: int) -> int | None:
            nonlocal builds, cache_hits
            if fingerprint in self._engine_cache:
                cache_hits += 1
                return self._engine_cache[fingerprint]
            if fingerprint in failures:
                return None
            builds += 1
            try:
                layers = int(judge(candidate))
            except TrtcompileError as error:
                failures[fingerprint] = str(error).splitlines()[0]
                return None
            self._engine_cache[fingerprint] = layers
            return layers

        layers_before = ir.layer_count(graph)
        histogram_before = ir.op_histogram(graph)
        entry_fingerprint = state.fingerprint
        summary = cost.graph_macs(graph)
        baseline_macs = current_macs = summary.macs
        current_unpriced = len(summary.unknown)
        current_layers = engine_layers(graph, state.fingerprint)
        if current_layers is None:
            raise PassFailed(group.to_text(), [r.text for r in report.records],
                             "TensorRT cannot build the input of engine-guided: "
                             + failures[state.fingerprint])
        engine_before = current_layers
        result = PassResult()
        for element in group.elements:
            text = element.to_text()
            out_of_budget = (builds >= group.max_builds
                             or time.perf_counter() - start >= group.max_seconds)
            if out_of_budget:
                result.reject(text, f"not tried: the budget (max-builds={group.max_builds}, "
                                    f"max-seconds={group.max_seconds:g}) is spent")
                result.count("groups_skipped")
                continue
            backup = graph.copy()
            traced_before = (state.structure, state.provenance)
            ledger = cost.mac_ledger(graph, self.ctx.resources)
            ledger_before = (ledger.spent, list(ledger.entries))
            records_before = len(report.records)
            fingerprint_before = state.fingerprint
            self._run_elements((element,), graph, report, state, iteration)
            result.count("groups_tried")
            if state.fingerprint == fingerprint_before:
                result.count("groups_unchanged")
                continue
            summary = cost.graph_macs(graph)
            macs, unpriced = summary.macs, len(summary.unknown)
            references = (baseline_macs, current_macs)
            if unpriced < current_unpriced:
                # The group made layers priceable (folding a shape computation): the MACs it
                # "adds" are those layers' own, so the new figure becomes the reference.
                baseline_macs = current_macs = max(macs, 1)
            layers = engine_layers(graph, state.fingerprint)
            entry = {"group": text, "engine_before": current_layers, "engine_after": layers,
                     "macs_before": current_macs, "macs_after": macs}
            if layers is None:
                reason = f"TensorRT cannot build the result: {failures[state.fingerprint]}"
            elif macs > baseline_macs * (1.0 + group.max_extra_macs) and macs > current_macs:
                reason = (f"MACs {cost.format_macs(macs)} exceed max-extra-macs="
                          f"{group.max_extra_macs:g} of {cost.format_macs(baseline_macs)}")
            elif layers < current_layers or (layers == current_layers and macs <= current_macs):
                reason = ""
            elif layers == current_layers:
                reason = (f"engine {current_layers} -> {layers} compute layers at "
                          f"{cost.format_macs(macs - current_macs)} more MACs")
            else:
                reason = f"engine {current_layers} -> {layers} compute layers"
            entry["kept"] = not reason
            entry["reason"] = reason or "kept"
            report.engine_guided.append(entry)
            if reason:
                _replace_graph(graph, backup)
                baseline_macs, current_macs = references
                ledger.spent, ledger.entries = ledger_before  # the undone rewrites spent nothing
                state.fingerprint = fingerprint_before
                state.structure, state.provenance = traced_before
                del report.records[records_before:]
                result.reject(text, reason)
                result.count("groups_rejected")
            else:
                current_layers, current_macs = layers, macs
                current_unpriced = unpriced
                baseline_macs = min(baseline_macs, macs)
                result.count("groups_kept")
        result.count("engine_builds", builds)
        if cache_hits:
            result.count("engine_cache_hits", cache_hits)
        result.count("engine_layers_before", engine_before)
        result.count("engine_layers_after", current_layers)
        report.records.append(PassRecord(
            index=len(report.records) + 1, name=group.name, text=group.to_text(), options={
                attr: getattr(group, attr) for attr, _, _ in EngineGuided.OPTIONS.values()},
            iteration=iteration, layers_before=layers_before, layers_after=ir.layer_count(graph),
            seconds=time.perf_counter() - start, changed=state.fingerprint != entry_fingerprint,
            histogram_delta=ir.histogram_delta(histogram_before, ir.op_histogram(graph)),
            stats=dict(result.counts), rejections=list(result.rejections)))
        return state.fingerprint != entry_fingerprint

    def _run_pass(self, pass_: Pass, graph: gs.Graph, report: PipelineReport, state: _RunState,
                  iteration: int | None) -> bool:
        index = len(report.records) + 1
        previous = [r.text for r in report.records]
        layers_before = ir.layer_count(graph)
        histogram_before = ir.op_histogram(graph)
        for instrument in self.instruments:
            self._instrument_hook(instrument.before_pass, pass_, previous, graph, self.ctx, index)
        start = time.perf_counter()
        self.ctx.current_pass = pass_.name
        try:
            result = pass_.run(graph, self.ctx)
        except TrtcompileError:
            raise  # a pass reporting unusable input (e.g. stale calibration data): the user's to fix
        except Exception as exc:  # a pass that raises is a compiler bug: name it, keep the cause
            raise PassFailed(pass_.to_text(), previous, f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        if not isinstance(result, PassResult):
            raise PassFailed(pass_.to_text(), previous,
                             f"run() returned {type(result).__name__}, expected PassResult")
        try:
            new_fingerprint = ir.fingerprint(graph)
            layers_after = ir.layer_count(graph)
            histogram_after = ir.op_histogram(graph)
        except Exception as exc:  # a graph the manager cannot even read is the pass's bug
            raise PassFailed(pass_.to_text(), previous, f"left a graph that cannot be read: "
                                                        f"{type(exc).__name__}: {exc}") from exc
        changed = new_fingerprint != state.fingerprint
        state.fingerprint = new_fingerprint
        if changed:
            structure = ir.Structure(graph)
            state.provenance = ir.trace_provenance(state.structure, structure, state.provenance)
            state.structure = structure
        record = PassRecord(
            index=index, name=pass_.name, text=pass_.to_text(), options=pass_.options(),
            iteration=iteration, layers_before=layers_before, layers_after=layers_after,
            seconds=seconds, changed=changed,
            histogram_delta=ir.histogram_delta(histogram_before, histogram_after),
            stats=dict(result.counts), rejections=list(result.rejections),
        )
        report.records.append(record)
        for instrument in self.instruments:
            self._instrument_hook(instrument.after_pass, pass_, previous, graph, self.ctx, record)
        return changed

    @staticmethod
    def _instrument_hook(hook: Callable[..., None], pass_: Pass, previous: list[str],
                         *args: Any) -> None:
        """Call an instrument hook; what it raises becomes PassFailed naming the pass (a
        verification's finding, or an instrument that broke on the pass's graph)."""
        try:
            hook(pass_, *args)
        except VerificationFailed as exc:
            raise PassFailed(pass_.to_text(), previous, str(exc)) from None
        except TrtcompileError:
            raise
        except Exception as exc:  # noqa: BLE001 - third-party errors become the project's
            owner = type(getattr(hook, "__self__", hook)).__name__
            raise PassFailed(pass_.to_text(), previous,
                             f"{owner} raised {type(exc).__name__}: {exc}") from exc


@dataclass
class _RunState:
    fingerprint: int
    #: The graph's structure after the last pass that changed it, and the provenance of its
    #: nodes (see :attr:`PipelineReport.provenance`; names missing stand for themselves).
    structure: ir.Structure
    provenance: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _replace_graph(graph: gs.Graph, other: gs.Graph) -> None:
    """Make ``graph`` (in place: callers hold it) the program ``other`` is."""
    graph.__dict__.clear()
    graph.__dict__.update(other.__dict__)


def _engine_compute_layers(graph: gs.Graph) -> int:
    """Compute layers of the engine TensorRT builds from ``graph`` (no optimization profiles)."""
    from trtcompile.backend import build_engine
    from trtcompile.errors import BackendError

    build = build_engine(ir.export_model(graph.copy()), progress=False)
    if not build.layer_report_available:
        raise BackendError("the builder reported no engine layers, so engines cannot be compared")
    return build.compute_layers


def run_pipeline(graph: gs.Graph, pipeline: str = "default", **kwargs: Any) -> PipelineReport:
    """Convenience: ``PassManager(pipeline, **kwargs).run(graph)``."""
    return PassManager(pipeline, **kwargs).run(graph)


__all__ = [
    "DumpInstrument", "EngineGuided", "FixedPoint", "Instrument", "Pass", "PassContext",
    "PassManager", "PassRecord", "PassRegistry", "PassResult", "PipelineReport",
    "REWRITE_LIMIT_REASON", "Rejection", "Rewrite", "VerifyInstrument",
    "default_pipeline_text", "default_registry", "iter_passes", "parse_pipeline", "print_pipeline",
    "run_pipeline",
]

