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

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cappy.engine.errors import exit_on_error  # noqa: E402
from cappy.engine.hosts import add_multihost_arguments  # noqa: E402
from cappy.engine.checkpoints import DTYPES, keep_torch_out_of_transformers  # noqa: E402
from cappy.bigbench.examples import LR_SCHEDULES  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bigbench_gen_dir", default="bigbench_flan_gens",
                   help="folder of candidate folders, one per generator")
    p.add_argument("--bigbench_gen_model", default="flan-t5-xxl",
                   help="the generator whose candidates to rerank (a folder in "
                        "--bigbench_gen_dir)")
    p.add_argument("--bigbench_subset_name", default="auto_categorization",
                   help="the BIG-Bench task")
    p.add_argument("--src_key", default="instruction",
                   help="the instruction's field in the candidate rows")
    p.add_argument("--tgt_key", default="response",
                   help="the response's field in the training examples")
    p.add_argument("--refs_key", default="references",
                   help="the references' field in the candidate rows")
    p.add_argument("--label_key", default="label",
                   help="the label's field in the training examples")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large",
                   help="the Cappy to finetune: a hub id or a folder")
    p.add_argument("--n_model_shards", type=int, default=1,
                   help="devices each model copy is split over")
    p.add_argument("--max_length", type=int, default=512,
                   help="tokens per pair; longer pairs are cut by the checkpoint's truncation "
                        "policy")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype (parameters, optimizer state and scores stay float32)")
    p.add_argument("--train_size", type=int, default=102400,
                   help="training examples after repeating or cutting the built set")
    p.add_argument("--per_device_batch_size", type=int, default=8,
                   help="examples per device per micro-batch, as in the original: with "
                        "--accumulate_grad_batches it fixes which examples form each "
                        "optimizer update; they are packed into rows, and a device step "
                        "holds up to this many x max_length tokens")
    p.add_argument("--eval_per_device_batch_size", type=int, default=32,
                   help="scoring: pairs per device per batch, counted at max_length tokens "
                        "each (pairs are packed into rows up to that many tokens)")
    p.add_argument("--accumulate_grad_batches", type=int, default=16,
                   help="micro-batches per optimizer update")
    p.add_argument("--learning_rate", type=float, default=2e-5,
                   help="peak rate; 0 skips finetuning (zero-shot reranking)")
    p.add_argument("--warmup_rate", type=float, default=0.1,
                   help="share of the schedule spent warming up")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW's weight decay")
    p.add_argument("--lr_schedule", default="paper", choices=LR_SCHEDULES,
                   help="paper: as published (sized in micro-batches, advanced per update); "
                        "corrected: warm-up and decay counted in optimizer updates")
    p.add_argument("--results_dir", default="bigbench_cappy_results",
                   help="where <generator>/<task>.json is written")
    p.add_argument("--seed", type=int, default=11111,
                   help="seed of the example order and the dropout draws")
    p.add_argument("--overwrite", action="store_true", help="run even if the result exists")
    p.add_argument("--quiet", dest="verbose", action="store_false",
                   help="no Redco logs or progress bars")
    add_multihost_arguments(p)
    return p.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    if argv is None:  # a process of its own, computing with JAX only: seconds less start-up
        keep_torch_out_of_transformers()
    from cappy.bigbench.task import run_task

    run_task(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
