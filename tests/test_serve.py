"""`cappy serve` on 127.0.0.1 with the tiny Cappy: the real clients of its two APIs (the
cohere SDK, llama-index's TEI reranker, rerankers in TEI mode) get the ranking and scores
`Cappy.score` gives offline; every refusal has its status and body and leaves the server
answering; a load of 64 concurrent clients scores as offline; SIGTERM answers what is in
flight. Every server here is a process of its own, stopped by the test, with bounded
request counts and times."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from cappy.engine.runtime.local_processes import free_port
from conftest import REPO, assert_close

QUERY = "Which of these is a fruit you can eat?"
TEXTS = ["a red apple", "the blue sky over the hills", "a ripe banana", "eight",
         "an old wooden chair", "apple"]


class Server:
    """`cappy serve` as a process on a free loopback port."""

    def __init__(self, model, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cappy", "serve", "--model_name_or_path", model, "--port",
             str(self.port), *map(str, flags)], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.health = []

    def wait_ready(self, timeout=180):
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()[-3000:]
            try:
                status = httpx.get(f"{self.url}/health", timeout=5).status_code
                self.health.append(status)
                if status == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the server did not become ready")

    def stop(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


@pytest.fixture(scope="module")
def server(tiny_scorer):
    running = Server(tiny_scorer, "--max_client_batch_size", 40).wait_ready()
    yield running
    code, out, err = running.stop()
    assert code == 0, err[-3000:]
    lines = out.strip().splitlines()  # one start-up line, one on stopping; nothing else
    assert len(lines) == 2 and lines[0].startswith(f"cappy serve: ready on {running.url} ")
    assert lines[1].startswith("cappy serve: stopped (SIGTERM)"), out
    assert "Traceback" not in err, err[-3000:]


@pytest.fixture(scope="module")
def offline(tiny_scorer):
    from cappy import Cappy

    cappy = Cappy.from_pretrained(tiny_scorer)
    return lambda query, texts: cappy.score([query] * len(texts), texts)


def post(server, path, body, **kwargs):
    import httpx

    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


def test_it_says_503_until_ready_then_prints_one_line(server):
    assert 503 in server.health and server.health[-1] == 200


def test_tei_rerank_and_predict_score_as_offline(server, offline):
    expected = offline(QUERY, TEXTS)
    assert np.ptp(expected) > 1e-3
    response = post(server, "/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert [r["index"] for r in ranks] == sorted(range(len(TEXTS)),
                                                 key=lambda i: (-expected[i], i))
    assert all(r["text"] == TEXTS[r["index"]] for r in ranks)
    by_index = {r["index"]: r["score"] for r in ranks}
    assert_close([by_index[i] for i in range(len(TEXTS))], expected)
    assert int(response.headers["x-compute-tokens"]) > 0
    plain = post(server, "/rerank", {"query": QUERY, "texts": TEXTS[:2]}).json()
    assert all(set(r) == {"index", "score"} for r in plain)

    single = post(server, "/predict", {"inputs": [QUERY, TEXTS[0]]})
    assert single.status_code == 200, single.text
    assert [set(p) for p in single.json()] == [{"score", "label"}]
    assert_close([single.json()[0]["score"]], expected[:1])
    batch = post(server, "/predict", {"inputs": [[QUERY, text] for text in TEXTS]}).json()
    assert len(batch) == len(TEXTS) and all(len(item) == 1 for item in batch)
    assert_close([item[0]["score"] for item in batch], expected)


def test_info_metrics_and_openapi(server):
    import httpx

    info = httpx.get(f"{server.url}/info").json()
    assert info["max_input_length"] == 512 and info["max_client_batch_size"] == 40
    assert info["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"},
                                               "label2id": {"LABEL_0": 0}}}
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("te_request_count", "te_request_success", "te_batch_next_size",
                 "te_request_inference_duration_bucket", "te_queue_size"):
        assert name in metrics, name
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/rerank", "/predict", "/v1/rerank", "/v2/rerank", "/health", "/info"} <= set(paths)


def test_the_cohere_sdk_reranks_as_offline(server, offline):
    import cohere

    expected = offline(QUERY, TEXTS)
    order = sorted(range(len(TEXTS)), key=lambda i: (-expected[i], i))
    for client in (cohere.ClientV2(api_key="unused", base_url=server.url),
                   cohere.Client(api_key="unused", base_url=server.url)):
        response = client.rerank(model="cappy", query=QUERY, documents=TEXTS, top_n=4)
        assert [r.index for r in response.results] == order[:4]
        assert_close([r.relevance_score for r in response.results],
                     [expected[i] for i in order[:4]])
    v1 = cohere.Client(api_key="unused", base_url=server.url).rerank(
        query=QUERY, documents=[{"text": t} for t in TEXTS], return_documents=True)
    assert [r.document.text for r in v1.results] == [TEXTS[i] for i in order]


def test_llama_index_tei_reranker_reranks_as_offline(server, offline):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    expected = offline(QUERY, TEXTS)
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in TEXTS]
    reranker = TextEmbeddingInference(base_url=server.url, top_n=3)
    ranked = reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    order = sorted(range(len(TEXTS)), key=lambda i: (-expected[i], i))
    assert [n.node.get_content() for n in ranked] == [TEXTS[i] for i in order[:3]]
    assert_close([n.score for n in ranked], [expected[i] for i in order[:3]])


def test_rerankers_in_tei_mode_ranks_as_offline(server, offline):
    from rerankers import Reranker

    expected = offline(QUERY, TEXTS)
    ranker = Reranker("cappy", model_type="text-embeddings-inference", api_key="unused",
                      url=f"{server.url}/rerank", verbose=0)
    results = ranker.rank(query=QUERY, docs=TEXTS)
    order = sorted(range(len(TEXTS)), key=lambda i: (-expected[i], i))
    assert [r.document.text for r in results.results] == [TEXTS[i] for i in order]
    assert_close([r.score for r in results.results], [expected[i] for i in order])


@pytest.mark.parametrize("body, status, error_type, needle", [
    ("{not json", 422, "Validation", "invalid JSON"),
    ({"query": QUERY}, 422, "Validation", "`texts`"),
    ({"query": QUERY, "texts": "apple"}, 422, "Validation", "`texts`"),
    ({"query": 7, "texts": ["apple"]}, 422, "Validation", "`query`"),
    ({"query": QUERY, "texts": []}, 422, "Empty", "`texts` cannot be empty"),
    ({"query": QUERY, "texts": ["x"] * 41}, 422, "Validation", "batch size 41 > maximum"),
    ({"query": QUERY, "texts": ["word " * 600], "truncate": False}, 422, "Validation",
     "tokens; the model holds 512"),
    ({"query": QUERY, "texts": ["apple"], "truncation_direction": "Up"}, 422, "Validation",
     "`truncation_direction`"),
])
def test_bad_requests_get_teis_errors_and_the_server_goes_on(server, offline, body, status,
                                                            error_type, needle):
    import httpx

    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{server.url}/rerank", content=content,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "error_type"}
    assert response.json()["error_type"] == error_type
    assert needle in response.json()["error"], response.json()
    again = post(server, "/rerank", {"query": QUERY, "texts": TEXTS[:2]})
    assert again.status_code == 200
    assert_close(sorted(r["score"] for r in again.json()), sorted(offline(QUERY, TEXTS[:2])))


def test_a_long_pair_is_cut_as_cappy_score_cuts_it(server, offline):
    long_text = "word " * 600
    response = post(server, "/rerank", {"query": QUERY, "texts": [long_text, "apple"]})
    assert response.status_code == 200
    got = {r["index"]: r["score"] for r in response.json()}
    assert_close([got[0], got[1]], offline(QUERY, [long_text, "apple"]))
    cohere_predict = post(server, "/predict", {"inputs": [QUERY]})  # not a pair
    assert cohere_predict.status_code == 422
    assert "pair" in cohere_predict.json()["error"]


def test_a_client_that_leaves_mid_request_costs_nothing(server, offline):
    body = json.dumps({"query": QUERY, "texts": TEXTS}).encode()
    for cut in (len(body) // 2, len(body)):  # mid-body, and right after sending all of it
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body[:cut])
    response = post(server, "/rerank", {"query": QUERY, "texts": TEXTS})
    assert response.status_code == 200
    got = {r["index"]: r["score"] for r in response.json()}
    assert_close([got[i] for i in range(len(TEXTS))], offline(QUERY, TEXTS))


def test_limits_api_key_and_payload(tiny_scorer):
    import httpx

    server = Server(tiny_scorer, "--api_key", "s3cret", "--payload_limit", 3000,
                    "--max_concurrent_requests", 1, "--max_length", 64).wait_ready()
    try:
        refused = httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": TEXTS})
        assert refused.status_code == 401 and refused.json()["error_type"] == "Unauthorized"
        assert httpx.get(f"{server.url}/info").status_code == 401
        assert httpx.get(f"{server.url}/health").status_code == 200  # public, as in TEI
        key = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": TEXTS},
                          headers=key).status_code == 200
        big = httpx.post(f"{server.url}/rerank", headers=key,
                         json={"query": QUERY, "texts": ["apple " * 100] * 10})
        assert big.status_code == 413 and big.json()["error_type"] == "Validation"

        async def crowd():
            async with httpx.AsyncClient(timeout=60, headers=key) as client:
                body = {"query": QUERY * 20, "texts": ["banana " * 50] * 5}
                return [r.status_code for r in await asyncio.gather(*[
                    client.post(f"{server.url}/rerank", json=body) for _ in range(24)])]

        codes = asyncio.run(crowd())  # one in flight at a time: the others refused
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        assert httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": TEXTS},
                          headers=key).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'te_request_failure_total{err="overloaded"}' in metrics
    finally:
        code, _, err = server.stop()
    assert code == 0, err[-3000:]


def test_64_concurrent_clients_2000_requests_score_as_offline(server, offline):
    """Pairs of different requests packed into the same rows: scores move by float
    rounding only."""
    import httpx

    texts = [t for t in (" ".join(TEXTS[i:i + 3]) for i in range(len(TEXTS)))] + TEXTS
    rng = np.random.default_rng(0)
    requests = []
    for index in range(2000):
        chosen = [texts[j] + f" {index % 17}" for j in rng.integers(0, len(texts),
                                                                      rng.integers(1, 33))]
        requests.append((f"{QUERY} ({index % 50})", chosen))

    async def load():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            queue = asyncio.Queue()
            for item in enumerate(requests):
                queue.put_nowait(item)
            answers = {}

            async def worker():
                while not queue.empty():
                    index, (query, chosen) = queue.get_nowait()
                    response = await client.post(f"{server.url}/rerank",
                                                 json={"query": query, "texts": chosen})
                    answers[index] = (response.status_code, response.json())

            await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(64)]), 600)
            return answers

    answers = asyncio.run(load())
    assert sorted(answers) == list(range(2000))
    assert {status for status, _ in answers.values()} == {200}
    got, expected = [], []
    by_query = {}
    for index, (query, chosen) in enumerate(requests):
        by_query.setdefault(query, set()).update(chosen)
    score_of = {}
    for query, chosen in by_query.items():
        chosen = sorted(chosen)
        score_of.update(zip([(query, c) for c in chosen], offline(query, chosen).tolist()))
    for index, (query, chosen) in enumerate(requests):
        for rank in answers[index][1]:
            got.append(rank["score"])
            expected.append(score_of[(query, chosen[rank["index"]])])
    assert_close(got, expected)


def received(metrics):
    """The requests a server has admitted, from its /metrics answer."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.text.splitlines()
               if line.startswith("te_request_count_total"))


def test_sigterm_answers_the_requests_in_flight_and_exits(tiny_scorer):
    import httpx

    server = Server(tiny_scorer, "--max_length", 64).wait_ready()

    async def in_flight():
        async with httpx.AsyncClient(timeout=60) as client:
            sends = [asyncio.ensure_future(client.post(
                f"{server.url}/rerank", json={"query": QUERY, "texts": TEXTS * 5}))
                for _ in range(16)]
            # SIGTERM once the server has taken in all 16 (it counts a request as it
            # admits it): a request that came after the signal would rightly get a 503.
            deadline = time.monotonic() + 30
            while received(await client.get(f"{server.url}/metrics")) < 16:
                assert time.monotonic() < deadline, "the 16 requests never reached the server"
                await asyncio.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*sends, return_exceptions=True)

    start = time.monotonic()
    answers = asyncio.run(in_flight())
    # Waited for, not signalled again: a second SIGTERM that came while the interpreter
    # was already exiting (slow under load) would end the process with the signal's code.
    out, err = server.process.communicate(timeout=60)
    code = server.process.returncode
    assert time.monotonic() - start < 60
    assert code == 0, err[-3000:]
    answered = [a for a in answers if not isinstance(a, Exception)]
    assert answered and all(a.status_code == 200 for a in answered)
    assert out.strip().splitlines()[-1].startswith("cappy serve: stopped (SIGTERM)")
    assert "Traceback" not in err


def test_a_device_out_of_memory_is_one_line_and_the_server_goes_on(tiny_scorer, offline,
                                                                    monkeypatch, caplog):
    """XLA's RESOURCE_EXHAUSTED in a scoring round (injected: this CPU does not run out):
    the requests of that round get TEI's backend error naming the flags to lower, the log
    one line without a traceback, and the next request is scored as offline. (XLA's
    errors are RuntimeErrors; they once read as "the server is stopping".) In-process,
    through the ASGI app, so that the scorer can be made to fail."""
    import logging

    import httpx
    import jax

    from cappy.serve.app import create_app
    from cappy.serve.command import ServeConfig, ServerState

    state = ServerState(ServeConfig(model_name_or_path=tiny_scorer, max_length=64))
    state.load(lambda *args, **kwargs: None)
    scorer, failures = state.batcher._scorer, []
    score_some = scorer.score_some

    def out_of_memory_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 "
                "bytes.\nBufferAssignment OOM Debugging.")
        return score_some(*args, **kwargs)

    monkeypatch.setattr(scorer, "score_some", out_of_memory_once)

    async def two_requests():  # the app as uvicorn runs it (lifespan off), without a socket
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://cappy") as client:
            return [await client.post("/rerank", json={"query": QUERY, "texts": TEXTS},
                                      timeout=60) for _ in range(2)]

    try:
        with caplog.at_level(logging.WARNING):
            failed, answered = asyncio.run(two_requests())
    finally:
        state.batcher.close(timeout=30)
    assert failed.status_code == 424, failed.text
    assert failed.json() == {
        "error": "the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory while "
                 "trying to allocate 17179869184 bytes.): lower --max_batch_tokens or "
                 "--batch_size", "error_type": "Backend"}
    records = [r for r in caplog.records if r.name == "cappy.serve"]
    assert [r.getMessage() for r in records] == ["cappy serve: " + failed.json()["error"]]
    assert records[0].exc_info is None  # no traceback
    assert answered.status_code == 200, answered.text
    scores = [None] * len(TEXTS)
    for rank in answered.json():
        scores[rank["index"]] = rank["score"]
    assert_close(scores, offline(QUERY, TEXTS))
