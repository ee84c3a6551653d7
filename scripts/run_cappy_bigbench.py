"""Run cappy_bigbench.py for every BIG-Bench task and generator, resumably
(= `cappy bigbench-tasks`; the command is `cappy.bigbench.runner`).

    python scripts/run_cappy_bigbench.py [--gen_models flan-t5-xl,flan-t5-xxl] \
        [--tasks codenames,gem] [--devices 0,1,2,3 | --cuda_idx 0] [--dry_run] \
        [any cappy_bigbench.py flag, e.g. --train_size 1024 --lr_schedule corrected]
"""

import sys

from cappy.bigbench.runner import main

if __name__ == "__main__":
    sys.exit(main())
