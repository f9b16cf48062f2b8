"""The transport: `--tcp HOST:PORT`, the command line's errors, and framing faults on stdio
(wrong Content-Length, bodies that are not JSON or not JSON-RPC) sent as raw bytes."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.protocol import FrameReader
from tests.lsp.harness import SERVER_COMMAND, RawServer, server_env


def test_tcp_transport():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*SERVER_COMMAND, "--tcp", f"127.0.0.1:{port}"], env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not listen")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = b""
        while b"inlineCompletionProvider" not in data:
            chunk = conn.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        conn.close()
    finally:
        proc.kill()
        proc.wait()


def test_bad_tcp_address_is_a_clear_error():
    proc = subprocess.run([*SERVER_COMMAND, "--tcp", "nope"], env=server_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr


# -- framing faults, as raw bytes on stdin ----------------------------------------------------


def status_request(msg_id) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "workspace/executeCommand",
            "params": {"command": "diffill.status", "arguments": []}}


@pytest.fixture
def raw():
    server = RawServer()
    server.initialize()
    yield server
    server.kill()


@pytest.mark.parametrize("error", [-10, +40], ids=["10-bytes-short", "40-bytes-long"])
def test_a_wrong_content_length_loses_at_most_that_message(raw: RawServer, error: int):
    body = json.dumps(status_request("bad")).encode()
    raw.send(body, length=len(body) + error)
    for i in range(6):
        raw.send(status_request(i))
    answered = raw.responses(set(range(6)))
    assert set(answered) >= set(range(6)), f"answered only {sorted(map(str, answered))}"
    assert all(answered[i]["result"]["state"] for i in range(6))


def test_a_body_that_is_not_json_gets_a_parse_error(raw: RawServer):
    raw.send(b'{"jsonrpc": "2.0", "id": 1, "method": ')
    error = raw.responses({None})[None]["error"]
    assert error["code"] == -32700
    raw.send(b"\xff\xfe not utf-8")
    assert raw.responses({None})[None]["error"]["code"] == -32700
    raw.send(status_request(2))
    assert "result" in raw.responses({2})[2]


@pytest.mark.parametrize("message", [[status_request(1)], 42, "text", None,
                                     {"jsonrpc": "2.0", "id": {"an": "object"}, "method": "shutdown"},
                                     {"id": 7, "method": "shutdown"}],
                         ids=["array", "number", "string", "null", "object-id", "no-jsonrpc"])
def test_a_message_that_is_not_a_request_object_gets_invalid_request(raw: RawServer, message):
    raw.send(message)
    answer = raw.until(lambda m: "method" not in m)
    assert answer["error"]["code"] == -32600 and answer["id"] in (None, 7)
    raw.send(status_request(2))
    assert "result" in raw.responses({2})[2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=30))
def test_frames_come_out_whole_however_the_bytes_are_split(cuts: list[int]):
    bodies = [json.dumps(status_request(i)).encode() for i in range(5)] + [b'{"text": "\\r\\n\\u00e9"}']
    stream = b"".join(RawServer.frame(b) for b in bodies[:3]) + b"Content-Type: x\r\n" + b"".join(
        RawServer.frame(b) for b in bodies[3:])
    reader, out, at = FrameReader(), [], 0
    for cut in cuts:
        out += reader.feed(stream[at : at + cut])
        at += cut
    out += reader.feed(stream[at:])
    assert out == bodies


# -- ill-typed numbers and ids (issue 14.9) ----------------------------------------------------


@pytest.mark.parametrize("line", [1.5, True, "1"], ids=["float", "bool", "string"])
def test_a_line_that_is_not_an_integer_is_invalid_params(raw: RawServer, line):
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///n.py", "languageId": "python",
                                                         "version": 1, "text": "def area(r):\n    return r\n"}})
    raw.request(1, "textDocument/prepareRename", {"textDocument": {"uri": "file:///n.py"},
                                                  "position": {"line": line, "character": 5}})
    # 1.0 is how some JSON writers spell 1: it still names line 1 (`r` in `return r`)
    raw.request(2, "textDocument/prepareRename", {"textDocument": {"uri": "file:///n.py"},
                                                  "position": {"line": 1.0, "character": 11}})
    answers = raw.responses({1, 2})
    assert answers[1]["error"]["code"] == -32602, answers[1]
    assert answers[2]["result"]["placeholder"] == "r", answers[2]


@pytest.mark.parametrize("msg_id", [{"an": "object"}, [1], 1.5], ids=["object", "array", "float"])
def test_a_request_id_that_is_not_a_string_or_integer_is_invalid_request(raw: RawServer, msg_id):
    raw.send(status_request(msg_id))
    answer = raw.until(lambda m: "method" not in m)
    assert answer == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": answer["error"]["message"]}}
    raw.send(status_request(2))
    assert "result" in raw.responses({2})[2]
