"""The language server as a client of a live `diffill serve --http` (diffill.server.url + token).

The HTTP server runs as the real console command in a subprocess; the language server is
pytest-lsp's subprocess with DIFFILL_MODEL pointing nowhere, so any suggestion it gives
came from the HTTP server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from lsp_server.remote_engine import RemoteEngine
from infill_engine.request import InfillCancelled, InfillError, InfillRequest, SamplerSettings
from tests import REPO
from tests.http.conftest import free_port
from tests.lsp.harness import (SERVER_COMMAND, SOURCE, capabilities, edits_for, make_client, open_doc, position_of,
                               server_env)

TOKEN = "team-token"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """`python -m lsp_server.cli serve --http` (tiny random model), bearer token from a file."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"# the team's tokens\n{TOKEN}\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server.cli", "serve", "--http", f"127.0.0.1:{port}",
                             "--model", "tiny-random", "--token-file", str(tokens), "--threads", "1",
                             "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"diffill serve --http did not start: {proc.stderr.read()}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def server_metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_remote_engine_speaks_the_engine_contract(http_server):
    engine = RemoteEngine(http_server, TOKEN)
    assert engine.is_random and http_server in engine.name
    seen: list[float] = []
    result = engine.infill(InfillRequest("def f(x):\n    return ", "\n", length=6, progress=seen.append,
                                         sampler=SamplerSettings(strategy="confidence")))
    assert result.forwards == 6 and len(result.candidates[0].token_confidences) == 6
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 6
    assert len(engine.score("x = ", "1 + 2", "\n")) >= 3
    assert engine.repair("x = ", "1 + 2", "\n").hole_tokens >= 3
    assert engine.count_tokens("def f(x): pass") > 3
    with pytest.raises(InfillError, match="token"):
        RemoteEngine(http_server, "wrong").infill(InfillRequest("x"))
    with pytest.raises(InfillError, match="cannot reach"):
        RemoteEngine(f"http://127.0.0.1:{free_port()}")


def test_remote_engine_cancel_stops_the_server_loop(http_server):
    engine = RemoteEngine(http_server, TOKEN)
    before = server_metric(http_server, 'diffill_errors_total{kind="cancelled"}')
    t0 = time.monotonic()
    steps: list[int] = []
    req = InfillRequest("x = ", length=300, sampler=SamplerSettings(strategy="confidence"),
                        on_step=lambda step, texts: steps.append(step), cancel=lambda: len(steps) >= 3)
    with pytest.raises(InfillCancelled):
        engine.infill(req)
    assert time.monotonic() - t0 < 5
    deadline = time.monotonic() + 5
    while server_metric(http_server, 'diffill_errors_total{kind="cancelled"}') <= before:
        assert time.monotonic() < deadline, "the server never stopped the abandoned loop"
        time.sleep(0.05)


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=SERVER_COMMAND, server_env=server_env("/nonexistent/model"), client_factory=make_client))
async def lsp(lsp_client: LanguageClient, http_server):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities(),
        initialization_options={"maxHoleTokens": 8, "server": {"url": http_server, "token": TOKEN}}))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_lsp_completes_and_acts_through_the_http_server(lsp: LanguageClient, http_server):
    before = server_metric(http_server, 'diffill_requests_total{endpoint="/v1/infill",status="200"}')
    uri = "file:///remote.py"
    open_doc(lsp, uri, SOURCE)
    result = await lsp.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=position_of(SOURCE, "radius ** 2"),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert result.items, lsp.log_messages
    status = await lsp.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
    assert http_server in status["model"]
    cursor = position_of(SOURCE, "pass")
    actions = await lsp.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=cursor, end=cursor),
        context=types.CodeActionContext(diagnostics=[])))
    fill = next(a for a in actions if a.title == "diffill: Fill in body")
    resolved = await lsp.code_action_resolve_async(fill)
    assert edits_for(resolved.edit, uri)
    after = server_metric(http_server, 'diffill_requests_total{endpoint="/v1/infill",status="200"}')
    assert after >= before + 2


def test_server_settings_are_checked_and_change_the_engine():
    from lsp_server.settings import Server, Settings, merge_settings

    new, problems = merge_settings(Settings(), {"server": {"url": "http://gpu-box:8000", "token": "t"}})
    assert (new.server, problems) == (Server("http://gpu-box:8000", "t"), [])
    assert new.engine_key() != Settings().engine_key()  # pointing at a server means another engine
    # VS Code sends its launcher keys under diffill.server too: not errors
    kept, problems = merge_settings(new, {"server": {"url": "gpu-box:8000", "command": ["diffill", "serve"]}})
    assert kept.server.url == "http://gpu-box:8000"
    assert len(problems) == 1 and "diffill.server.url" in problems[0]
    off, _ = merge_settings(new, {"server": {"url": ""}})
    assert off.server.url is None
