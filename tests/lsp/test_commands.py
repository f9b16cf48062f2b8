"""Code actions for clients that cannot resolve them (eglot 1.9): each action comes as a
command, run with workspace/executeCommand.  The command is answered before the model is
done; the edit follows as workspace/applyEdit, with $/progress meanwhile; and every
action's model work stays within the bounds the settings set (tokens, steps, seconds).
Raw JSON-RPC on the real server's stdin, so the order of what it writes is what we see."""

from __future__ import annotations

import queue
import time

import pytest

from tests.lsp.harness import SOURCE, RawServer

URI = "file:///commands.py"
TODO = {"line": 14, "character": 4}  # `pass` in todo()
# No resolveSupport, as eglot 1.9 (it does take CodeAction literals and show progress).
EGLOT_CAPABILITIES = {
    "textDocument": {"codeAction": {"codeActionLiteralSupport": {
        "codeActionKind": {"valueSet": ["quickfix", "refactor", "refactor.rewrite"]}}}},
    "workspace": {"applyEdit": True}, "window": {"workDoneProgress": True}}
# One 160-token row at one token a step: ~160 steps, still running when we act.
LONG_WORK = {"maxHoleTokens": 128, "lengths": [160], "threshold": 1.0, "actionMaxSteps": 400}


def start(raw: RawServer, options: dict) -> None:
    raw.request(0, "initialize", {"processId": None, "rootUri": None, "capabilities": EGLOT_CAPABILITIES,
                                  "initializationOptions": options})
    assert "result" in raw.responses({0})[0]
    raw.notify("initialized", {})
    raw.until(lambda m: m.get("method") == "diffill/status" and m["params"]["state"] == "ready")
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                         "text": SOURCE}})


def fill_body_command(raw: RawServer) -> dict:
    """The command eglot would run for "Fill in body", as the server offers it."""
    raw.request("actions", "textDocument/codeAction", {"textDocument": {"uri": URI},
                                                       "range": {"start": TODO, "end": TODO}, "context": {"diagnostics": []}})
    actions = raw.responses({"actions"})["actions"]["result"]
    [action] = [a for a in actions if a["title"] == "diffill: Fill in body"]
    assert "edit" not in action and "data" not in action  # nothing to resolve: a command
    return action["command"]


def events_until(raw: RawServer, done, timeout: float = 120.0) -> list[dict]:
    """Every message the server sends until `done(message)`; the limit only stops a hang."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        try:
            msg = raw.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"waited {timeout:.0f} s; saw {[m.get('method', m.get('id')) for m in seen]}; messages: "
                        f"{[m['params']['message'] for m in seen if m.get('method') == 'window/showMessage']}")
        seen.append(msg)
        if done(msg):
            return seen


def kind_of(msg: dict) -> str | None:
    if msg.get("method") == "$/progress":
        return msg["params"]["value"]["kind"]
    return None


@pytest.fixture
def raw():
    server = RawServer()
    yield server
    server.kill()


def test_a_command_is_answered_before_the_model_is_done_and_its_edit_follows(raw: RawServer):
    start(raw, {**LONG_WORK, "commandReplyMs": 0})
    command = fill_body_command(raw)
    raw.request("run", "workspace/executeCommand", {"command": command["command"], "arguments": command["arguments"]})
    seen = events_until(raw, lambda m: m.get("method") == "workspace/applyEdit")
    order = [("answer" if m.get("id") == "run" and "method" not in m else kind_of(m) or m.get("method")) for m in seen]
    assert "answer" in order, order
    answered = order.index("answer")
    assert seen[answered] == {"jsonrpc": "2.0", "id": "run", "result": None}
    # while the model works the client sees progress, after the answer: it is not left waiting
    assert "report" in order[answered:], order
    assert order.index("end") > answered, order
    [edit] = seen[-1]["params"]["edit"]["changes"][URI]
    assert edit["range"]["start"]["line"] == 14


def test_a_command_that_finishes_quickly_still_applies_its_edit_before_answering(raw: RawServer):
    start(raw, {"maxHoleTokens": 8})  # default commandReplyMs: a quick action answers when done
    command = fill_body_command(raw)
    raw.request("run", "workspace/executeCommand", {"command": command["command"], "arguments": command["arguments"]})
    seen = events_until(raw, lambda m: m.get("id") == "run" and "method" not in m)
    assert any(m.get("method") == "workspace/applyEdit" for m in seen)


def test_an_action_past_its_time_limit_stops_and_says_so(raw: RawServer):
    start(raw, {**LONG_WORK, "actionTimeoutMs": 300, "commandReplyMs": 0})
    command = fill_body_command(raw)
    raw.request("run", "workspace/executeCommand", {"command": command["command"], "arguments": command["arguments"]})
    seen = events_until(raw, lambda m: m.get("method") == "window/showMessage"
                        and "diffill.actionTimeoutMs" in m["params"]["message"])
    assert not any(m.get("method") == "workspace/applyEdit" for m in seen)
    raw.request("status", "workspace/executeCommand", {"command": "diffill.status", "arguments": []})
    assert raw.responses({"status"})["status"]["result"]["state"] == "ready"  # not stuck "busy"


def test_an_actions_model_steps_are_capped_by_the_setting(raw: RawServer):
    # threshold 1.0 commits one token a step: a long body would take ~160 steps (~19
    # progress reports); capped at 2 steps, each candidate reports at most twice.
    start(raw, {**LONG_WORK, "actionMaxSteps": 2})
    command = fill_body_command(raw)
    raw.request("run", "workspace/executeCommand", {"command": command["command"], "arguments": command["arguments"]})
    seen = events_until(raw, lambda m: m.get("method") == "workspace/applyEdit")
    reports = [m for m in seen if kind_of(m) == "report"]
    assert 1 <= len(reports) <= 4, [m["params"]["value"] for m in reports]


def test_cancelling_an_answered_commands_progress_stops_it(raw: RawServer):
    start(raw, {**LONG_WORK, "commandReplyMs": 0})
    command = fill_body_command(raw)
    raw.request("run", "workspace/executeCommand", {"command": command["command"], "arguments": command["arguments"]})
    seen = events_until(raw, lambda m: kind_of(m) == "report")
    assert any(m.get("id") == "run" and "method" not in m for m in seen)  # answered already
    raw.notify("window/workDoneProgress/cancel", {"token": seen[-1]["params"]["token"]})
    seen = events_until(raw, lambda m: kind_of(m) == "end")
    assert not any(m.get("method") == "workspace/applyEdit" for m in seen)
