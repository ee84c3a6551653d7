"""Pretrain Cappy from a RoBERTa checkpoint on (instruction, response, label) shards.

Paper scale (RoBERTa-large, pairs from scripts/build_pretraining_data.py), one host
with 8 accelerators: one pass over 160M pairs at 8 x 32 pairs per step is 625,000 steps.

`--help` lists every flag; cappy/pretraining/train.py holds the command and what it does.
"""

import sys

from cappy.pretraining.train import main

if __name__ == "__main__":
    sys.exit(main())
