"""`cappy bigbench-data` (= scripts/get_bigbench_data.py): build the 45 BIG-Bench generative
tasks as jsonl (docs/DESIGN.md section 3).

    cappy bigbench-data                  # from the Hugging Face hub
    cappy bigbench-data --source pypi    # offline, from the bigbench==1.0.0 sdist

See `cappy.bigbench.data` for the split rule and the output format.
"""

import dataclasses

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command

COMMAND_DOC = __doc__


@dataclasses.dataclass(kw_only=True)
class BigbenchDataConfig:
    """The task data builder's flags."""
    source: str = setting("hub", "tasksource/bigbench on the hub, or the bigbench==1.0.0 sdist "
                          "from PyPI (no tellmewhy)", choices=["hub", "pypi"])
    output_dir: str = setting("bigbench_data", "where the task files are written")
    tasks: str | None = setting(None, "comma-separated subset of the 45 task names (default: "
                                "all)", type=str)
    bigbench_sdist: str | None = setting(None, "a local bigbench-1.0.0.tar.gz (pypi source; "
                                         "default: download it into --cache_dir once)",
                                         type=str)
    cache_dir: str = setting("~/.cache/cappy", "where the downloaded BIG-Bench source is kept")
    max_train_rows: int | None = setting(None, "keep only the first N train rows per task (for "
                                         "small samples)", type=int, at_least=0)
    max_validation_rows: int | None = setting(None, "keep only the first N validation rows per "
                                              "task", type=int, at_least=0)
    verbose: bool = setting(True, "no progress bars (pip's download bar included) and no size "
                            "table", flag="--quiet")


def run(config):
    from cappy.bigbench.data import build

    sizes = build(config.source, config.output_dir, tasks_arg=config.tasks,
                  bigbench_sdist=config.bigbench_sdist, cache_dir=config.cache_dir,
                  max_train_rows=config.max_train_rows,
                  max_validation_rows=config.max_validation_rows, progress=config.verbose)
    if config.verbose:
        width = max(len(task) for task, _, _ in sizes)
        print(f"{'task':<{width}}  {'train':>6}  {'validation':>10}")
        for task, n_train, n_validation in sizes:
            print(f"{task:<{width}}  {n_train:>6}  {n_validation:>10}")
    print(f"wrote {len(sizes)} tasks to {config.output_dir}")


parse_args, main = job_command(BigbenchDataConfig, COMMAND_DOC, run, computes=False)
