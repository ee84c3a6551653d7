"""`cappy score|rerank|finetune` (or `python -m cappy ...`): Cappy on jsonl files, streamed.

    cappy score    --input pairs.jsonl --output scored.jsonl
    cappy rerank   --input candidates.jsonl --output best.jsonl
    cappy finetune --train_file labelled.jsonl --output_dir my-cappy

The experiments' commands are here too, with their entry scripts' flags: `cappy bigbench`
(cappy_bigbench.py), `cappy promptsource` (cappy_promptsource.py), `cappy pretrain`
(cappy_pretrain.py).

score:    rows {"instruction", "response"}      -> the row plus "score"
rerank:   rows {"instruction", "candidates": [...]} (from any generator) -> the row plus
          "best" (ties go to the earliest candidate), "scores" (input order) and, when
          the row has "references", "rougeL_best" and "rougeL_first"
finetune: rows {"instruction", "response", "label" in [0, 1]} -> a checkpoint folder that
          both backends load (Cappy.from_pretrained, cappy_bigbench.py)

A bad row stops the run with one line naming the file, line and field (exit 2)
and no output file; with --skip_bad_rows it is skipped and counted instead.
Output files are written atomically.
"""

import argparse
import os
import sys

from cappy.engine.errors import CappyError, exit_on_error, located
from cappy.engine.ranking import best_index
from cappy.engine.rows import check_candidates_row, check_labelled_row, check_pair_row
from cappy.engine.checkpoints import DTYPES, TRUNCATIONS, keep_torch_out_of_transformers

DEFAULT_MODEL = "btan2/cappy-large"


def _common(parser):
    parser.add_argument("--model_name_or_path", default=DEFAULT_MODEL,
                        help="the Cappy: a hub id or a folder (default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=None,
                        help="tokens per pair (default: 512, or what the model's position "
                             "table holds if fewer)")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="pairs per device per batch, counted at max_length tokens each "
                             "(pairs are packed into rows up to that many tokens; default: "
                             "32, finetune: 8)")
    parser.add_argument("--backend", default="flax", choices=["flax", "torch"],
                        help="flax: cappy's own JAX model; torch: transformers' PyTorch model "
                             "(default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="compute dtype; scores come out float32 (default: %(default)s)")
    parser.add_argument("--truncation", default=None, choices=TRUNCATIONS,
                        help="how pairs longer than max_length are cut (default: the policy "
                             "the checkpoint records, else longest_first, the original's)")
    parser.add_argument("--skip_bad_rows", action="store_true",
                        help="skip and count malformed rows instead of stopping")


def program_name():
    """`python -m cappy` when run so, else the installed command's name (`cappy`)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m cappy" if name in ("", "__main__.py", "-c") else name


# The experiments' commands, each the same as its entry script: name -> (module, help).
EXPERIMENTS = {
    "bigbench": ("cappy.bigbench.task", "one BIG-Bench task: finetune on its candidates, "
                                        "rerank, score (= cappy_bigbench.py)"),
    "promptsource": ("cappy.promptsource.evaluate", "zero-shot PromptSource evaluation, "
                                                    "Table 1 (= cappy_promptsource.py)"),
    "pretrain": ("cappy.pretraining.train", "pretrain on built shards (= cappy_pretrain.py)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score (instruction, response) rows")
    score.add_argument("--input", required=True, help='jsonl rows {"instruction", "response"}')
    score.add_argument("--output", required=True, help='jsonl: each row plus its "score"')
    rerank = commands.add_parser("rerank", help="pick the best of each row's candidates")
    rerank.add_argument("--input", required=True,
                        help='jsonl rows {"instruction", "candidates": [...]} (and optionally '
                             '"references")')
    rerank.add_argument("--output", required=True,
                        help='jsonl: each row plus "best" and "scores" (and ROUGE-L with '
                             'references)')
    finetune = commands.add_parser("finetune", help="finetune Cappy on labelled rows")
    finetune.add_argument("--train_file", required=True,
                          help='jsonl rows {"instruction", "response", "label" in [0, 1]}')
    finetune.add_argument("--validation_file", default=None,
                          help="rows as --train_file, scored after training (default: none)")
    finetune.add_argument("--output_dir", required=True, help="the finetuned Cappy's folder")
    finetune.add_argument("--overwrite", action="store_true",
                          help="replace --output_dir if it exists")
    finetune.add_argument("--n_epochs", type=int, default=1,
                          help="passes over the training rows (default: %(default)s)")
    finetune.add_argument("--accumulate_grad_batches", type=int, default=1,
                          help="batches per optimizer update (default: %(default)s)")
    finetune.add_argument("--learning_rate", type=float, default=2e-5,
                          help="peak rate (default: %(default)s)")
    finetune.add_argument("--warmup_rate", type=float, default=0.1,
                          help="share of the updates spent warming up (default: %(default)s)")
    finetune.add_argument("--weight_decay", type=float, default=0.0,
                          help="AdamW's weight decay (default: %(default)s)")
    finetune.add_argument("--seed", type=int, default=11111,
                          help="seed of the example order and dropout (default: %(default)s)")
    for sub in (score, rerank, finetune):
        _common(sub)
    finetune.set_defaults(batch_size=8)
    for name, (_, text) in EXPERIMENTS.items():  # parsed by their own modules (see main)
        commands.add_parser(name, help=text, add_help=False)
    return parser


def good_rows(path, check, skip_bad_rows, counter):
    """Yield valid rows of a jsonl file; stop at the first bad one unless skipping."""
    from cappy.engine.io import parse_jsonl_line

    if not os.path.isfile(path):
        raise CappyError(f"{path}: file not found")
    with open(path, encoding="utf-8") as file:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                row = parse_jsonl_line(path, line, text)
                problem = check(row)
                if problem is not None:
                    raise located(path, line, *problem)
            except CappyError:
                if not skip_bad_rows:
                    raise
                counter["bad"] += 1
                continue
            yield row


def _chunks(rows, size):
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_rows(path, check, skip_bad_rows):
    """The whole input read once before any model loads, so that a bad row stops the run
    at once (unless skipped); returns the number of good rows."""
    return sum(1 for _ in good_rows(path, check, skip_bad_rows, {"bad": 0}))


def check_output_folder(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CappyError(f"{path}: its folder {folder} does not exist")


# ---- commands -----------------------------------------------------------------------

def stream_rows(args, check, process_chunk, chunk_size, desc, total):
    """Read valid rows in chunks, write process_chunk(chunk)'s rows atomically; count them."""
    import json

    import tqdm

    from cappy.engine.io import atomic_open

    counter = {"bad": 0, "rows": 0}
    rows = good_rows(args.input, check, args.skip_bad_rows, counter)
    with atomic_open(args.output) as out, tqdm.tqdm(total=total, desc=desc, unit="row") as bar:
        for chunk in _chunks(rows, chunk_size):
            for result in process_chunk(chunk):
                out.write(json.dumps(result, ensure_ascii=False) + "\n")
            counter["rows"] += len(chunk)
            bar.update(len(chunk))
    return counter


def score_rows(cappy, rows, batch_size=None):
    """Each row plus its "score"."""
    scores = cappy.score([r["instruction"] for r in rows], [r["response"] for r in rows],
                         batch_size=batch_size)
    return [{**row, "score": float(score)} for row, score in zip(rows, scores)]


def rerank_rows(cappy, rows, batch_size=None):
    """Each row plus best, scores (and ROUGE-L of best and first with references)."""
    from cappy.engine.rouge import rouge_l

    instructions, responses = [], []
    for row in rows:
        instructions += [row["instruction"]] * len(row["candidates"])
        responses += row["candidates"]
    scores = cappy.score(instructions, responses, batch_size=batch_size)
    out, start = [], 0
    for row in rows:
        row_scores = [float(s) for s in scores[start:start + len(row["candidates"])]]
        start += len(row["candidates"])
        best = row["candidates"][best_index(row_scores)]
        result = {**row, "best": best, "scores": row_scores}
        if "references" in row:
            result["rougeL_best"] = rouge_l(best, row["references"])
            result["rougeL_first"] = rouge_l(row["candidates"][0], row["references"])
        out.append(result)
    return out


COMMANDS = {  # command -> (row check, chunk processor, rows per chunk, progress label)
    "score": (check_pair_row, score_rows, 2048, "scoring"),
    "rerank": (check_candidates_row, rerank_rows, 256, "reranking"),
}


def run_finetune(args):
    from cappy.engine.finetuning import finetune_on_rows

    counter = {"bad": 0}
    train = list(good_rows(args.train_file, check_labelled_row, args.skip_bad_rows, counter))
    if not train:
        raise CappyError(f"{args.train_file}: no usable training rows")
    validation = None
    if args.validation_file:
        validation = list(good_rows(args.validation_file, check_labelled_row,
                                    args.skip_bad_rows, counter))
    summary = finetune_on_rows(args, train, validation)
    summary["bad"] = counter["bad"]
    return summary


@exit_on_error
def main(argv=None):
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in EXPERIMENTS:  # an experiment's own flags and main
        import importlib

        module = importlib.import_module(EXPERIMENTS[words[0]][0])
        if argv is None:
            keep_torch_out_of_transformers()  # a process computing with JAX only
        return module.main(words[1:], prog=f"{program_name()} {words[0]}")
    args = build_parser().parse_args(argv)
    if argv is None and (args.command == "finetune" or args.backend == "flax"):
        keep_torch_out_of_transformers()  # a process computing with JAX only
    if args.command == "finetune":
        if args.backend != "flax":
            raise CappyError("cappy finetune trains with JAX only; --backend torch is for score "
                             "and rerank (the folder it saves loads in both backends)")
        summary = run_finetune(args)
        print(f"saved {args.output_dir}: {summary}")
    else:
        if os.path.abspath(args.input) == os.path.abspath(args.output):
            raise CappyError("--output must differ from --input")
        check, process, chunk_size, desc = COMMANDS[args.command]
        check_output_folder(args.output)
        total = check_rows(args.input, check, args.skip_bad_rows)  # before the model loads
        from cappy.api import Cappy

        cappy = Cappy.from_pretrained(args.model_name_or_path, backend=args.backend,
                                      dtype=args.dtype, max_length=args.max_length,
                                      batch_size=args.batch_size, truncation=args.truncation)
        counter = stream_rows(args, check, lambda chunk: process(cappy, chunk, args.batch_size),
                              chunk_size, desc, total)
        print(f"wrote {args.output}: {counter['rows']} rows"
              + (f", skipped {counter['bad']} bad rows" if counter["bad"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
