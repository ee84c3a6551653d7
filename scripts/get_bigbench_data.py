"""Build the 45 BIG-Bench generative tasks as jsonl
(= `cappy bigbench-data`; the command is `cappy.bigbench.build`).
"""

import sys

from cappy.bigbench.build import main

if __name__ == "__main__":
    sys.exit(main())
