"""``python -m trtcompile.cli``: the ``trtcompile`` command."""

import sys

from trtcompile.cli import main

sys.exit(main())
