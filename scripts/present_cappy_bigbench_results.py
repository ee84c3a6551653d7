"""Cappy's BIG-Bench ROUGE-L per task and generator, beside the paper's figures
(= `cappy tables`; the command is `cappy.bigbench.present`).
"""

import sys

from cappy.bigbench.present import main

if __name__ == "__main__":
    sys.exit(main())
