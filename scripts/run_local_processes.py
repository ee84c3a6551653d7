"""Run a cappy command as several JAX processes on this machine: the local check of a
multi-host run, on the CPU (one coordinator on a free loopback port, each process with
its own CPU devices and the host flags added to the command).

    python scripts/run_local_processes.py --n_processes 2 -- \\
        python -m cappy score --model_name_or_path MODEL --input pairs.jsonl --output out.jsonl

Each line the processes print is shown prefixed with its process index. Exits with the
first non-zero exit code, else 0.
"""

import argparse
import sys

from cappy.engine.errors import CappyError, exit_on_error
from cappy.engine.hosts import run_local_processes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n_processes", type=int, default=2, help="processes to start")
    parser.add_argument("--devices_per_process", type=int, default=1,
                        help="CPU devices of each process")
    parser.add_argument("--host_timeout", type=int, default=60,
                        help="--host_timeout given to each process (seconds)")
    parser.add_argument("--quiet", action="store_true",
                        help="show only process 0's output (the others' is dropped)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command, after --, without the host flags")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CappyError("give the command to run after --")
    for flag in ("n_processes", "devices_per_process", "host_timeout"):
        if getattr(args, flag) < 1:
            raise CappyError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    codes = run_local_processes(command, args.n_processes, args.devices_per_process,
                                args.host_timeout, shown=[0] if args.quiet else None)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
