"""Boost a generator LLM with Cappy on one BIG-Bench task (the paper's Table 2).

    XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_bigbench.py \
        --model_name_or_path btan2/cappy-large --bigbench_gen_model flan-t5-xxl \
        --bigbench_subset_name auto_categorization --train_size 102400

`--help` lists every flag; cappy/bigbench/task.py holds the command and what it does.
"""

import sys

from cappy.bigbench.task import main

if __name__ == "__main__":
    sys.exit(main())
