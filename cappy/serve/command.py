"""`cappy serve`: Cappy behind text-embeddings-inference's and Cohere's rerank APIs.

    cappy serve --model_name_or_path btan2/cappy-large --port 8080 [--host 127.0.0.1]

The server listens at once and answers 503 on /health while the model loads and every
compiled shape is built (the persistent compilation cache makes a second start quicker),
then prints one line with its address and answers 200. Pairs of all waiting requests are
scored together (`cappy.serve.batcher`), up to --max_batch_tokens tokens per batch.
SIGTERM or Ctrl-C: /health says 503, the listening socket closes, requests in flight are
answered (at most --shutdown_timeout seconds), one line, exit 0.
"""

import asyncio
import concurrent.futures
import dataclasses
import sys
import threading
import time

from cappy.engine.config import MIN_MAX_LENGTH, setting
from cappy.engine.errors import CappyError, device_memory_line, device_memory_reason
from cappy.engine.runtime.process import job_command
from cappy.engine.runtime.hosts import HostSettings
from cappy.engine.weights.cappy_checkpoint import DTYPES, TRUNCATIONS

GROUP = "serving"


@dataclasses.dataclass(kw_only=True)
class ServeConfig(HostSettings):
    """`cappy serve`: its flags (the scoring flags are cappy score's)."""
    model_name_or_path: str = setting("btan2/cappy-large", "the Cappy: a hub id or a folder")
    max_length: int | None = setting(None, "tokens per pair (default: 512, or what the model's "
                                           "position table holds if fewer)", type=int,
                                     at_least=MIN_MAX_LENGTH)
    batch_size: int = setting(32, "pairs per device per compiled batch, counted at max_length "
                                  "tokens each (pairs are packed into rows)", at_least=1)
    dtype: str = setting("float32", "compute dtype; scores come out float32", choices=DTYPES)
    truncation: str | None = setting(
        None, "how pairs longer than max_length are cut (default: the policy the checkpoint "
              "records, else longest_first, the original's)", choices=TRUNCATIONS, type=str)
    n_model_shards: int = setting(1, "devices each model copy is split over", at_least=1)
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0: every interface)",
                        group=GROUP)
    port: int = setting(8080, "port to listen on", group=GROUP, at_least=1, at_most=65535)
    # Twice TEI's default: the pairs of one round are packed into rows together, and a
    # larger pool leaves less padding (at 64 concurrent clients here, 10% more pairs/s on
    # average than 16,384, 4 to 21% run by run: benchmarks/server_batch_tokens.json).
    max_batch_tokens: int = setting(32768, "tokens of the waiting requests scored together in "
                                           "one round (a larger request is scored alone)",
                                    group=GROUP, at_least=1)
    max_concurrent_requests: int = setting(512, "requests in flight at once; more get 429",
                                           group=GROUP, at_least=1)
    max_client_batch_size: int = setting(128, "texts (documents, pairs) one request may hold",
                                         group=GROUP, at_least=1)
    payload_limit: int = setting(2_000_000, "bytes a request body may hold; more get 413",
                                 group=GROUP, at_least=1)
    api_key: str | None = setting(None, "require `Authorization: Bearer KEY` (all but /health "
                                        "and /metrics)", type=str, group=GROUP)
    auto_truncate: bool = setting(True, "refuse (422) pairs longer than max_length unless a "
                                        "request says truncate: true, instead of cutting them",
                                  flag="--no_auto_truncate", group=GROUP)
    tokenization_workers: int = setting(2, "threads that tokenize requests", group=GROUP,
                                        at_least=1)
    shutdown_timeout: int = setting(30, "seconds a stopping server gives requests in flight",
                                    group=GROUP, at_least=0)
    log_requests: bool = setting(False, "one log line per request", group=GROUP)
    verbose: bool = setting(True, "no start-up line", flag="--quiet")


class Metrics:
    """The Prometheus metrics, under text-embeddings-inference's names."""

    def __init__(self, queue_size):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        seconds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        counts = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
        self.count = Counter("te_request_count", "requests received", ["method"],
                             registry=registry)
        self.succeeded = Counter("te_request_success", "requests answered", ["method"],
                                 registry=registry)
        self.failed = Counter("te_request_failure", "requests refused or failed", ["err"],
                              registry=registry)
        self.duration = Histogram("te_request_duration", "request seconds", buckets=seconds,
                                  registry=registry)
        self.tokenization = Histogram("te_request_tokenization_duration",
                                      "tokenization seconds per request", buckets=seconds,
                                      registry=registry)
        self.queue = Histogram("te_request_queue_duration", "seconds queued per request",
                               buckets=seconds, registry=registry)
        self.inference = Histogram("te_request_inference_duration",
                                   "seconds of the batch a request was scored in",
                                   buckets=seconds, registry=registry)
        self.input_length = Histogram("te_request_input_length", "tokens per pair",
                                      buckets=counts, registry=registry)
        self.batch_size = Histogram("te_batch_next_size", "pairs per batch (repeats included)",
                                    buckets=counts, registry=registry)
        self.batch_tokens = Histogram("te_batch_next_tokens", "tokens of a batch's distinct "
                                      "pairs", buckets=counts + (8192, 16384, 32768),
                                      registry=registry)
        self.batch_seconds = Histogram("te_batch_inference_duration", "seconds of a batch's "
                                       "scoring", buckets=seconds, registry=registry)
        gauge = Gauge("te_queue_size", "requests waiting for a batch", registry=registry)
        gauge.set_function(queue_size)

    def request(self, method):
        self.count.labels(method).inc()

    def success(self, method, seconds, timing):
        self.succeeded.labels(method).inc()
        self.duration.observe(seconds)
        self.tokenization.observe(timing["tokenization"])
        self.queue.observe(timing["queue"])
        self.inference.observe(timing["inference"])

    def failure(self, kind):
        self.failed.labels(kind).inc()

    def batch(self, pairs, distinct, tokens, seconds):
        self.batch_size.observe(pairs)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ServerState:
    """What the routes read: the limits, the readiness, the Cappy and its batcher once
    loaded, and the scoring of one request's pairs."""

    def __init__(self, config):
        from cappy import __version__

        self.config, self.version = config, __version__
        self.status = "loading"
        self.api_key = config.api_key
        self.expected_authorization = f"Bearer {config.api_key}".encode()
        self.payload_limit = config.payload_limit
        self.max_concurrent_requests = config.max_concurrent_requests
        self.max_client_batch_size = config.max_client_batch_size
        self.log_requests = config.log_requests
        self.in_flight = 0
        self.cappy = self.batcher = self.tokenizers = None
        self.label = "LABEL_0"
        self.metrics = Metrics(lambda: self.batcher.waiting() if self.batcher else 0)
        self.tokenize_pool = concurrent.futures.ThreadPoolExecutor(
            config.tokenization_workers, thread_name_prefix="cappy-tokenize")
        self.failure = None

    # -- loading

    def load(self, say):
        """Load the Cappy, start the batcher, compile every batch shape; then ready."""
        from cappy.engine.jobs.session import Cappy
        from cappy.serve.batcher import Batcher, Tokenizers

        config = self.config
        cappy = Cappy.from_pretrained(config.model_name_or_path, dtype=config.dtype,
                                      max_length=config.max_length,
                                      batch_size=config.batch_size,
                                      truncation=config.truncation,
                                      n_model_shards=config.n_model_shards, hosts=config)
        self.label = (getattr(cappy.model.config, "id2label", None) or {}).get(0, "LABEL_0")
        self.tokenizers = Tokenizers(cappy.tokenizer, cappy.max_length, cappy.truncation)
        self.batcher = Batcher(cappy._scorer, cappy.params, config.max_batch_tokens,
                               self.metrics.batch)
        self.cappy = cappy
        self.status = "warming up"
        warm_up(cappy, self.batcher)
        self.status = "ready"

    def info(self):
        config, cappy = self.config, self.cappy
        return {"model_id": config.model_name_or_path, "model_sha": None,
                "model_dtype": config.dtype,
                "model_type": {"reranker": {"id2label": {"0": self.label},
                                            "label2id": {self.label: 0}}},
                "max_concurrent_requests": config.max_concurrent_requests,
                "max_input_length": cappy.max_length if cappy else config.max_length,
                "max_batch_tokens": config.max_batch_tokens, "max_batch_requests": None,
                "max_client_batch_size": config.max_client_batch_size,
                "auto_truncate": config.auto_truncate,
                "truncation": cappy.truncation if cappy else config.truncation,
                "tokenization_workers": config.tokenization_workers,
                "payload_limit": config.payload_limit, "status": self.status,
                "version": self.version, "sha": None, "docker_label": None}

    # -- scoring one request

    async def score(self, instructions, responses, truncate, side):
        """(float32 scores of the pairs, timings): tokenized in the pool, scored by the
        batcher with every other request waiting."""
        from cappy.serve.app import ApiError
        from cappy.serve.batcher import BatcherClosed

        if self.status != "ready":
            raise ApiError(503, f"the server is {self.status}", "Unhealthy", "unhealthy")
        truncate = self.config.auto_truncate if truncate is None else truncate
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            examples = await loop.run_in_executor(self.tokenize_pool, self.tokenizers.encode,
                                                  instructions, responses, truncate, side)
        except Exception as error:  # a text the tokenizer cannot take
            raise ApiError(422, f"tokenizer: {error}", "Tokenizer", "tokenization") from None
        tokenized = time.perf_counter()
        lengths = [len(example["input_ids"]) for example in examples]
        longest = max(lengths)
        if longest > self.cappy.max_length:
            index = lengths.index(longest)
            raise ApiError(422, f"Input validation error: pair {index} has {longest} tokens; "
                                f"the model holds {self.cappy.max_length} (send truncate: "
                                f"true, or serve without --no_auto_truncate)", "Validation",
                           "validation")
        for length in lengths:
            self.metrics.input_length.observe(length)
        try:
            scores, queued, inference = await asyncio.wrap_future(
                self.batcher.submit(examples))
        except BatcherClosed:  # the server is stopping
            raise ApiError(503, "the server is stopping", "Unhealthy", "unhealthy") from None
        except Exception as error:  # the round this request was in failed; the server goes on
            import logging

            log = logging.getLogger("cappy.serve")
            reason = device_memory_reason(error)
            if reason is None:
                log.exception("scoring failed")
                raise ApiError(424, f"scoring failed: {error}", "Backend", "inference") from None
            # Out of device memory: one line in the log, not a traceback, naming what to lower.
            message = device_memory_line(reason, "lower --max_batch_tokens or --batch_size")
            log.warning("cappy serve: %s", message)
            raise ApiError(424, message, "Backend", "inference") from None
        return scores, {"tokenization": tokenized - start, "queue": queued,
                        "inference": inference, "tokens": sum(lengths)}


def warm_up(cappy, batcher):
    """Compile the batch shape of every row width (a pair as long as each width) before
    the server says it is ready."""
    from cappy.engine.models import packing

    tokenizer = cappy.tokenizer
    filler = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 5
    for width in packing.row_widths(cappy.max_length):
        ids = [tokenizer.bos_token_id] + [filler] * (width - 2) + [tokenizer.eos_token_id]
        batcher.submit([{"input_ids": ids}]).result()


def listening_socket(host, port):
    """The bound socket the server accepts on (bound here, so that a taken port is one
    line before the model loads)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CappyError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


KEEP_ALIVE_SECONDS = 75


def serve(config, say=print):
    """Run the server until SIGTERM or Ctrl-C; returns the exit code."""
    import logging
    import signal

    import uvicorn

    from cappy.serve.app import create_app

    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    sock = listening_socket(config.host, config.port)
    state = ServerState(config)
    state.stopped_by = None
    address = f"http://{config.host}:{config.port}"

    def load():
        try:
            state.load(say)
        except BaseException as error:  # the server stops: /health never says ready
            state.failure = error
            state.status = "failed"
            server.should_exit = True
            return
        if config.verbose:  # the one start-up line
            say(f"cappy serve: ready on {address} ({config.model_name_or_path}, max length "
                f"{state.cappy.max_length}, {state.cappy.truncation} truncation)", flush=True)

    loader = threading.Thread(target=load, name="cappy-load", daemon=True)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            loader.start()  # listening: /health says 503 until the model is ready

        def handle_exit(self, sig, frame):
            if state.status != "draining":
                state.status = "draining"
                state.stopped_by = signal.Signals(sig).name
            super().handle_exit(sig, frame)
            # uvicorn would raise the signal again once stopped; cappy serve says that it
            # stopped and exits 0 itself
            self._captured_signals.clear()

    server = Server(uvicorn.Config(
        create_app(state), log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=config.shutdown_timeout,
        # Idle connections stay open well past the clients' own pool expiry (httpx's, under
        # the cohere SDK, is 5 s): at uvicorn's 5 s a client could send on a connection the
        # server was closing, and see it reset.
        timeout_keep_alive=KEEP_ALIVE_SECONDS))
    try:
        server.run(sockets=[sock])
    finally:
        if state.batcher is not None:
            state.batcher.close(timeout=config.shutdown_timeout)
        state.tokenize_pool.shutdown(wait=False, cancel_futures=True)
        sock.close()
    if state.failure is not None:
        error = state.failure
        raise error if isinstance(error, CappyError) else CappyError(
            f"loading {config.model_name_or_path} failed: {error}")
    if state.stopped_by:
        say(f"cappy serve: stopped ({state.stopped_by}); answered the requests in flight",
            flush=True)
    return 0


parse_args, main = job_command(ServeConfig, __doc__, serve)


if __name__ == "__main__":
    sys.exit(main())
