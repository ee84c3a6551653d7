"""`cappy score|rerank|finetune` (or `python -m cappy ...`): Cappy on jsonl files, streamed.

    cappy score    --input pairs.jsonl --output scored.jsonl
    cappy rerank   --input candidates.jsonl --output best.jsonl
    cappy finetune --train_file labelled.jsonl --output_dir my-cappy

The experiments' commands are here too, with their entry scripts' flags: `cappy bigbench`
(cappy_bigbench.py), `cappy promptsource` (cappy_promptsource.py), `cappy pretrain`
(cappy_pretrain.py), and every step around them (`cappy generate`, `cappy bigbench-data`,
`cappy bigbench-tasks`, `cappy baselines`, `cappy tables`, `cappy promptsource-data`,
`cappy pretraining-data`, `cappy tiny-models`, `cappy demo`, `cappy processes`: each the
same as its script in scripts/); and `cappy serve`, Cappy as a reranking service
(`cappy.serve.command`).

score:    rows {"instruction", "response"}      -> the row plus "score"
rerank:   rows {"instruction", "candidates": [...]} (from any generator) -> the row plus
          "best" (ties go to the earliest candidate), "scores" (input order) and, when
          the row has "references", "rougeL_best" and "rougeL_first" (fractions in [0, 1],
          as in every results file; tables print ROUGE-L x100)
finetune: rows {"instruction", "response", "label" in [0, 1]} -> a checkpoint folder that
          both backends load (Cappy.from_pretrained, cappy_bigbench.py)

A bad row stops the run with one line naming the file, line and field (exit 2)
and no output file; with --skip_bad_rows it is skipped and counted instead.
Output files are written atomically.
"""

import argparse
import contextlib
import dataclasses
import os
import sys

from cappy.engine.config import (
    MIN_MAX_LENGTH,
    REQUIRED,
    add_fields,
    check_config,
    setting,
)
from cappy.engine.errors import CappyError, device_memory_guard, located
from cappy.engine.io import check_output_file
from cappy.engine.ranking import best_index
from cappy.engine.recipes import LR_SCHEDULES
from cappy.engine.rows import check_candidates_row, check_labelled_row, check_pair_row
from cappy.engine.runtime.hosts import HostSettings
from cappy.engine.runtime.leader import progress_bar, writes_outputs
from cappy.engine.runtime.process import exit_on_error
from cappy.engine.runtime.transformers_setup import keep_torch_out_of_transformers
from cappy.engine.weights.cappy_checkpoint import DTYPES, TRUNCATIONS, check_output_dir

DEFAULT_MODEL = "btan2/cappy-large"


@dataclasses.dataclass(kw_only=True)
class CappySettings(HostSettings):
    """The flags every file command shares: which Cappy, and how it scores (and, for a run
    of several processes, the host flags: every process computes, process 0 writes)."""
    model_name_or_path: str = setting(DEFAULT_MODEL, "the Cappy: a hub id or a folder")
    max_length: int | None = setting(None, "tokens per pair (default: 512, or what the model's "
                                           "position table holds if fewer)", type=int,
                                  at_least=MIN_MAX_LENGTH)
    batch_size: int = setting(32, "pairs per device per batch, counted at max_length tokens "
                                  "each (pairs are packed into rows up to that many tokens)",
                              at_least=1)
    backend: str = setting("flax", "flax: cappy's own JAX model; torch: transformers' PyTorch "
                                   "model", choices=["flax", "torch"])
    dtype: str = setting("float32", "compute dtype; scores come out float32", choices=DTYPES)
    truncation: str | None = setting(
        None, "how pairs longer than max_length are cut (default: the policy the checkpoint "
              "records, else longest_first, the original's)", choices=TRUNCATIONS, type=str)
    n_model_shards: int = setting(1, "devices each model copy is split over (--backend flax)",
                                  at_least=1)
    skip_bad_rows: bool = setting(False, "skip and count malformed rows instead of stopping")
    verbose: bool = setting(True, "no progress bars or Redco logs", flag="--quiet")


@dataclasses.dataclass(kw_only=True)
class ScoreConfig(CappySettings):
    """`cappy score`."""
    input: str = setting(REQUIRED, 'jsonl rows {"instruction", "response"}')
    output: str = setting(REQUIRED, 'jsonl: each row plus its "score"')


@dataclasses.dataclass(kw_only=True)
class FinetuneConfig(CappySettings):
    """`cappy finetune`: the trainer of cappy_bigbench.py; its schedule counted in optimizer
    updates unless --lr_schedule paper."""
    train_file: str = setting(REQUIRED, 'jsonl rows {"instruction", "response", "label" in '
                                        '[0, 1]}')
    validation_file: str | None = setting(None, "rows as --train_file, scored after training "
                                                "(default: none)", type=str)
    output_dir: str = setting(REQUIRED, "the finetuned Cappy's folder")
    overwrite: bool = setting(False, "replace --output_dir if it exists")
    n_epochs: int = setting(1, "passes over the training rows", at_least=1)
    accumulate_grad_batches: int = setting(1, "batches per optimizer update", at_least=1)
    learning_rate: float = setting(2e-5, "peak rate", at_least=0)
    warmup_rate: float = setting(0.1, "share of the updates spent warming up", at_least=0,
                                 at_most=1)
    weight_decay: float = setting(0.0, "AdamW's weight decay", at_least=0)
    lr_schedule: str = setting(
        "corrected", "corrected: warm-up and linear decay counted in optimizer updates; "
                     "paper: the published runs' schedule, sized in micro-batches, which with "
                     "accumulation never decays (cappy_bigbench.py's default, to reproduce "
                     "Table 2)", choices=list(LR_SCHEDULES))
    seed: int = setting(11111, "seed of the example order and dropout")
    batch_size: int = setting(8, "examples per device per batch, counted at max_length tokens "
                                 "each (packed into rows up to that many tokens)", at_least=1)


@dataclasses.dataclass(kw_only=True)
class RerankConfig(CappySettings):
    """`cappy rerank`."""
    input: str = setting(REQUIRED, 'jsonl rows {"instruction", "candidates": [...]} (and '
                                   'optionally "references")')
    output: str = setting(REQUIRED, 'jsonl: each row plus "best" and "scores" (and ROUGE-L '
                                    'with references)')


def program_name():
    """`python -m cappy` when run so, else the installed command's name (`cappy`)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m cappy" if name in ("", "__main__.py", "-c") else name


# The commands on files: name -> (configuration, help).
FILE_COMMANDS = {
    "score": (ScoreConfig, "score (instruction, response) rows"),
    "rerank": (RerankConfig, "pick the best of each row's candidates"),
    "finetune": (FinetuneConfig, "finetune Cappy on labelled rows"),
}
# The commands whose modules parse their own flags: the experiments' (each the same as its
# entry script) and the server. name -> (module, help).
MODULE_COMMANDS = {
    "serve": ("cappy.serve.command", "Cappy as a reranking service: text-embeddings-"
                                     "inference's and Cohere's rerank APIs over HTTP"),
    "bigbench": ("cappy.bigbench.task", "one BIG-Bench task: finetune on its candidates, "
                                        "rerank, score (= cappy_bigbench.py)"),
    "promptsource": ("cappy.promptsource.evaluate", "zero-shot PromptSource evaluation, "
                                                    "Table 1 (= cappy_promptsource.py)"),
    "pretrain": ("cappy.pretraining.train", "pretrain on built shards (= cappy_pretrain.py)"),
    "generate": ("cappy.bigbench.generate", "a generator's candidates for BIG-Bench tasks "
                                            "(= scripts/bigbench_flan_generate.py)"),
    "bigbench-tasks": ("cappy.bigbench.runner", "cappy bigbench for every task and generator, "
                                                "resumably (= scripts/run_cappy_bigbench.py)"),
    "bigbench-data": ("cappy.bigbench.build", "the 45 BIG-Bench tasks as jsonl "
                                              "(= scripts/get_bigbench_data.py)"),
    "baselines": ("cappy.bigbench.baselines", "the BIG-Bench table's baseline rows "
                                              "(= scripts/present_bigbench_baselines.py)"),
    "tables": ("cappy.bigbench.present", "Cappy's BIG-Bench results beside the paper's "
                                         "(= scripts/present_cappy_bigbench_results.py)"),
    "promptsource-data": ("cappy.promptsource.build", "Table 1's test file from PromptSource "
                                                      "templates "
                                                      "(= scripts/build_promptsource_test_data.py)"),
    "pretraining-data": ("cappy.pretraining.build", "pretraining shards from T0's mixture "
                                                    "(= scripts/build_pretraining_data.py)"),
    "tiny-models": ("cappy.engine.weights.tiny_models", "tiny random models for offline runs "
                                                "(= scripts/make_tiny_models.py)"),
    "demo": ("cappy.bigbench.demo", "the offline demo on tiny models "
                                    "(= scripts/demo_offline.py)"),
    "processes": ("cappy.engine.runtime.local_processes", "a command as several local JAX processes "
                                        "(= scripts/run_local_processes.py)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (config_class, text) in FILE_COMMANDS.items():
        add_fields(commands.add_parser(
            name, help=text, description=config_class.__doc__,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter), config_class)
    for name, (_, text) in MODULE_COMMANDS.items():  # parsed by their own modules (main)
        commands.add_parser(name, help=text, add_help=False)
    return parser


def good_rows(path, check, skip_bad_rows, counter):
    """Yield valid rows of a jsonl file; stop at the first bad one unless skipping."""
    from cappy.engine.io import jsonl_lines, parse_jsonl_line

    def count_bad(_):
        counter["bad"] += 1

    for line, text in jsonl_lines(path, count_bad if skip_bad_rows else None):
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


# ---- commands -----------------------------------------------------------------------

def stream_rows(config, check, process_chunk, chunk_size, desc, total):
    """Read valid rows in chunks, write process_chunk(chunk)'s rows atomically; count them."""
    import json

    from cappy.engine.io import atomic_open, run_lock

    counter = {"bad": 0, "rows": 0, "written": writes_outputs()}
    rows = good_rows(config.input, check, config.skip_bad_rows, counter)
    leader = counter["written"]  # every process computes every chunk; process 0 writes
    with (run_lock(config.output, f"--output {config.output}") if leader
          else contextlib.nullcontext()), \
            (atomic_open(config.output) if leader else open(os.devnull, "w")) as out, \
            progress_bar(total=total, desc=desc, unit="row", shown=config.verbose) as bar:
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


def run_finetune(config):
    from cappy.engine.jobs.finetuning import finetune_on_rows

    check_output_dir(config.output_dir, config.overwrite)  # before reading rows or a model

    counter = {"bad": 0}
    train = list(good_rows(config.train_file, check_labelled_row, config.skip_bad_rows, counter))
    if not train:
        raise CappyError(f"{config.train_file}: no usable training rows")
    validation = None
    if config.validation_file:
        validation = list(good_rows(config.validation_file, check_labelled_row,
                                    config.skip_bad_rows, counter))
        if not validation:
            raise CappyError(f"{config.validation_file}: no usable validation rows")
    summary = finetune_on_rows(config, train, validation)
    summary["bad"] = counter["bad"]
    return summary


@exit_on_error
def main(argv=None):
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in MODULE_COMMANDS:  # the command's own flags and main
        import importlib

        module = importlib.import_module(MODULE_COMMANDS[words[0]][0])
        return module.main(words[1:], prog=f"{program_name()} {words[0]}",
                           own_process=argv is None)
    namespace = build_parser().parse_args(argv)
    config_class = FILE_COMMANDS[namespace.command][0]
    config = config_class(**{field.name: getattr(namespace, field.name)
                           for field in dataclasses.fields(config_class)})
    command = namespace.command
    check_config(config)
    if argv is None and (command == "finetune" or config.backend == "flax"):
        from cappy.engine.runtime.compilation_cache import enable_compilation_cache

        keep_torch_out_of_transformers()  # a process computing with JAX only
        enable_compilation_cache()
    if command == "finetune":
        if config.backend != "flax":
            raise CappyError("cappy finetune trains with JAX only; --backend torch is for score "
                             "and rerank (the folder it saves loads in both backends)")
        with device_memory_guard(
                f"lower --batch_size ({config.batch_size}; raise --accumulate_grad_batches as "
                f"much to keep each update's examples) or --max_length, or split the model "
                f"over more devices with --n_model_shards", lambda: "nothing was saved"):
            summary = run_finetune(config)
        if writes_outputs():
            print(f"saved {config.output_dir}: {summary}")
    else:
        check, process, chunk_size, desc = COMMANDS[command]
        check_output_file(config.output, "--output", inputs=[config.input])
        total = check_rows(config.input, check, config.skip_bad_rows)  # before the model loads
        if not total:  # one rule for an empty input, as finetune and PromptSource: refuse
            raise CappyError(f"{config.input}: no rows to {command}"
                             + (" (every row was bad and skipped)" if config.skip_bad_rows
                                else ""))
        from cappy.api import Cappy

        with device_memory_guard(
                f"lower --batch_size ({config.batch_size}) or --max_length"
                + (", or split the model over more devices with --n_model_shards"
                   if config.backend == "flax" else ""),  # torch: one device, no shards
                lambda: f"--output {config.output} was left as it was"):
            # joins the processes of a multi-host run before the model loads
            cappy = Cappy.from_pretrained(
                config.model_name_or_path, backend=config.backend, dtype=config.dtype,
                max_length=config.max_length, batch_size=config.batch_size,
                truncation=config.truncation, n_model_shards=config.n_model_shards,
                hosts=config)
            counter = stream_rows(config, check,
                                  lambda chunk: process(cappy, chunk, config.batch_size),
                                  chunk_size, desc, total)
        if counter["written"]:
            print(f"wrote {config.output}: {counter['rows']} rows"
                  + (f", skipped {counter['bad']} bad rows" if counter["bad"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
