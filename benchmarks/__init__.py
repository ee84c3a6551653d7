"""Developer tooling, not part of the cappy package: the speed benchmark behind scripts/benchmark.py and scripts/benchmark_processes.py, and the figures it wrote."""
