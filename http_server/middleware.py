"""Two plain ASGI middlewares: the request-size limit (413) and the per-request metrics.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which would buffer streamed
responses and hide client disconnects from the handlers."""

from __future__ import annotations

import json
import time

from .metrics import Metrics

ENDPOINTS = {"/v1/infill", "/v1/completions", "/v1/models", "/health", "/metrics"}
# 499 (client went away) is left out: the batcher counts cancellations, streamed ones included.
ERROR_KINDS = {401: "auth", 413: "too_large", 422: "invalid", 503: "queue_full", 504: "timeout"}


class BodyLimit:
    """Reads the body up to `limit` bytes and answers 413 beyond it, before any handler runs."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:  # a chunked body with no length given
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect the handlers watch for

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        payload = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


class RequestMetrics:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        t0, status = time.perf_counter(), 500

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
            if status >= 400 and status != 499:
                self.metrics.errors.labels(ERROR_KINDS.get(status, "internal" if status >= 500 else "client")).inc()
