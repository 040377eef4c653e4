"""The pass infrastructure: passes, pipelines, combinators, the registry, the manager, instruments.

This layer imports only :mod:`trtcompile.ir`, :mod:`trtcompile.errors`, :mod:`trtcompile.verify`
(for :class:`VerifyInstrument`) and third-party libraries: no pass, no backend, no frontend, no
part of the compile flow. Whoever runs a pipeline hands the manager a :class:`PassRegistry`; the
built-in one (built-in passes, ``fixed-point`` and ``engine-guided``, named pipelines) is built by
:func:`trtcompile.flow.registry.builtin_registry`.

* :mod:`~trtcompile.pm.base` - :class:`Pass`, :class:`PassResult`, :class:`PassContext`,
  :class:`Rejection`, :class:`Rewrite`;
* :mod:`~trtcompile.pm.pipeline` - :class:`Combinator`, :class:`FixedPoint`, pipeline text,
  :func:`iter_passes`, :func:`map_passes`;
* :mod:`~trtcompile.pm.registry` - :class:`PassRegistry`;
* :mod:`~trtcompile.pm.records` - :class:`PassRecord`, :class:`PipelineReport`;
* :mod:`~trtcompile.pm.instruments` - :class:`Instrument`, :class:`DumpInstrument`,
  :class:`VerifyInstrument`;
* :mod:`~trtcompile.pm.manager` - :class:`PassManager`, :class:`PipelineRun`.
"""

from trtcompile.pm.base import (
    REWRITE_LIMIT_REASON,
    OptionFields,
    Pass,
    PassContext,
    PassResult,
    Rejection,
    Rewrite,
)
from trtcompile.pm.instruments import (
    DumpInstrument,
    Instrument,
    VerificationFailed,
    VerifyInstrument,
)
from trtcompile.pm.manager import Checkpoint, PassManager, PipelineRun
from trtcompile.pm.pipeline import (
    Combinator,
    FixedPoint,
    Pipeline,
    PipelineElement,
    iter_combinators,
    iter_passes,
    map_passes,
    parse_pipeline,
    print_pipeline,
)
from trtcompile.pm.records import PassRecord, PipelineReport
from trtcompile.pm.registry import PassRegistry

__all__ = [
    "REWRITE_LIMIT_REASON",
    "Checkpoint",
    "Combinator",
    "DumpInstrument",
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
    "iter_combinators",
    "iter_passes",
    "map_passes",
    "parse_pipeline",
    "print_pipeline",
]
