"""Pretrain Cappy from a RoBERTa checkpoint on (instruction, response, label) shards.

Paper scale (RoBERTa-large, pairs from scripts/build_pretraining_data.py), one host
with 8 accelerators: one pass over 160M pairs at 8 x 32 pairs per step is 625,000 steps.

    XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_pretrain.py \
        --data_dir pretraining_data --output_dir cappy-pretrain \
        --model_name_or_path roberta-large --dtype bfloat16 \
        --per_device_batch_size 32 --accumulate_grad_batches 1 \
        --max_steps 625000 --learning_rate 1e-5 --warmup_steps 10000

Several hosts: run the same command on each, adding `--n_processes N
--host0_address ADDR --process_id I` (the output folder must be on a shared
filesystem). Tiny offline run (a random model, a few hand-made shards):

    python scripts/make_tiny_models.py --output_dir demo_run/models --models tiny-cappy
    python cappy_pretrain.py --data_dir my_shards --output_dir demo_run/pretrain \
        --model_name_or_path demo_run/models/tiny-cappy --max_steps 20 \
        --per_device_batch_size 4 --save_every 10 --eval_every 10 --log_every 5

Steps are optimizer updates, each of `per_device_batch_size x devices x
accumulate_grad_batches` pairs. Checkpoints go to `{output_dir}/checkpoints`
every --save_every steps; running the same command again resumes from the last
one and follows the uninterrupted run exactly (--no_resume refuses instead).
`{output_dir}/log.jsonl` has the training loss, learning rate, throughput and
the evaluation on held-out pairs; `{output_dir}/final` is the pretrained Cappy
(`Cappy.from_pretrained`, `cappy_bigbench.py --model_name_or_path`). The
paper's own hyperparameters and timings were not published; the defaults here
are ours, and no full-scale run has been timed with this script.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error
from cappy.engine.checkpoints import DTYPES, keep_torch_out_of_transformers
from cappy.engine.hosts import add_multihost_arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", required=True, help="folder with manifest.json and shards/")
    p.add_argument("--output_dir", required=True,
                   help="where checkpoints, log.jsonl and the final Cappy are written")
    p.add_argument("--model_name_or_path", default="roberta-large",
                   help="a RoBERTa-style checkpoint (new regression head) or a Cappy (continued)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype; parameters and optimizer state stay float32")
    p.add_argument("--max_steps", type=int, required=True, help="optimizer updates in all")
    p.add_argument("--per_device_batch_size", type=int, default=32,
                   help="examples per device per micro-batch")
    p.add_argument("--accumulate_grad_batches", type=int, default=1,
                   help="micro-batches per optimizer update")
    p.add_argument("--learning_rate", type=float, default=1e-5, help="peak rate")
    p.add_argument("--warmup_steps", type=int, default=None,
                   help="linear warm-up from 0 (default: 10%% of --max_steps), then linear "
                        "decay to 0 at --max_steps")
    p.add_argument("--weight_decay", type=float, default=0.01,
                   help="AdamW decay, not on biases or LayerNorm")
    p.add_argument("--max_length", type=int, default=512,
                   help="tokens per pair; longer pairs lose tokens from the longer side first")
    p.add_argument("--interleave_shards", type=int, default=32,
                   help="shards read at once, each row from one of them at random")
    p.add_argument("--shuffle_buffer", type=int, default=100000,
                   help="rows shuffled together after interleaving")
    p.add_argument("--seed", type=int, default=11111,
                   help="data order, dropout and the new head's initialisation")
    p.add_argument("--save_every", type=int, default=1000,
                   help="steps between checkpoints (0: only at the end or stop)")
    p.add_argument("--keep_checkpoints", type=int, default=2,
                   help="checkpoints kept on disk, newest first")
    p.add_argument("--eval_every", type=int, default=1000,
                   help="steps between evaluations on validation pairs (0: none)")
    p.add_argument("--eval_size", type=int, default=2000,
                   help="validation rows evaluated, sampled across all validation shards")
    p.add_argument("--eval_per_device_batch_size", type=int, default=64,
                   help="validation pairs per device per batch")
    p.add_argument("--log_every", type=int, default=50, help="steps between log.jsonl rows")
    p.add_argument("--stop_after_steps", type=int, default=None,
                   help="checkpoint and exit after this step (the schedule still runs to "
                        "--max_steps); run again without it to continue")
    p.add_argument("--no_resume", action="store_true",
                   help="stop with an error if --output_dir already has checkpoints")
    p.add_argument("--n_model_shards", type=int, default=1,
                   help="devices each model copy is split over")
    p.add_argument("--quiet", dest="verbose", action="store_false", help="no progress bar")
    add_multihost_arguments(p)
    return p.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    if argv is None:  # a process of its own, computing with JAX only: seconds less start-up
        keep_torch_out_of_transformers()
    from cappy.pretraining.train import pretrain

    pretrain(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
