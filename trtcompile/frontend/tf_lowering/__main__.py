"""``python -m trtcompile.frontend.tf_lowering REQUEST.json``: the worker process
(:func:`trtcompile.frontend.tf_lowering.worker.worker_main`)."""

import sys
import traceback

from trtcompile.frontend.tf_lowering.worker import worker_main

if __name__ == "__main__":
    try:
        sys.exit(worker_main(sys.argv[1:]))
    except Exception:  # a bug: the parent shows this traceback
        traceback.print_exc()
        sys.exit(70)
