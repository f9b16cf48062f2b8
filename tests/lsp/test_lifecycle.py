"""shutdown and exit against the real server, as raw JSON-RPC on its stdin: in-flight model
work at shutdown, requests after it, and how fast (and how quietly) the process ends."""

from __future__ import annotations

import pytest

from tests.lsp.harness import SOURCE, RawServer

URI = "file:///lifecycle.py"
LONG_WORK = {"maxHoleTokens": 400, "threshold": 1.0}  # ~400 denoising steps: still running when we act


def ready(msg: dict) -> bool:
    return msg.get("method") == "diffill/status" and msg["params"]["state"] == "ready"


def progress_report(msg: dict) -> bool:
    return msg.get("method") == "$/progress" and msg["params"]["value"]["kind"] == "report"


def inline_request(raw: RawServer, msg_id, token: str | None = None) -> None:
    raw.request(msg_id, "textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 14, "character": 4},
        "context": {"triggerKind": 1}, **({"workDoneToken": token} if token else {})})


@pytest.fixture
def raw():
    server = RawServer()
    yield server
    server.kill()


def start_model_work(raw: RawServer) -> None:
    """A ready server with an inline request (id "inline"), a rewrite resolving (id "rewrite")
    and a fill-body command (id "command") all on the model or queued for it."""
    raw.initialize(LONG_WORK)
    raw.until(ready)
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                         "text": SOURCE}})
    inline_request(raw, "inline", token="tok")
    raw.until(progress_report)  # the model is denoising now
    data = {"uri": URI, "version": 1, "action": "rewrite", "start": SOURCE.index("def describe"),
            "end": SOURCE.index("def todo")}
    raw.request("rewrite", "codeAction/resolve", {"title": "rewrite", "data": data})
    raw.request("command", "workspace/executeCommand", {
        "command": "diffill.fillBody", "arguments": [URI, {"line": 14, "character": 4}]})


def test_shutdown_with_model_work_in_flight_answers_null_and_cancels_it(raw: RawServer):
    start_model_work(raw)
    raw.request("bye", "shutdown")
    answers = raw.responses({"bye", "inline", "rewrite", "command"})
    assert answers["bye"] == {"jsonrpc": "2.0", "id": "bye", "result": None}
    for msg_id in ("inline", "rewrite", "command"):  # each answered, none with an internal error
        assert msg_id in answers, f"{msg_id} was never answered"
        assert answers[msg_id].get("error", {}).get("code") != -32603, answers[msg_id]
    raw.notify("exit")
    assert raw.wait_exit()[0] == 0


def test_requests_after_shutdown_are_invalid_requests(raw: RawServer):
    raw.initialize()
    raw.request(1, "shutdown")
    raw.responses({1})
    raw.request(2, "workspace/executeCommand", {"command": "diffill.status", "arguments": []})
    inline_request(raw, 3)
    answers = raw.responses({2, 3})
    assert [answers[i]["error"]["code"] for i in (2, 3)] == [-32600, -32600]


@pytest.mark.parametrize("how", ["exit", "stdin-closed"])
def test_the_process_ends_within_a_second_after_shutdown(how: str):
    # The bundled model, and no waiting: the model is still loading (torch import, weights)
    # when the client leaves, which Python's exit used to wait for (9-10 s on a slow host).
    raw = RawServer(model=None)
    try:
        raw.initialize()
        raw.request(1, "shutdown")
        raw.responses({1})
        if how == "exit":
            raw.notify("exit")
        else:
            raw.proc.stdin.close()
        rc, seconds = raw.wait_exit()
        assert rc == 0 and seconds < 1.0, f"exit code {rc} after {seconds:.2f} s"
    finally:
        raw.kill()


def test_exit_without_shutdown_during_an_inline_request_exits_1_and_quietly(raw: RawServer):
    raw.initialize(LONG_WORK)
    raw.until(ready)
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                         "text": SOURCE}})
    inline_request(raw, 1, token="tok")
    raw.until(progress_report)
    raw.notify("exit")
    rc, seconds = raw.wait_exit()
    assert rc == 1 and seconds < 1.0, f"exit code {rc} after {seconds:.2f} s"
    assert b"Traceback" not in raw.stderr and b"closed file" not in raw.stderr, raw.stderr[-2000:]
