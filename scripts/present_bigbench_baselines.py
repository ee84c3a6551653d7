"""The seven baseline rows of the BIG-Bench table, with the paper's figures beside ours
(= `cappy baselines`; the command is `cappy.bigbench.baselines`).
"""

import sys

from cappy.bigbench.baselines import main

if __name__ == "__main__":
    sys.exit(main())
