"""Pipelines: elements, combinators, and their text.

A pipeline is a sequence of elements; an element is a :class:`~trtcompile.pm.base.Pass` or a
:class:`Combinator`, which holds a nested pipeline and decides how to run it (``fixed-point``
repeats it until nothing changes; ``engine-guided``, defined with the compile flow, keeps each
group only where TensorRT builds a better engine). Pipelines are text, round-tripping through
:func:`parse_pipeline` and :func:`print_pipeline`::

    fold-constants,dead-layer-elimination,fixed-point{max-iterations=8}(conv-bias-activation-fusion{activations=relu,clip},horizontal-fusion)

* elements are separated by commas;
* options go in braces as ``key=value``, separated by spaces or commas; a list option takes several
  comma-separated values (``activations=relu,clip``): a token without ``=`` continues the list;
* a combinator's nested pipeline goes in parentheses after its name and options;
* the name of a named pipeline (``default``) stands for its text.

Every name (pass, combinator, named pipeline) is looked up in the
:class:`~trtcompile.pm.registry.PassRegistry` the caller hands in; nothing here knows a built-in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import onnx_graphsurgeon as gs

from trtcompile.errors import PipelineError
from trtcompile.pm.base import OptionFields, Pass, convert_option, kebab, snake

if TYPE_CHECKING:
    from trtcompile.pm.manager import PipelineRun
    from trtcompile.pm.registry import PassRegistry

# --------------------------------------------------------------------------------------------
# Combinators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combinator(OptionFields):
    """A pipeline element that runs a nested pipeline its own way.

    Subclasses are frozen dataclasses whose first field is ``elements`` (the nested pipeline) and
    whose other fields, all with defaults, are options (typed as pass options are). They set
    ``name`` (kebab-case, registered with :meth:`PassRegistry.register_combinator
    <trtcompile.pm.registry.PassRegistry.register_combinator>`), optionally ``report_section`` (a
    key of :attr:`PipelineReport.sections <trtcompile.pm.records.PipelineReport.sections>` they
    append one entry per run to), and implement :meth:`run`. ``__post_init__`` may raise ValueError
    for option values it refuses; the parser words it as a pipeline error.

    The parser, the printer, :func:`iter_passes`, :func:`map_passes` and the manager deal with
    every combinator through this protocol alone.
    """

    elements: tuple[PipelineElement, ...]
    name: ClassVar[str] = ""
    report_section: ClassVar[str] = ""
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("elements",)

    def to_text(self) -> str:
        """``name{options}(nested pipeline)``, non-default options only."""
        return f"{self.name}{self.options_text()}({print_pipeline(self.elements)})"

    def replace_elements(self, elements: Iterable[PipelineElement]) -> Combinator:
        """The same combinator, with the same options, around ``elements``."""
        return dataclasses.replace(self, elements=tuple(elements))

    def run(self, graph: gs.Graph, run: PipelineRun,
            iteration: int | None) -> bool:  # pragma: no cover - abstract
        """Run the nested pipeline on ``graph`` (in place) through ``run`` (the manager's state of
        this pipeline run: :meth:`PipelineRun.run_elements
        <trtcompile.pm.manager.PipelineRun.run_elements>` runs elements and records passes);
        ``iteration`` is that of an enclosing fixed point, if any. Returns whether the graph
        changed."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")


PipelineElement = Pass | Combinator
Pipeline = tuple[PipelineElement, ...]


@dataclass(frozen=True)
class FixedPoint(Combinator):
    """Runs its nested pipeline until one whole iteration leaves the graph unchanged.

    ``max-iterations`` bounds the iterations (default 8); a group that still changes the graph in
    the last one is reported as not converged and logged as a warning. Each run appends
    ``{"pipeline", "iterations", "converged"}`` to the report's ``fixed_points``.
    """

    max_iterations: int = 8
    name: ClassVar[str] = "fixed-point"
    report_section: ClassVar[str] = "fixed_points"

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ValueError("max-iterations must be at least 1")

    def run(self, graph: gs.Graph, run: PipelineRun, iteration: int | None) -> bool:
        """Iterate the nested pipeline (numbering iterations from 1 in the records)."""
        changed_any = False
        converged = False
        iterations = 0
        for number in range(1, self.max_iterations + 1):
            iterations = number
            changed = run.run_elements(self.elements, graph, number)
            changed_any |= changed
            if not changed:
                converged = True
                break
        run.section(self).append({
            "pipeline": self.to_text(), "iterations": iterations, "converged": converged,
        })
        if not converged:
            run.ctx.log(f"warning: {self.to_text()} did not converge in {self.max_iterations} "
                        "iterations")
        return changed_any


# --------------------------------------------------------------------------------------------
# Walking pipelines
# --------------------------------------------------------------------------------------------


def iter_passes(pipeline: Sequence[PipelineElement]) -> Iterator[Pass]:
    """Every pass of a pipeline, in order, through every combinator."""
    for element in pipeline:
        if isinstance(element, Combinator):
            yield from iter_passes(element.elements)
        else:
            yield element


def iter_combinators(pipeline: Sequence[PipelineElement]) -> Iterator[Combinator]:
    """Every combinator of a pipeline, outer ones before those they hold."""
    for element in pipeline:
        if isinstance(element, Combinator):
            yield element
            yield from iter_combinators(element.elements)


def map_passes(pipeline: Sequence[PipelineElement],
               fn: Callable[[Pass], PipelineElement]) -> Pipeline:
    """``pipeline`` rebuilt with ``fn`` applied to every pass, inside any combinator (which keeps
    its options). ``fn`` returns the element to put in the pass's place (the pass itself to leave
    it alone)."""
    return tuple(element.replace_elements(map_passes(element.elements, fn))
                 if isinstance(element, Combinator) else fn(element)
                 for element in pipeline)


def print_pipeline(pipeline: Sequence[PipelineElement]) -> str:
    """Pipeline text that parses back to ``pipeline``."""
    return ",".join(element.to_text() for element in pipeline)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_pipeline(text: str, registry: PassRegistry) -> Pipeline:
    """Parse pipeline text into pass and combinator instances, looking names up in ``registry``.

    Names of the registry's named pipelines (:meth:`PassRegistry.pipelines
    <trtcompile.pm.registry.PassRegistry.pipelines>`) expand in place, so ``default,precision-fp16``
    is the default pipeline followed by a pass. ``""`` and ``none`` are the empty pipeline.
    """
    text = text.strip()
    if text in ("", "none"):
        return ()
    parser = _Parser(text, registry)
    elements = parser.pipeline()
    if parser.peek():
        raise parser.error("unexpected text")
    return tuple(elements)


class _Parser:
    def __init__(self, text: str, registry: PassRegistry, expanding: tuple[str, ...] = ()):
        self.text = text
        self.pos = 0
        self.registry = registry
        #: Named pipelines being expanded, outermost first (to refuse one that names itself).
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
        named = self.registry.pipelines()
        if name in named:
            return self.named_pipeline(name, named[name])
        raw_options: list[tuple[str, list[str]]] = []
        if self.peek() == "{":
            self.pos += 1
            raw_options = self.options()
        combinator = self.registry.combinator(name)
        if combinator is not None:
            return [self.combinator(combinator, raw_options)]
        if name not in self.registry:
            known = [f"known passes: {', '.join(sorted(self.registry.names()))}"]
            if self.registry.combinators():
                known.append("combinators: " + ", ".join(
                    sorted(cls.name for cls in self.registry.combinators())))
            if named:
                known.append(f"named pipelines: {', '.join(sorted(named))}")
            raise PipelineError(f"unknown pass '{name}' in pipeline ({'; '.join(known)})")
        cls = self.registry[name]
        types_ = cls.option_types()
        kwargs = {}
        for key, values in raw_options:
            attr = snake(key)
            if attr not in types_:
                valid = ", ".join(kebab(k) for k in types_) or "none"
                raise PipelineError(f"pass '{name}' has no option '{key}' (options: {valid})")
            kwargs[attr] = convert_option(name, key, types_[attr], values)
        try:
            return [cls(**kwargs)]
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"pass '{name}': {exc}") from None

    def named_pipeline(self, name: str, text: str) -> list[PipelineElement]:
        if self.peek() == "{":
            raise self.error(f"named pipeline '{name}' takes no options")
        if name in self.expanding:
            raise PipelineError(f"named pipeline '{name}' refers to itself")
        inner = _Parser(text, self.registry, (*self.expanding, name))
        elements = inner.pipeline()
        if inner.peek():
            raise inner.error("unexpected text")
        return elements

    def combinator(self, cls: type[Combinator],
                   raw_options: list[tuple[str, list[str]]]) -> Combinator:
        types_ = cls.option_types()
        kwargs = {}
        for key, values in raw_options:
            attr = snake(key)
            if attr not in types_:
                valid = [kebab(k) for k in types_]
                has = ("no options" if not valid else f"one option, {valid[0]}" if len(valid) == 1
                       else f"options {', '.join(valid)}")
                raise PipelineError(f"{cls.name} has {has}; got '{key}'")
            kwargs[attr] = convert_option(cls.name, key, types_[attr], values)
        if self.peek() != "(":
            raise self.error(f"{cls.name} needs a nested pipeline in parentheses")
        self.pos += 1
        inner = self.pipeline(closing=")")
        self.pos += 1
        if not inner:
            raise self.error(f"{cls.name} needs at least one pass")
        try:
            return cls(tuple(inner), **kwargs)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"{cls.name}: {exc}") from None
