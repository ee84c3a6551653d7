"""The HTTP API of `cappy serve`: the routes of Hugging Face text-embeddings-inference (TEI)
and of Cohere's rerank API, on one Cappy.

- `POST /rerank` (TEI): `{query, texts, raw_scores, return_text, truncate,
  truncation_direction}` -> `[{index, score, text?}]`, best first (ties: the earlier text).
- `POST /predict` (TEI): `inputs` one `[instruction, response]` pair -> `[{score, label}]`,
  or a list of pairs -> `[[{score, label}], ...]` in input order.
- `POST /v1/rerank`, `POST /v2/rerank` (Cohere): `{query, documents (strings or {text}),
  top_n, return_documents, model}` -> `{id, results: [{index, relevance_score,
  document?}], meta}`, best first, cut to top_n.
- `GET /health` (200 when ready; 503 while loading, warming up or draining), `GET /info`,
  `GET /metrics` (Prometheus, TEI's metric names), `GET /openapi.json`.

The query is the instruction and each text (document) a response. A score is Cappy's
regression output on its label scale (about 0 to 1, no activation): `raw_scores` is
accepted and changes nothing. Unknown request fields are ignored, as clients send extra
ones. Errors are `{"error", "error_type"}` with TEI's error types: 401 without the API
key, 413 over the payload limit, 422 for bad JSON, wrong types, empty texts, more texts
than the client batch limit, or a pair longer than the model holds with truncation off,
429 past the concurrency limit, 503 when not ready, 424 if scoring itself fails.
"""

import json
import logging
import time
import uuid
from typing import Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from cappy.engine.ranking import ranked_order

log = logging.getLogger("cappy.serve")
INFERENCE_PATHS = ("/rerank", "/predict", "/v1/rerank", "/v2/rerank")
PUBLIC_PATHS = ("/health", "/metrics")  # open without the API key, as in TEI


class ApiError(Exception):
    """A request the server answers with `status` and TEI's error body."""

    def __init__(self, status, message, error_type, failure):
        super().__init__(message)
        self.status, self.message, self.error_type, self.failure = (status, message,
                                                                    error_type, failure)


# ---- request and response bodies (they make /openapi.json too) -------------------------

class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


Direction = Literal["Right", "Left", "right", "left"]


class RerankRequest(Lenient):
    query: str = Field(description="the instruction")
    texts: list[str] = Field(description="the responses to rank")
    raw_scores: bool = Field(False, description="accepted; Cappy's scores are always raw")
    return_text: bool = False
    truncate: bool | None = Field(None, description="cut pairs longer than the model holds "
                                                    "(default: the server's setting)")
    truncation_direction: Direction = "Right"


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


class PredictRequest(Lenient):
    inputs: list[str] | list[list[str]] = Field(
        description="one [instruction, response] pair, or a list of them")
    raw_scores: bool = False
    truncate: bool | None = None
    truncation_direction: Direction = "Right"


class Prediction(BaseModel):
    score: float
    label: str


class CohereDocument(Lenient):
    text: str


class CohereRerankRequest(Lenient):
    query: str
    documents: list[str | CohereDocument]
    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool | None = False


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: CohereDocument | None = None


class CohereResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict


class ErrorBody(BaseModel):
    error: str
    error_type: str


# ---- the app -------------------------------------------------------------------------

def create_app(state):
    """The FastAPI app over a `cappy.serve.command.ServerState`."""
    app = FastAPI(title="cappy serve", version=state.version,
                  description="Cappy as a reranker: text-embeddings-inference's and Cohere's "
                              "rerank APIs.",
                  responses={code: {"model": ErrorBody} for code in (401, 413, 422, 429, 503)})

    def error_response(status, message, error_type, failure):
        state.metrics.failure(failure)
        return JSONResponse({"error": message, "error_type": error_type}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_, error):
        return error_response(error.status, error.message, error.error_type, error.failure)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, error):
        return error_response(422, validation_message(error), "Validation", "validation")

    @app.exception_handler(Exception)
    async def server_error(_, error):  # a bug of the server's, not the client's mistake
        log.exception("cappy serve: a request failed")
        return error_response(500, f"internal error: {error}", "Backend", "inference")

    @app.exception_handler(HTTPException)
    async def http_error(_, error):
        return JSONResponse({"error": str(error.detail), "error_type": "Http"},
                            status_code=error.status_code)

    async def scored(method, instructions, responses, truncate, direction):
        """Scores of the pairs and TEI's timing headers; the request counted."""
        state.metrics.request(method)
        start = time.perf_counter()
        scores, timing = await state.score(instructions, responses, truncate,
                                           direction.lower())
        total = time.perf_counter() - start
        state.metrics.success(method, total, timing)
        n = max(len(instructions), 1)
        headers = {"x-compute-type": "cappy", "x-compute-time": f"{1000 * total:.0f}",
                   "x-total-time": f"{1000 * total:.0f}",
                   "x-tokenization-time": f"{1000 * timing['tokenization'] / n:.0f}",
                   "x-queue-time": f"{1000 * timing['queue'] / n:.0f}",
                   "x-inference-time": f"{1000 * timing['inference'] / n:.0f}",
                   "x-compute-tokens": str(timing["tokens"]),
                   "x-compute-characters": str(sum(map(len, instructions))
                                               + sum(map(len, responses)))}
        return scores, headers

    def checked_count(count, what):
        if count == 0:
            raise ApiError(422, f"`{what}` cannot be empty", "Empty", "validation")
        if count > state.max_client_batch_size:
            raise ApiError(422, f"batch size {count} > maximum allowed batch size "
                                f"{state.max_client_batch_size}", "Validation", "batch_size")

    @app.post("/rerank", response_model=list[Rank], response_model_exclude_none=True)
    async def rerank(request: RerankRequest):
        """TEI's rerank: every text scored against the query, best first."""
        checked_count(len(request.texts), "texts")
        scores, headers = await scored("batch", [request.query] * len(request.texts),
                                       request.texts, request.truncate,
                                       request.truncation_direction)
        ranks = [{"index": int(i), "score": float(scores[i]),
                  **({"text": request.texts[i]} if request.return_text else {})}
                 for i in ranked_order(scores)]
        return JSONResponse(ranks, headers=headers)

    @app.post("/predict", response_model=list[Prediction] | list[list[Prediction]])
    async def predict(request: PredictRequest):
        """TEI's predict: one pair, or a list of pairs, each scored."""
        single = all(isinstance(item, str) for item in request.inputs)
        pairs = [request.inputs] if single else request.inputs
        if single and not pairs[0]:
            pairs = []
        checked_count(len(pairs), "inputs")
        for index, pair in enumerate(pairs):
            if len(pair) != 2:
                where = "`inputs`" if single else f"`inputs[{index}]`"
                raise ApiError(422, f"{where} must be an [instruction, response] pair, got "
                                    f"{len(pair)} text(s): Cappy scores pairs", "Validation",
                               "validation")
        scores, headers = await scored("single" if single else "batch",
                                       [pair[0] for pair in pairs], [pair[1] for pair in pairs],
                                       request.truncate, request.truncation_direction)
        predictions = [[{"score": float(score), "label": state.label}] for score in scores]
        return JSONResponse(predictions[0] if single else predictions, headers=headers)

    async def cohere_rerank(request, version):
        texts = [doc if isinstance(doc, str) else doc.text for doc in request.documents]
        checked_count(len(texts), "documents")
        scores, headers = await scored("batch", [request.query] * len(texts), texts, None,
                                       "right")
        order = ranked_order(scores)[:request.top_n or len(texts)]
        results = [{"index": int(i), "relevance_score": float(scores[i]),
                    **({"document": {"text": texts[i]}} if request.return_documents else {})}
                   for i in order]
        body = {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": {"version": version},
                         "billed_units": {"search_units": 1}}}
        return JSONResponse(body, headers=headers)

    @app.post("/v1/rerank", response_model=CohereResponse, response_model_exclude_none=True)
    async def cohere_v1(request: CohereRerankRequest):
        """Cohere's rerank (v1)."""
        return await cohere_rerank(request, "1")

    @app.post("/v2/rerank", response_model=CohereResponse, response_model_exclude_none=True)
    async def cohere_v2(request: CohereRerankRequest):
        """Cohere's rerank (v2)."""
        return await cohere_rerank(request, "2")

    @app.get("/health")
    async def health():
        """200 when ready to score; 503 while loading, warming up or draining."""
        if state.status != "ready":
            return JSONResponse({"error": state.status, "error_type": "Unhealthy"},
                                status_code=503)
        return Response(status_code=200)

    @app.get("/info")
    async def info():
        """The model and the server's limits."""
        return state.info()

    @app.get("/metrics")
    async def metrics():
        """Prometheus text: requests by outcome, durations, batch sizes and tokens."""
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    return Gate(app, state)


def validation_message(error):
    """The first problem of a request body, in one line: where and what."""
    problems = error.errors()
    if not problems:
        return "invalid request body"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    if first.get("type") == "json_invalid":
        return f"invalid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    return f"`{where or 'body'}`: {first.get('msg')}"


class Gate:
    """What every request passes before its route: the API key, the payload limit (the
    body read here, at most that many bytes) and the concurrency limit of the scoring
    routes; and one log line per request with --log_requests."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, path = self.state, scope["path"]
        start = time.perf_counter()
        status = {}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if state.api_key is not None and path not in PUBLIC_PATHS:
                given = dict(scope["headers"]).get(b"authorization", b"")
                if given != state.expected_authorization:
                    return await refuse(send_logged, state, 401, "missing or wrong API key "
                                        "(send `Authorization: Bearer KEY`)", "Unauthorized",
                                        "unauthorized")
            if path not in INFERENCE_PATHS:
                return await self.app(scope, receive, send_logged)
            body = await read_body(receive, state.payload_limit)
            if body is None:  # the client left
                return
            if body is False:
                return await refuse(send_logged, state, 413, f"payload over the limit of "
                                    f"{state.payload_limit} bytes", "Validation", "payload")
            if state.in_flight >= state.max_concurrent_requests:
                return await refuse(send_logged, state, 429, "Model is overloaded",
                                    "Overloaded", "overloaded")
            state.in_flight += 1
            try:
                return await self.app(scope, replay(body, receive), send_logged)
            finally:
                state.in_flight -= 1
        finally:
            if state.log_requests:
                log.warning("%s %s %s %.1f ms", scope.get("method"), path,
                            status.get("code", "-"), 1000 * (time.perf_counter() - start))


async def read_body(receive, limit):
    """The request's body; False once it passes `limit` bytes; None if the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return False
        if not message.get("more_body"):
            return bytes(body)


def replay(body, receive):
    """A `receive` that hands the app the body already read, then waits on the client."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def refuse(send, state, status, message, error_type, failure):
    state.metrics.failure(failure)
    payload = json.dumps({"error": message, "error_type": error_type}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})

