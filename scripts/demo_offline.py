"""Offline demo of the BIG-Bench pipeline on tiny random models (about 45 s on 2 CPU cores)
(= `cappy demo`; the command is `cappy.bigbench.demo`).
"""

import sys

from cappy.bigbench.demo import main

if __name__ == "__main__":
    sys.exit(main())
