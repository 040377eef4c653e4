"""The Python API of passes, pipelines and the pass manager.

This module is the face users import (``from trtcompile.pass_manager import PassManager,
VerifyInstrument, Pass, PassResult``). It re-exports the pass infrastructure of :mod:`trtcompile.pm`
and fills in what that layer leaves to its caller: the built-in registry. Here a pipeline's names
are looked up in the built-in passes, combinators and named pipelines unless a registry is given::

    PassManager("default", instruments=[VerifyInstrument()]).run(graph)
    PassManager("fold-constants,my-pass", registry=build_registry(["my_passes.py"])).run(graph)

Pipeline text (see :mod:`trtcompile.pm.pipeline`)::

    fold-constants,dead-layer-elimination,fixed-point{max-iterations=8}(conv-bias-activation-fusion{activations=relu,clip},horizontal-fusion)

* ``fixed-point(...)`` runs its nested pipeline until an iteration leaves the graph unchanged
  (``max-iterations`` bounds it, default 8);
* ``engine-guided(...)`` tries each element of its nested pipeline as one group of candidate
  rewrites, builds a TensorRT engine of the result and keeps the group only where the engine is
  not worse (:class:`~trtcompile.flow.engine_guided.EngineGuided`); options ``max-builds``,
  ``max-seconds``, ``max-extra-macs``;
* ``default``, ``fewest-layers`` and ``tuned`` stand for the named pipelines of ``passes``.

Inside the project, layers below the compile flow import :mod:`trtcompile.pm` (which knows no
pass); besides :mod:`trtcompile.flow`, this module is the only one that reaches the ``passes``
package, and only when a built-in registry is asked for: the pass modules import this module, so
it must not import them while it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import onnx_graphsurgeon as gs

from trtcompile import pm
from trtcompile.pm import (
    REWRITE_LIMIT_REASON,
    Checkpoint,
    Combinator,
    DumpInstrument,
    FixedPoint,
    Instrument,
    OptionFields,
    Pass,
    PassContext,
    PassRecord,
    PassRegistry,
    PassResult,
    Pipeline,
    PipelineElement,
    PipelineReport,
    PipelineRun,
    Rejection,
    Rewrite,
    VerificationFailed,
    VerifyInstrument,
    iter_combinators,
    iter_passes,
    map_passes,
    print_pipeline,
)

if TYPE_CHECKING:  # at run time fetched on first use, see __getattr__ below
    from trtcompile.flow.engine_guided import EngineGuided


def default_registry() -> PassRegistry:
    """A fresh registry of the built-in passes, combinators (``fixed-point``, ``engine-guided``)
    and named pipelines (:func:`trtcompile.flow.registry.builtin_registry`)."""
    # Imported at call time: the pass modules import this module.
    from trtcompile.flow.registry import builtin_registry

    return builtin_registry()


def build_registry(pass_modules: Sequence[Any]) -> PassRegistry:
    """The built-in registry plus the passes of the user's modules
    (:func:`trtcompile.flow.registry.build_registry`)."""
    # Imported at call time, as above.
    from trtcompile.flow.registry import build_registry as build

    return build(pass_modules)


def named_pipelines() -> dict[str, str]:
    """The built-in named pipelines: name to pipeline text."""
    return default_registry().pipelines()


def default_pipeline_text() -> str:
    """The default pipeline, as text."""
    return named_pipelines()["default"]


def parse_pipeline(text: str, registry: PassRegistry | None = None) -> Pipeline:
    """Parse pipeline text (:func:`trtcompile.pm.parse_pipeline`), by default with the built-in
    registry."""
    return pm.parse_pipeline(text, registry or default_registry())


class PassManager(pm.PassManager):
    """:class:`trtcompile.pm.PassManager` that runs the ``default`` pipeline unless told otherwise
    and looks pipeline text up in the built-in registry unless given one.

    >>> report = PassManager("default", instruments=[VerifyInstrument()]).run(graph)
    >>> [(r.name, r.layers_before, r.layers_after) for r in report.records]
    """

    def __init__(self, pipeline: str | Sequence[PipelineElement] = "default", *,
                 registry: PassRegistry | None = None,
                 instruments: Sequence[Instrument] = (),
                 ctx: PassContext | None = None):
        super().__init__(pipeline, registry=registry or default_registry(),
                         instruments=instruments, ctx=ctx)


def run_pipeline(graph: gs.Graph, pipeline: str = "default", **kwargs: Any) -> PipelineReport:
    """Convenience: ``PassManager(pipeline, **kwargs).run(graph)``."""
    return PassManager(pipeline, **kwargs).run(graph)


def __getattr__(name: str) -> Any:
    # EngineGuided belongs to the compile flow, whose package may import the passes, which import
    # this module: it is fetched on first use rather than while this module loads.
    if name == "EngineGuided":
        from trtcompile.flow.engine_guided import EngineGuided

        globals()[name] = EngineGuided
        return EngineGuided
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REWRITE_LIMIT_REASON",
    "Checkpoint",
    "Combinator",
    "DumpInstrument",
    "EngineGuided",
    "FixedPoint",
    "Instrument",
    "OptionFields",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassRegistry",
    "PassResult",
    "Pipeline",
    "PipelineElement",
    "PipelineReport",
    "PipelineRun",
    "Rejection",
    "Rewrite",
    "VerificationFailed",
    "VerifyInstrument",
    "build_registry",
    "default_pipeline_text",
    "default_registry",
    "iter_combinators",
    "iter_passes",
    "map_passes",
    "named_pipelines",
    "parse_pipeline",
    "print_pipeline",
    "run_pipeline",
]
