"""Scoring across requests: the pairs of every waiting request computed together.

Request handlers tokenize their pairs (in a pool of tokenization threads, each with its
own tokenizer: a fast tokenizer's truncation settings are per object) and hand them to
the batcher. Its one thread takes every waiting request up to `max_batch_tokens` tokens
(at least one request, however large), scores each distinct pair of them once through
the scorer's packed rows (`cappy.engine.jobs.scoring.PairScorer.score_some`: a few compiled
shapes, batches of a fixed number of rows), and answers each request once all its pairs
are scored. While more requests wait, rows that would only part-fill a last batch are
kept for the next round, filled up with the next requests' pairs instead of padding;
a pair is kept back once at most. Device work never runs on the event loop, so the
server keeps accepting and tokenizing while it computes.
"""

import collections
import concurrent.futures
import copy
import threading
import time

import numpy as np

from cappy.engine.jobs.scoring import encode_pairs


class Tokenizers:
    """Per-thread copies of the Cappy's tokenizer, cutting from the right (its own) or the
    left, and the encoding of a request's pairs with them."""

    def __init__(self, tokenizer, max_length, truncation):
        self._tokenizer, self.max_length, self.truncation = tokenizer, max_length, truncation
        self._local = threading.local()

    def _copy(self, side):
        copies = getattr(self._local, "copies", None)
        if copies is None:
            copies = self._local.copies = {}
        if side not in copies:
            tokenizer = copy.deepcopy(self._tokenizer)
            tokenizer.truncation_side = side
            copies[side] = tokenizer
        return copies[side]

    def encode(self, instructions, responses, truncate=True, side="right"):
        """Encoded pairs (cut at max_length unless `truncate` is false: then each as long
        as it is, for the caller to check)."""
        return encode_pairs(self._copy(side), instructions, responses, self.max_length,
                            self.truncation, truncate=truncate)


class Job:
    """One request's encoded pairs, their scores as they come, and the future the request
    awaits."""

    __slots__ = ("examples", "tokens", "future", "queued", "started", "scores", "remaining")

    def __init__(self, examples):
        self.examples = examples
        self.tokens = sum(len(example["input_ids"]) for example in examples)
        self.future = concurrent.futures.Future()
        self.queued = time.perf_counter()
        self.started = None
        self.scores = np.empty(len(examples), np.float32)
        self.remaining = len(examples)


def _key(example):
    return (tuple(example["input_ids"]), tuple(example.get("token_type_ids", ())))


class BatcherClosed(RuntimeError):
    """Submitted after `close()`: the server is stopping. Its own type, as the scoring
    thread's failures (XLA's errors are RuntimeErrors) must not read as a stop."""


class Batcher:
    """The scoring thread: `submit` a request's encoded pairs, get a future of (their
    float32 scores, seconds queued, seconds of their batch's inference).
    `on_batch(pairs, distinct pairs, tokens, inference seconds)` hears of each batch (the
    metrics)."""

    def __init__(self, scorer, params, max_batch_tokens, on_batch=None):
        self._scorer, self.max_batch_tokens = scorer, max_batch_tokens
        self._params = scorer.device_params(params)
        self._on_batch = on_batch or (lambda *_: None)
        self._jobs = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="cappy-scoring", daemon=True)
        self._thread.start()

    def submit(self, examples):
        job = Job(examples)
        with self._ready:
            if self._closing:
                raise BatcherClosed("the batcher is closed")
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def waiting(self):
        """Requests queued and not yet taken into a batch."""
        with self._ready:
            return len(self._jobs)

    def close(self, timeout=None):
        """Finish the queued requests, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _take(self, budget, block):
        """Jobs for the next round: the first waiting one (waited for when `block`), then as
        many more as `budget` tokens hold; None once closed and drained."""
        with self._ready:
            while block and not self._jobs and not self._closing:
                self._ready.wait()
            if not self._jobs:
                return None if self._closing and block else []
            batch = [self._jobs.popleft()]
            tokens = batch[0].tokens
            while self._jobs and tokens + self._jobs[0].tokens <= budget:
                tokens += self._jobs[0].tokens
                batch.append(self._jobs.popleft())
            return batch

    def _run(self):
        carried = []  # (job, pair index) kept back from the last round
        while True:
            held = sum(len(job.examples[at]["input_ids"]) for job, at in carried)
            jobs = self._take(self.max_batch_tokens - held, block=not carried)
            if jobs is None:
                return
            start = time.perf_counter()
            for job in jobs:
                if job.future.set_running_or_notify_cancel():  # not cancelled meanwhile
                    job.started = start
                    carried += [(job, at) for at in range(len(job.examples))]
            if not carried:
                continue
            entries, carried = carried, []
            index_of, slots = {}, []
            for job, at in entries:
                slots.append(index_of.setdefault(_key(job.examples[at]), len(index_of)))
            kept = {slot for (job, _), slot in zip(entries, slots) if job.started < start}
            examples = [{"input_ids": list(ids), **({"token_type_ids": list(types)}
                                                    if types else {})}
                        for ids, types in index_of]
            try:
                scores, deferred = self._scorer.score_some(
                    examples, self._params, defer=self.waiting() > 0, keep=kept)
            except BaseException as error:  # every request of the round hears of it
                for job in {job for job, _ in entries}:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            inference, deferred = time.perf_counter() - start, set(deferred)
            for (job, at), slot in zip(entries, slots):
                if slot in deferred:
                    carried.append((job, at))
                    continue
                job.scores[at] = scores[slot]
                job.remaining -= 1
                if not job.remaining:
                    job.future.set_result((job.scores, job.started - job.queued, inference))
            computed = [e for e, slot in zip(entries, slots) if slot not in deferred]
            self._on_batch(len(computed), len(index_of) - len(deferred),
                           sum(len(examples[i]["input_ids"]) for i in set(slots) - deferred),
                           inference)
