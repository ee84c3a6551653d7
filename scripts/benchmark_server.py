"""A reranking server under load, as its clients see it: `cappy serve` against offline
scoring of the same pairs and against infinity-emb, a PyTorch reranking server.

    python scripts/benchmark_server.py                           # the 4-layer random Cappy
    python scripts/benchmark_server.py --levels 1,8,64 --requests 600 --output_file server.json

Builds once, in --work_dir, a random RoBERTa Cappy of the benchmark's shape (saved as the
project saves checkpoints: safetensors in PyTorch names, which infinity loads too) and
requests of 1 to 32 texts drawn from PromptSource-like pairs (benchmarks/harness.py:
instructions of 16-550 tokens, short answers). Then, one path after another:

- `cappy_serve`: `cappy serve` as a process; at each concurrency level, that many clients
  (asyncio + aiohttp, one connection each) send the level's requests to POST /rerank, each
  the next as soon as its answer came;
- `offline`: `Cappy.score` in this process on each level's pairs at once (compiled first):
  the throughput a batch job gets from the same model;
- `infinity`: infinity-emb (torch, CPU) serving the same folder, in a venv of
  scripts/baselines/requirements-infinity.txt (--infinity_python), loaded the same way at
  its POST /rerank.

Prints pairs/s, requests/s and p50 / p99 latency per level, each server's figures against
offline's and infinity's, and, at concurrency 1, the latency of an 8-text request against
`Cappy.score` of the same call in this process.
"""

import argparse
import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cappy.engine.errors import CappyError
from cappy.engine.runtime.process import exit_on_error  # noqa: E402

PATHS = ("cappy_serve", "offline", "infinity")


def parse_args(argv=None):
    from benchmarks.harness import MODEL_SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_size", default="tiny", choices=list(MODEL_SHAPES),
                   help="the random Cappy's shape")
    p.add_argument("--levels", default="1,8,64", help="concurrency levels, comma-separated")
    p.add_argument("--requests", type=int, default=600,
                   help="requests per level (at concurrency 1: a quarter of them)")
    p.add_argument("--max_texts", type=int, default=32, help="texts per request: 1 to this")
    p.add_argument("--paths", default=",".join(PATHS), help="which of " + ", ".join(PATHS))
    p.add_argument("--serve_flags", default="",
                   help="more flags for cappy serve, as one string (e.g. '--max_batch_tokens "
                        "32768')")
    p.add_argument("--infinity_python", default=os.path.join(ROOT, ".venv-infinity", "bin",
                                                             "python"),
                   help="the interpreter of infinity-emb's venv")
    p.add_argument("--work_dir", default=os.path.join("cache", "benchmark_server"),
                   help="where the model, the compilation cache and the figures go")
    p.add_argument("--output_file", default=None, help="also write the figures as JSON")
    return p.parse_args(argv)


def prepare(work_dir, model_size):
    """(model folder, [(query, [texts])] pool of prompts)."""
    from benchmarks import harness
    from cappy.engine.weights.cappy_checkpoint import save_cappy
    from cappy.engine.weights.tiny_models import make_scorer_tokenizer, sample_texts

    tokenizer = make_scorer_tokenizer(sample_texts())
    model_dir = os.path.join(work_dir, f"cappy-{model_size}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        model = harness.make_model(model_size, tokenizer)
        save_cappy(model, tokenizer, model.params, model_dir, overwrite=True)
    pairs = harness.promptsource_like_pairs(tokenizer)
    queries = list(dict.fromkeys(query for query, _ in pairs))
    answers = list(dict.fromkeys(answer for _, answer in pairs))
    return model_dir, queries, answers


def make_requests(queries, answers, n, max_texts, seed):
    rng = np.random.default_rng(seed)
    return [(queries[rng.integers(len(queries))],
             [answers[j] for j in rng.integers(0, len(answers), rng.integers(1, max_texts + 1))])
            for _ in range(n)]


def free_port():
    from cappy.engine.runtime.local_processes import free_port as port

    return port()


def wait_ready(url, process, timeout=600):
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CappyError(f"the server exited ({process.returncode}) before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise CappyError(f"{url} was not ready within {timeout} s")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def start_server(path, model_dir, args, port):
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "CAPPY_CACHE_DIR": os.path.join(args.work_dir, "compilation_cache")}
    if path == "cappy_serve":
        command = [sys.executable, "-m", "cappy", "serve", "--model_name_or_path", model_dir,
                   "--port", str(port), "--max_client_batch_size", str(args.max_texts),
                   "--quiet", *shlex.split(args.serve_flags)]
    else:
        if not os.path.exists(args.infinity_python):
            raise CappyError(f"no infinity-emb interpreter at {args.infinity_python}: "
                             f"python3 -m venv .venv-infinity && .venv-infinity/bin/pip install "
                             f"-r scripts/baselines/requirements-infinity.txt (or leave it out "
                             f"with --paths)")
        command = [args.infinity_python, "-m", "infinity_emb.cli", "v2", "--model-id",
                   model_dir, "--engine", "torch", "--device", "cpu", "--port", str(port),
                   "--no-bettertransformer", "--batch-size", "32"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return command, process


def body_of(path, query, texts):
    if path == "infinity":
        return {"query": query, "documents": texts, "raw_scores": True}
    return {"query": query, "texts": texts, "raw_scores": True}


async def run_level(url, path, requests, concurrency):
    """(wall seconds, each request's latency) of `concurrency` clients sending `requests`
    (aiohttp: of the Python clients, the one that leaves the server the most of the CPU)."""
    import aiohttp

    latencies = [None] * len(requests)
    queue = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)

    async def client(session):
        while not queue.empty():
            index, (query, texts) = queue.get_nowait()
            start = time.perf_counter()
            async with session.post(f"{url}/rerank", json=body_of(path, query, texts)) as answer:
                text = await answer.text()
                if answer.status != 200:
                    raise CappyError(f"{path}: {answer.status} {text[:200]}")
            latencies[index] = time.perf_counter() - start

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        start = time.perf_counter()
        await asyncio.gather(*[client(session) for _ in range(concurrency)])
        return time.perf_counter() - start, latencies


def figures(requests, wall, latencies):
    pairs = sum(len(texts) for _, texts in requests)
    return {"requests": len(requests), "pairs": pairs, "seconds": wall,
            "pairs_per_second": pairs / wall, "requests_per_second": len(requests) / wall,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def measure_server(path, model_dir, args, plan, single):
    port = free_port()
    command, process = start_server(path, model_dir, args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        asyncio.run(run_level(url, path, plan[min(plan)][:8], 1))  # the first calls
        results = {"command": shlex.join(command), "levels": {}}
        for level, requests in plan.items():
            wall, latencies = asyncio.run(run_level(url, path, requests, level))
            results["levels"][level] = figures(requests, wall, latencies)
            print(f"  {path} at concurrency {level}: "
                  f"{results['levels'][level]['pairs_per_second']:.0f} pairs/s", file=sys.stderr)
        wall, latencies = asyncio.run(run_level(url, path, single, 1))
        results["eight_texts_p50_ms"] = 1000 * float(np.median(latencies))
        return results
    finally:
        stop(process)


def measure_offline(model_dir, plan, single):
    from cappy import Cappy

    cappy = Cappy.from_pretrained(model_dir)
    results = {"levels": {}}
    for level, requests in plan.items():
        queries = [query for query, texts in requests for _ in texts]
        texts = [text for _, chosen in requests for text in chosen]
        cappy.score(queries, texts)  # compiles what it meets
        start = time.perf_counter()
        cappy.score(queries, texts)
        wall = time.perf_counter() - start
        results["levels"][level] = {"pairs": len(texts), "seconds": wall,
                                    "pairs_per_second": len(texts) / wall}
    times = []
    for query, texts in single:
        start = time.perf_counter()
        cappy.score([query] * len(texts), texts)
        times.append(time.perf_counter() - start)
    results["eight_texts_p50_ms"] = 1000 * float(np.median(times))
    return results


@exit_on_error
def main(argv=None):
    from cappy.engine.flags import comma_list

    args = parse_args(argv)
    paths = comma_list(args.paths, "--paths")
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise CappyError(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    levels = [int(level) for level in comma_list(args.levels, "--levels")]
    command = "python " + shlex.join(sys.argv)
    print(f"command: {command}", flush=True)
    model_dir, queries, answers = prepare(args.work_dir, args.model_size)
    plan = {level: make_requests(queries, answers,
                                 args.requests // 4 if level == 1 else args.requests,
                                 args.max_texts, seed=level) for level in levels}
    single = make_requests(queries, answers, 40, 8, seed=99)
    single = [(query, (texts * 8)[:8]) for query, texts in single]  # exactly 8 texts each
    report = {"command": command, "model_size": args.model_size, "levels": levels,
              "paths": {}}
    for path in paths:
        print(f"{path} ...", file=sys.stderr, flush=True)
        report["paths"][path] = (measure_offline(model_dir, plan, single) if path == "offline"
                                 else measure_server(path, model_dir, args, plan, single))
    print_report(report)
    if args.output_file:
        from cappy.engine.io import write_json

        write_json(args.output_file, report)
    return 0


def print_report(report):
    paths = report["paths"]
    print("\n| path | concurrency | pairs/s | requests/s | p50 ms | p99 ms |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, result in paths.items():
        for level, f in result["levels"].items():
            print(f"| {name} | {level} | {f['pairs_per_second']:.0f} | "
                  f"{f.get('requests_per_second', float('nan')):.1f} | "
                  f"{f.get('p50_ms', float('nan')):.1f} | {f.get('p99_ms', float('nan')):.1f} |")
    serve = paths.get("cappy_serve")
    if serve is None:
        return
    for level, f in serve["levels"].items():
        for baseline in ("offline", "infinity"):
            if baseline in paths:
                other = paths[baseline]["levels"][level]
                line = (f"concurrency {level}: cappy serve {f['pairs_per_second'] / other['pairs_per_second']:.2f}x "
                        f"{baseline}'s pairs/s")
                if "p99_ms" in other:
                    line += f", p99 {f['p99_ms']:.0f} ms against {other['p99_ms']:.0f} ms"
                print(line)
    if "offline" in paths:
        print(f"an 8-text request at concurrency 1: {serve['eight_texts_p50_ms']:.1f} ms "
              f"(p50) against {paths['offline']['eight_texts_p50_ms']:.1f} ms for "
              f"Cappy.score of the same call in one process "
              f"({serve['eight_texts_p50_ms'] / paths['offline']['eight_texts_p50_ms']:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
