"""Thread defaults for CPU runs.

On a small shared machine torch's intra-op pool can collapse under load; cltrace sets the count
once from ``CLTRACE_NUM_THREADS`` (default: torch's own choice). Before torch is imported the
count goes through ``OMP_NUM_THREADS``, which torch reads when it starts, so a command that never
needs torch (``cltrace --help``) does not pay for importing it.
"""

import os
import sys


def configure_threads() -> None:
    n = os.environ.get("CLTRACE_NUM_THREADS")
    if not n:
        return
    count = max(1, int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    else:
        os.environ["OMP_NUM_THREADS"] = str(count)
