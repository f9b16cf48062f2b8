"""A didChange storm (issue 14.5): a client that sends changes faster than anyone types, with
inline requests among them.  The server must read them as fast as they come (>= 1,000/s),
stay at the same memory however long the storm, and answer the next inline request in
its normal time, for the newest version only.  Bounded: 4 x 1,000 changes on a pipe."""

from __future__ import annotations

import time

import pytest

from tests.lsp.harness import RawServer

URI = "file:///storm.py"
LINE = 3  # the storm types on this (initially empty) line
TEXT = "import math\n\n\n\n\ndef area(r):\n    return math.pi * r * r\n"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def change(version: int, column: int) -> dict:
    at = {"line": LINE, "character": column}
    return {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
        "textDocument": {"uri": URI, "version": version}, "contentChanges": [{"range": {"start": at, "end": at}, "text": "x"}]}}


def inline(msg_id, column: int) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion", "params": {
        "textDocument": {"uri": URI}, "position": {"line": LINE, "character": column},
        "context": {"triggerKind": 2}, "workDoneToken": f"tok-{msg_id}"}}


@pytest.fixture
def raw():
    server = RawServer()
    server.initialize({"maxHoleTokens": 8})
    server.until(lambda m: m.get("method") == "diffill/status" and m["params"]["state"] == "ready")
    server.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                            "text": TEXT}})
    yield server
    server.kill()


def timed_inline(raw: RawServer, msg_id, column: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    raw.send(inline(msg_id, column))
    answer = raw.responses({msg_id})[msg_id]
    return time.perf_counter() - t0, answer


def test_a_didchange_storm_is_absorbed_and_the_next_suggestion_is_on_time(raw: RawServer):
    # the normal latency: a few cold requests (each at a new place, so no cache) before the storm
    column = 0
    normal = []
    for i in range(3):
        raw.send(change(2 + i, i))
        column += 1
        normal.append(timed_inline(raw, f"before-{i}", column)[0])
    version = 2 + len(normal)

    rates, rss = [], []
    for storm in range(4):
        frames = []
        for i in range(1000):
            frames.append(RawServer.frame(change(version, column)))
            version, column = version + 1, column + 1
            if i % 10 == 9:  # a client asking for a suggestion every 10 keystrokes
                frames.append(RawServer.frame(inline(f"storm-{storm}-{i}", column)))
        t0 = time.perf_counter()
        raw.write(b"".join(frames))
        raw.request(f"barrier-{storm}", "workspace/executeCommand", {"command": "diffill.status", "arguments": []})
        raw.responses({f"barrier-{storm}"})  # answered in order: every change before it was read
        rates.append(1000 / (time.perf_counter() - t0))
        rss.append(rss_kb(raw.proc.pid))

    after, answer = timed_inline(raw, "after", column)
    print(f"absorbed {', '.join(f'{r:,.0f}' for r in rates)} changes/s; RSS {rss} kB; "
          f"inline normal {max(normal) * 1000:.0f} ms, after the storm {after * 1000:.0f} ms")
    assert min(rates) >= 250, rates  # target 1,000/s (a margin for a loaded host); the issue saw 28/s
    assert rss[-1] - rss[0] < 20_000, rss  # flat: the 3 later storms (3,000 changes) add < 20 MB
    assert after <= max(1.0, 5 * max(normal)), (after, normal)
    # served for the newest version: the suggestion starts where the cursor is now
    for item in answer["result"]["items"]:
        assert item["range"]["start"] == {"line": LINE, "character": column}


def test_suggestion_requests_made_stale_by_a_later_change_are_answered_without_the_model(raw: RawServer):
    # Sent together, as a client that fell behind sends them: each inline request is followed
    # by a change to its document, so only the last one is for text that still exists.
    frames, column = [], 0
    for i in range(50):
        frames += [RawServer.frame(change(2 + i, column)), RawServer.frame(inline(f"stale-{i}", column + 1))]
        column += 1
    raw.write(b"".join(frames))
    answers, begun = {}, set()  # "tok-<id>" progress begins only where the model ran

    def record(msg: dict) -> bool:
        if msg.get("method") == "$/progress" and msg["params"]["value"]["kind"] == "begin":
            begun.add(msg["params"]["token"])
        elif "method" not in msg:
            answers[msg["id"]] = msg
        return len(answers) == 50

    raw.until(record)
    stale_run = [i for i in range(49) if f"tok-stale-{i}" in begun]
    print(f"stale requests that reached the model: {len(stale_run)} of 49")
    # main ran (or queued) the model for every one; pipe reads may split the batch, and a
    # request read last in its chunk is not known stale yet
    assert len(stale_run) <= 10, stale_run
    assert all(answers[f"stale-{i}"]["result"]["items"] == [] for i in range(49) if i not in stale_run)
