"""Run a cappy command as several JAX processes on this machine, the local check of a multi-host run
(= `cappy processes`; the command is `cappy.engine.runtime.local_processes`).
"""

import sys

from cappy.engine.runtime.local_processes import main

if __name__ == "__main__":
    sys.exit(main())
