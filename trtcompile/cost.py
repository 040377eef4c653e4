"""Public alias of :mod:`trtcompile.ir.cost`, the MAC cost model (an analysis of the IR).

``from trtcompile import cost`` keeps working for code written before the cost model moved into
the IR layer; new code imports ``trtcompile.ir.cost``.
"""

from trtcompile.ir.cost import *  # noqa: F401,F403 - the alias re-exports the public names
from trtcompile.ir.cost import __all__  # noqa: F401
