"""The HTTP API against a live server: httpx and the openai client over loopback."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import threading
import time

import httpx
import openai
import pytest

from http_server.app import create_app
from http_server.config import ServeConfig
from http_server.hole_batch import ContextBatch, HoleLoop, forward_holes
from http_server.live import LiveServer
from infill_engine.engine import Engine
from infill_engine.request import InfillRequest, SamplerSettings

from .conftest import TOKEN, live

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# An outer limit for answers, generous: a busy 2-core machine is slow, and the tests wait on
# answers, not on a clock.
WAIT = 120
FUNC = "def add(a, b):\n    return "
# A long request on the tiny model: one token per forward, a few seconds in all.
SLOW = {"prefix": "x = ", "length": 300, "sampler": {"strategy": "confidence"}}


def events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_infill_fills_the_hole(server, bundled):
    r = httpx.post(f"{server.url}/v1/infill", json={"prefix": FUNC, "suffix": "\n", "max_tokens": 24}, headers=AUTH, timeout=WAIT)
    assert r.status_code == 200
    body = r.json()
    alone = bundled.infill(InfillRequest(FUNC, "\n", max_length=24))
    assert body["text"] == alone.text and body["forwards"] == alone.forwards
    assert 1 <= body["tokens"] <= 24 and body["ms"] > 0


def test_stream_sends_each_step_then_the_text(server):
    r = httpx.post(f"{server.url}/v1/infill", headers=AUTH,
                   json={"prefix": FUNC, "suffix": "\n", "length": 12, "stream": True,
                         "sampler": {"strategy": "confidence"}}, timeout=WAIT)
    assert r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    steps = [data for kind, data in got if kind == "step"]
    kind, done = got[-1]
    assert kind == "done" and len(steps) == done["forwards"] == 12  # one token per step
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert steps[0]["text"].count("\u2591") == 11 and "\u2591" not in steps[-1]["text"]
    assert steps[-1]["text"] == done["text"]


def test_openai_client_speaks_fill_in_the_middle(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
    [model] = client.models.list().data
    done = client.completions.create(model=model.id, prompt=FUNC, suffix="\n", max_tokens=24)
    direct = httpx.post(f"{server.url}/v1/infill", json={"prefix": FUNC, "suffix": "\n", "max_tokens": 24},
                        headers=AUTH, timeout=WAIT).json()
    assert done.choices[0].text == direct["text"]
    assert done.usage.completion_tokens == direct["tokens"]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model.id, prompt=FUNC, suffix="\n", max_tokens=24, stream=True))
    assert streamed == direct["text"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_bearer_token_guards_everything_but_health(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.get(f"{server.url}/metrics", headers=headers, timeout=WAIT)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(f"{server.url}/v1/infill", json={"prefix": "x"}).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=AUTH).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"prefix": "x", "max_tokens": "many"}, "max_tokens"),
    ({"prefix": "x", "max_tokens": 100_000}, "max_tokens"),
    ({"prefix": "x", "length": 0}, "length"),
    ({"prefix": "x", "sampler": {"threshold": 2}}, "threshold"),
    ({"prefix": "x", "temprature": 1}, "temprature"),
    ({"suffix": "x"}, "prefix"),
])
def test_bad_fields_are_422_naming_the_field(server, body, field):
    r = httpx.post(f"{server.url}/v1/infill", json=body, headers=AUTH, timeout=WAIT)
    assert r.status_code == 422
    assert any(err["loc"][-1] == field for err in r.json()["detail"]), r.json()


def test_invalid_json_is_422_and_a_huge_body_413(server):
    r = httpx.post(f"{server.url}/v1/infill", content=b"{not json", headers={**AUTH, "content-type": "application/json"}, timeout=WAIT)
    assert r.status_code == 422
    r = httpx.post(f"{server.url}/v1/infill", json={"prefix": "x" * 100_000}, headers=AUTH, timeout=WAIT)
    assert r.status_code == 413


def test_metrics_are_prometheus_text(server):
    httpx.post(f"{server.url}/v1/infill", json={"prefix": FUNC, "max_tokens": 8}, headers=AUTH, timeout=WAIT)
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert metric(text, 'diffill_requests_total{endpoint="/v1/infill",status="200"}') >= 1
    assert metric(text, 'diffill_errors_total{kind="auth"}') >= 0
    for name in ("diffill_request_seconds_bucket", "diffill_tokens_per_forward_count", "diffill_batch_size_count",
                 "diffill_queue_depth"):
        assert name in text


async def _post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        return await asyncio.gather(*(client.post(f"{url}/v1/infill", json=b) for b in bodies))


def test_concurrent_requests_share_forwards_and_get_their_own_answers(bundled):
    prefixes = [FUNC, "import os\n", "class Point:\n    def __init__(self, x, y):\n        ", "for i in range("]
    # One row a request (the model settles each length), so the batch is about requests, not lengths.
    bodies = [{"prefix": p, "suffix": "\n", "max_tokens": 16 + 4 * i, "lengths": []} for i, p in enumerate(prefixes)] * 2
    with live(bundled, max_batch=8) as server:
        answers = asyncio.run(_post_all(server.url, bodies))
        text = httpx.get(f"{server.url}/metrics").text
    for body, r in zip(bodies, answers):
        alone = bundled.infill(InfillRequest(body["prefix"], "\n", max_length=body["max_tokens"], lengths=()))
        assert r.json()["text"] == alone.text
    forwards, requests_in_forwards = metric(text, "diffill_batch_size_count"), metric(text, "diffill_batch_size_sum")
    assert requests_in_forwards / forwards > 1.5  # most forwards carried several requests


def test_batched_loops_match_lone_requests_with_tied_holes_and_candidates(bundled):
    reqs = [InfillRequest(FUNC, "\n"), InfillRequest("x = 1\n", "", length=7),
            InfillRequest("", "print(1)\n", max_length=20),
            InfillRequest("import os\n", "\n", candidates=3, max_length=16),
            InfillRequest("def ", "(n):\n    return n\n\nprint(", between=("(3)\n", ), length=3)]
    loops = [HoleLoop(bundled, r) for r in reqs]
    active = list(loops)
    while active:
        for loop, logits in zip(active, forward_holes(bundled.backend, active, ContextBatch(active))):
            loop.advance(logits)
        active = [loop for loop in active if not loop.done]
    for req, loop in zip(reqs, loops):
        alone, batched = bundled.infill(req), loop.result()
        assert [c.text for c in batched.candidates] == [c.text for c in alone.candidates]
        assert batched.forwards == alone.forwards


def test_full_queue_is_503_with_retry_after(tiny):
    with live(tiny, max_batch=1, max_queue=1, timeout_s=30) as server:
        bodies = [{**SLOW, "length": 60, "stream": n % 2 == 1} for n in range(6)]  # a stream is refused the same way
        answers = asyncio.run(_post_all(server.url, bodies))
    codes = sorted(r.status_code for r in answers)
    # One in the queue, plus one running if the model thread took the first before the rest came.
    assert 1 <= codes.count(200) <= 2 and codes.count(503) >= 4 and set(codes) <= {200, 503}
    assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 503)
    assert any(r.status_code == 503 for r, b in zip(answers, bodies) if b["stream"])


def test_a_slow_request_times_out_with_504(tiny):
    with live(tiny, timeout_s=0.3) as server:
        t0 = time.monotonic()
        r = httpx.post(f"{server.url}/v1/infill", json=SLOW, timeout=30)
        assert r.status_code == 504 and time.monotonic() - t0 < 5


def test_a_client_that_leaves_stops_its_denoising_loop(tiny):
    # One request at a time: if the abandoned loop ran on, the next request would wait seconds for it.
    with live(tiny, max_batch=1) as server:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(f"{server.url}/v1/infill", json=SLOW, timeout=httpx.Timeout(30, read=0.5))
        _assert_model_free(server.url)


def test_a_stream_reader_that_leaves_stops_its_denoising_loop(tiny):
    with live(tiny, max_batch=1) as server:
        with httpx.stream("POST", f"{server.url}/v1/infill", json={**SLOW, "stream": True}, timeout=30) as r:
            first = next(r.iter_text())
        assert first.startswith("event: step")
        _assert_model_free(server.url)


def _assert_model_free(url: str) -> None:
    # The abandoned loop was cancelled (not run to its end), and the model answers the next one.
    r = httpx.post(f"{url}/v1/infill", json={"prefix": "x = ", "length": 4}, timeout=WAIT)
    assert r.status_code == 200
    errors = metric(httpx.get(f"{url}/metrics", timeout=WAIT).text, 'diffill_errors_total{kind="cancelled"}')
    assert errors == 1


def test_tls_through_uvicorns_options(tiny, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with LiveServer(create_app(tiny, ServeConfig()), ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        assert server.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{server.url}/health", verify=trusted).json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused, so TLS is really on
            httpx.get(f"{server.url}/health", timeout=WAIT)


def test_tokens_come_from_a_file_and_the_environment(tmp_path):
    from http_server.config import TOKENS_ENV, load_tokens

    path = tmp_path / "tokens"
    path.write_text("# editors of team A\nalpha\n\nbeta  # laptop\n")
    assert load_tokens(str(path), {TOKENS_ENV: "gamma, delta"}) == {"alpha", "beta", "gamma", "delta"}
    assert load_tokens(None, {}) == frozenset()


def test_serve_binds_loopback_unless_told():
    from http_server.cli import build_parser, config_from

    assert config_from(build_parser().parse_args(["--http", ":8000"])).host == "127.0.0.1"
    assert config_from(build_parser().parse_args(["--http", "0.0.0.0:8000"])).host == "0.0.0.0"


def test_bench_http_prints_both_modes_side_by_side(capsys):
    from lsp_server.cli import main

    assert main(["bench", "--http", "--model", "tiny-random", "--threads", "1", "--clients", "1,2",
                 "--requests", "2", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^batching (off|on)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert sorted((mode, int(c)) for mode, c, *_ in rows) == [("off", 1), ("off", 2), ("on", 1), ("on", 2)]
    assert all(float(rps) > 0 and int(p50) <= int(p95) for *_, rps, p50, p95 in rows)
    assert "batching on / off at 2 clients" in out


@pytest.mark.parametrize("cache_block", [None, 2])
def test_a_checkpoint_batches_concurrent_requests(tmp_path, cache_block):
    """cache_block: each loop's context computed again every 2 commits, the batch padding it in again."""
    from tests.engine.test_hf_backends import write_dream

    write_dream(tmp_path / "Dream-v0-Base-7B")
    engine = Engine.load(str(tmp_path / "Dream-v0-Base-7B"), approximate_cache=True, cache_block=cache_block)
    confidence = SamplerSettings(strategy="confidence")
    bodies = [{"prefix": "def add(a, b):\n    return ", "suffix": "\n", "length": 5},
              {"prefix": "x = 1\n", "suffix": "print(x)\n", "max_tokens": 6, "lengths": [2, 6]}]
    with live(engine) as server:
        assert httpx.get(f"{server.url}/health").json()["batching"] is True
        answers = asyncio.run(_post_all(server.url, [{**b, "sampler": {"strategy": "confidence"}}
                                                     for b in bodies * 2]))
    alone = [engine.infill(InfillRequest(bodies[0]["prefix"], "\n", length=5, sampler=confidence)),
             engine.infill(InfillRequest("x = 1\n", "print(x)\n", max_length=6, lengths=(2, 6), sampler=confidence))]
    assert [r.json()["text"] for r in answers] == [a.text for a in alone] * 2


def test_a_checkpoint_that_cannot_batch_is_served_one_request_at_a_time(tmp_path):
    from tests.engine.test_hf_backends import write_dream

    write_dream(tmp_path / "DreamOn-v0-7B", expand=True, delete=True)  # its holes resize: never batched
    engine = Engine.load(str(tmp_path / "DreamOn-v0-7B"))
    body = {"prefix": "def add(a, b):\n    return ", "suffix": "\n", "length": 5, "sampler": {"strategy": "confidence"}}
    with live(engine, timeout_s=0.5) as server:
        assert httpx.get(f"{server.url}/health").json()["batching"] is False
        answers = asyncio.run(_post_all(server.url, [body] * 3))
        t0 = time.monotonic()
        slow = httpx.post(f"{server.url}/v1/infill", json={**body, "length": 1500}, timeout=30)  # seconds of forwards
        assert slow.status_code == 504 and time.monotonic() - t0 < 3  # stopped at the deadline, mid-loop
    alone = engine.infill(InfillRequest(body["prefix"], "\n", length=5, sampler=SamplerSettings(strategy="confidence")))
    assert [r.json()["text"] for r in answers] == [alone.text] * 3


def test_a_short_hole_leaves_the_batch_while_a_long_one_runs_on(tiny):
    from http_server.batcher import Batcher

    batcher = Batcher(tiny, max_batch=4)
    try:
        one_by_one = SamplerSettings(strategy="confidence")
        started = threading.Event()
        long = batcher.submit(InfillRequest("x = ", length=80, sampler=one_by_one,
                                            on_step=lambda step, texts: started.set()), timeout_s=60)
        assert started.wait(10)  # the long one is under way: the short one joins it mid-loop
        short = batcher.submit(InfillRequest("y = ", length=3, sampler=one_by_one), timeout_s=60)
        assert short.result(timeout=10).forwards == 3
        assert not long.done()  # the short hole left; the long one is still denoising
        assert long.result(timeout=60).forwards == 80
        sizes = {s.labels.get("le"): s.value for s in batcher.metrics.batch_size.collect()[0].samples
                 if s.name.endswith("_bucket")}
        assert sizes["1.0"] < sizes["2.0"]  # some forwards carried both
    finally:
        batcher.close()
