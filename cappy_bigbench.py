"""Boost a generator LLM with Cappy on one BIG-Bench task (the paper's Table 2).

    XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_bigbench.py \
        --model_name_or_path btan2/cappy-large --bigbench_gen_model flan-t5-xxl \
        --bigbench_subset_name auto_categorization --train_size 102400

Finetunes Cappy on the task's training instructions with ROUGE-L-labelled
candidates (gold references 1.0, a mismatched reference 0.0), then picks Cappy's
best of the 17 candidates for each validation instruction and reports ROUGE-L.
Writes `{results_dir}/{gen_model}/{task}.json` and `{task}.predictions.jsonl`.
The original reports 40 minutes per task on one A10G GPU; expected ROUGE-L
per task is in cappy/data/paper_results.json (mean over 45 tasks: 37.17 with
FLAN-T5-XXL candidates). `--learning_rate 0` skips finetuning and reranks with
the initial model. `--lr_schedule paper` (default) reproduces the published
schedule; `--lr_schedule corrected` counts warm-up and decay in optimizer
updates (see cappy/engine/training.py and the README).
"""

import sys

from cappy.bigbench.task import main

if __name__ == "__main__":
    sys.exit(main())
