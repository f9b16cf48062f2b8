"""The engine, on a diffill HTTP server (`diffill serve --http`) instead of in this process.

`RemoteEngine` has the methods the language server's features call on an `Engine` (infill,
score, repair, count_tokens, name, is_random), so with `diffill.server.url` set nothing
else changes: the same cancel flag (polled between the server's step events and its
keep-alives; closing the stream makes the server stop the denoising loop), the same
progress (each step event says how much of the hole is done), the same errors.

Plain urllib: an editor's helper should not need another HTTP library to talk to a server.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Iterator

from infill_engine.request import (Candidate, InfillCancelled, InfillError, InfillRequest, InfillResult,
                                   SamplerSettings, TokenLikelihood)

TIMEOUT_S = 60.0  # any one read; the server sends a keep-alive every half second while it works


class RemoteEngine:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = TIMEOUT_S):
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        health = self._call("GET", "/health")  # fail at load, with the reason, not at the first keystroke
        self.name = f"{health.get('engine', health.get('model', 'diffill'))} at {self.url}"
        self.is_random = bool(health.get("random", False))

    # -- the Engine methods the features use ---------------------------------------------------
    def infill(self, req: InfillRequest) -> InfillResult:
        body = {"prefix": req.prefix, "suffix": req.suffix, "max_tokens": req.max_length,
                "length": "auto" if req.length is None else req.length, "candidates": req.candidates,
                "between": list(req.between), "lengths": list(req.lengths), "sampler": _sampler(req.sampler),
                "stream": True}
        with self._open("POST", "/v1/infill", body) as response:
            for event, data in _events(response, self.url):
                if req.cancel is not None and req.cancel():
                    raise InfillCancelled()  # leaving the with-block closes the stream: the server stops too
                if event == "step":
                    if req.progress is not None:
                        req.progress(data["done"])
                    if req.on_step is not None:
                        req.on_step(data["step"], [data["text"]])
                elif event == "done":
                    return _result(data)
                elif event == "error":
                    raise InfillError(f"diffill server: {data['detail']}")
        raise InfillError(f"the diffill server at {self.url} closed the stream before the answer")

    def score(self, prefix: str, middle: str, suffix: str, groups: int = 4) -> list[TokenLikelihood]:
        data = self._call("POST", "/v1/score", {"prefix": prefix, "middle": middle, "suffix": suffix})
        return [TokenLikelihood(t["start"], t["end"], t["text"], t["probability"]) for t in data["tokens"]]

    def repair(self, prefix: str, middle: str, suffix: str, fraction: float = 0.25,
               sampler_settings: SamplerSettings | None = None) -> InfillResult:
        body = {"prefix": prefix, "middle": middle, "suffix": suffix, "fraction": fraction,
                "sampler": _sampler(sampler_settings or SamplerSettings())}
        return _result(self._call("POST", "/v1/repair", body))

    def count_tokens(self, text: str) -> int:
        return self._call("POST", "/v1/tokenize", {"text": text})["count"]

    # -- HTTP -----------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        with self._open(method, path, body) as response:
            return json.loads(response.read())

    def _open(self, method: str, path: str, body: dict | None):
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise InfillError(_http_problem(exc, self.url)) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfillError(f"cannot reach the diffill server at {self.url} ({reason}); "
                              "is `diffill serve --http` running there? (setting diffill.server.url)") from None


def _events(response, url: str) -> Iterator[tuple[str | None, dict | None]]:
    """Server-sent events as (event, data); (None, None) for each keep-alive comment, so the
    caller gets to check its cancel flag at least twice a second."""
    event, data = None, None
    while True:
        try:
            raw = response.readline()
        except (socket.timeout, ConnectionError) as exc:
            raise InfillError(f"the diffill server at {url} stopped answering ({exc})") from None
        if not raw:
            return
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            yield None, None
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and event is not None:
            yield event, data
            event, data = None, None


def _http_problem(exc: urllib.error.HTTPError, url: str) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError):
        detail = exc.reason
    if exc.code == 401:
        return f"the diffill server at {url} refused the token: set diffill.server.token ({detail})"
    if exc.code == 503:
        return f"the diffill server at {url} is busy; try again in a moment"
    if isinstance(detail, list):  # a 422: name the fields
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
    return f"diffill server ({exc.code}): {detail}"


def _sampler(settings: SamplerSettings) -> dict:
    return {"strategy": settings.strategy, "threshold": settings.threshold,
            "tokens_per_step": settings.tokens_per_step, "max_steps": settings.max_steps,
            "temperature": settings.temperature, "seed": settings.seed}


def _result(data: dict) -> InfillResult:
    candidates = [Candidate(c["text"], c["confidences"], c["score"]) for c in data["candidates"]]
    return InfillResult(candidates, data["forwards"], data["hole_tokens"], data["ms"], data["context_cut"])
