"""The HTTP API: thin FastAPI handlers over the batcher.

    POST /v1/infill        {prefix, suffix, max_tokens, length, candidates, sampler, stream}
    POST /v1/completions   OpenAI's completions shape; prompt + suffix is fill-in-the-middle
    GET  /v1/models        OpenAI's model list (one model)
    POST /v1/score, /v1/repair, /v1/tokenize   what the language server needs besides infill
    GET  /health           no auth: for load balancers and `diffill serve --ray` probes
    GET  /metrics          Prometheus text

Every model call goes through `Batcher.submit` with a cancel flag the handler sets when the
client goes away, so a closed editor tab stops its denoising loop at the next step.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infill_engine.engine import Engine
from infill_engine.request import (InfillCancelled, InfillError, InfillOptions, InfillRequest, InfillResult,
                                   SamplerSettings)

from .batcher import Batcher, InfillTimeout, QueueFull
from .config import ServeConfig
from .metrics import CONTENT_TYPE, Metrics
from .middleware import BodyLimit, RequestMetrics
from .schemas import CompletionBody, InfillBody, RepairBody, ScoreBody, TokenizeBody

KEEPALIVE_S = 0.5  # a stream with no step for this long sends an SSE comment: clients can check their own cancel


class ClientGone(Exception):
    """The client closed the connection; nobody will read the answer."""


def model_id(config: ServeConfig, engine: Engine) -> str:
    return Path(config.model).name if config.model else engine.backend.name.split(" ")[0]


def create_app(engine: Engine, config: ServeConfig = ServeConfig()) -> FastAPI:
    metrics = Metrics()
    batcher = Batcher(engine, config.max_batch, config.max_queue, metrics)
    name = model_id(config, engine)
    limit = engine.backend.max_len

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="diffill", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.engine = batcher, metrics, engine
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: sees the 413s too
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not config.auth:
            return
        given = credentials.credentials if credentials else ""
        # compare against every token in constant time: which token matched must not leak either
        if not any([secrets.compare_digest(given.encode(), t.encode()) for t in config.tokens]):
            raise HTTPException(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorised)]

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return JSONResponse({"detail": "the server is busy: too many requests are waiting; retry shortly"},
                            status_code=503, headers={"Retry-After": str(config.retry_after_s)})

    @app.exception_handler(InfillTimeout)
    async def timed_out(request: Request, exc: InfillTimeout):
        return JSONResponse({"detail": f"the request took longer than {config.timeout_s:g} s"}, status_code=504)

    @app.exception_handler(InfillError)
    async def bad_request(request: Request, exc: InfillError):
        return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, 422)

    @app.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request"; only the metrics see it

    def check_budget(field: str, value: int) -> None:
        if value > limit:
            raise RequestValidationError([{"loc": ("body", field), "type": "less_than_equal", "input": value,
                                           "msg": f"must be at most {limit} (the model's window)"}])

    async def run(request: Request, req: InfillRequest, cancel: threading.Event) -> InfillResult:
        return await wait(request, batcher.submit(req, config.timeout_s), cancel)

    async def wait(request: Request, job, cancel: threading.Event):
        """The job's answer, or ClientGone as soon as the client disconnects (which cancels the job)."""
        future = asyncio.wrap_future(job)
        # After the body, the next ASGI message is the disconnect: wait for it instead of polling.
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
            if future.done():
                return future.result()
            cancel.set()
            future.add_done_callback(_retrieved)
            raise ClientGone()
        except asyncio.CancelledError:  # the server is shutting down, or the connection task went
            cancel.set()
            future.add_done_callback(_retrieved)
            raise
        except InfillCancelled:
            raise ClientGone() from None
        finally:
            gone.cancel()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "engine": engine.name, "random": engine.is_random, "pid": os.getpid(),
                "max_tokens": limit, "queue": batcher.queue_depth, "batching": batcher.batching}

    @app.get("/metrics", dependencies=guarded)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=guarded)
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "diffill"}]}

    @app.post("/v1/infill", dependencies=guarded)
    async def infill(body: InfillBody, request: Request):
        check_budget("max_tokens", body.max_tokens)
        if body.length != "auto":
            check_budget("length", body.length)
            if body.length < 1:
                raise RequestValidationError([{"loc": ("body", "length"), "type": "greater_than_equal",
                                               "input": body.length, "msg": "must be 'auto' or at least 1"}])
        cancel = threading.Event()
        req = InfillRequest(body.prefix, body.suffix, length=None if body.length == "auto" else body.length,
                            max_length=body.max_tokens, candidates=body.candidates, between=tuple(body.between),
                            lengths=tuple(body.lengths),
                            sampler=body.sampler.settings(), cancel=cancel.is_set)
        if body.stream:
            return StreamingResponse(stream_steps(req, cancel), media_type="text/event-stream")
        return infill_answer(await run(request, req, cancel))

    def infill_answer(result: InfillResult) -> dict:
        first = result.candidates[0]
        return {"model": name, "text": first.text, "tokens": len(first.token_confidences),
                "forwards": result.forwards, "ms": round(result.wall_ms, 2), "context_cut": result.context_cut,
                "hole_tokens": result.hole_tokens,
                "candidates": [{"text": c.text, "score": c.score, "confidences": c.token_confidences}
                               for c in result.candidates]}

    @app.post("/v1/score", dependencies=guarded)
    async def score(body: ScoreBody, request: Request):
        job = batcher.call(lambda e: e.score(body.prefix, body.middle, body.suffix), config.timeout_s)
        tokens = await wait(request, job, threading.Event())
        return {"tokens": [{"start": t.start, "end": t.end, "text": t.text, "probability": t.probability}
                           for t in tokens]}

    @app.post("/v1/repair", dependencies=guarded)
    async def repair(body: RepairBody, request: Request):
        settings = body.sampler.settings()
        job = batcher.call(lambda e: e.repair(body.prefix, body.middle, body.suffix, body.fraction, settings),
                           config.timeout_s)
        return infill_answer(await wait(request, job, threading.Event()))

    @app.post("/v1/tokenize", dependencies=guarded)
    async def tokenize(body: TokenizeBody):
        return {"count": engine.count_tokens(body.text)}

    def stream_steps(req: InfillRequest, cancel: threading.Event) -> AsyncIterator[str]:
        """Server-sent events: `step` per forward (the hole so far, masked slots as ░), then
        `done` with the /v1/infill answer, or `error`.  The request is queued here, before the
        response starts, so a full queue is still a plain 503.  A client that goes away ends
        the generator, which sets the cancel flag."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        done_fraction = [0.0]  # progress comes just before each step; the step event carries it
        req.progress = lambda fraction: done_fraction.__setitem__(0, fraction)
        req.on_step = lambda step, texts: loop.call_soon_threadsafe(
            events.put_nowait, ("step", step, texts[0], done_fraction[0]))
        future = batcher.submit(req, config.timeout_s)  # QueueFull: 503 from the handler
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(events.put_nowait, ("end", f)))
        return relay(events, cancel)

    async def relay(events: asyncio.Queue, cancel: threading.Event) -> AsyncIterator[str]:
        try:
            while True:
                try:
                    kind, *rest = await asyncio.wait_for(events.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": waiting\n\n"
                    continue
                if kind == "step":
                    yield sse("step", {"step": rest[0], "text": rest[1], "done": round(rest[2], 4)})
                    continue
                exc = rest[0].exception()
                if exc is None:
                    yield sse("done", infill_answer(rest[0].result()))
                else:
                    status = 504 if isinstance(exc, InfillTimeout) else 422 if isinstance(exc, InfillError) else 500
                    yield sse("error", {"status": status, "detail": str(exc) or type(exc).__name__})
                return
        finally:
            cancel.set()  # no-op when done; stops the loop when the client left mid-stream

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionBody, request: Request):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise RequestValidationError([{"loc": ("body", "prompt"), "type": "value_error", "input": len(prompts),
                                           "msg": "one prompt per request"}])
        max_tokens = body.max_tokens or InfillOptions.max_length
        check_budget("max_tokens", max_tokens)
        sampler = SamplerSettings(temperature=body.temperature or 0.0, seed=body.seed or 0)
        cancel = threading.Event()
        req = InfillRequest(prompts[0], body.suffix or "", max_length=max_tokens, candidates=body.n,
                            sampler=sampler, cancel=cancel.is_set)
        result = await run(request, req, cancel)
        stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
        best = result.candidates[:body.n]  # an auto length gives one candidate per length tried: the n best
        choices = [completion_choice(i, c.text, stops, full=len(c.token_confidences) >= max_tokens)
                   for i, c in enumerate(best)]
        answer = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                  "model": name, "choices": choices}
        prompt_tokens = engine.count_tokens(prompts[0]) + engine.count_tokens(body.suffix or "")
        completion_tokens = sum(len(c.token_confidences) for c in best)
        answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}
        if not body.stream:
            return answer

        # A diffusion model does not write left to right, so there are no meaningful
        # partial texts: the stream is the whole completion as one chunk, then [DONE].
        async def chunks() -> AsyncIterator[str]:
            yield f"data: {json.dumps(answer)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


async def disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that sends something else here must not make this spin


def _retrieved(future: asyncio.Future) -> None:
    """Nobody waits for this answer any more: take its exception so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()


def completion_choice(index: int, text: str, stops: list[str], full: bool) -> dict:
    """OpenAI's finish_reason: "length" only when the hole used every token it was allowed."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return {"index": index, "text": text if cut < 0 else text[:cut], "logprobs": None,
            "finish_reason": "length" if full and cut < 0 else "stop"}


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
