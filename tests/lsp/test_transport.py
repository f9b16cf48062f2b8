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


class TcpClient:
    """One editor on a socket: requests out, answers (by id) back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)  # a limit for hangs only
        self.frames = FrameReader()
        self.pending: list[dict] = []

    def request(self, msg_id, method: str, params=None) -> None:
        self.sock.sendall(RawServer.frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}))

    def notify(self, method: str, params=None) -> None:
        self.sock.sendall(RawServer.frame({"jsonrpc": "2.0", "method": method, "params": params}))

    def answer(self, msg_id) -> dict:
        while True:
            for msg in self.pending:
                if msg.get("id") == msg_id and "method" not in msg:
                    return msg
            data = self.sock.recv(65536)
            assert data, f"the server closed the connection before answering {msg_id}; got {self.pending}"
            self.pending += [json.loads(b) for b in self.frames.feed(data)]

    def initialize(self) -> dict:
        self.request(0, "initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        return self.answer(0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tcp_server():
    """`diffill serve --tcp` on a free loopback port, at most 2 clients; yields its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*SERVER_COMMAND, "--tcp", f"127.0.0.1:{port}", "--max-clients", "2"], env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while b"listening on" not in seen:  # the listener says so once it listens: no polling
        line = proc.stderr.readline()
        assert line, f"the server did not listen: {seen.decode(errors='replace')}"
        seen += line
    yield port
    proc.terminate()
    proc.wait(60)


def test_tcp_serves_each_client_its_own_session(tcp_server: int):
    first, second = TcpClient(tcp_server), TcpClient(tcp_server)
    try:
        assert "inlineCompletionProvider" in first.initialize()["result"]["capabilities"]
        assert "inlineCompletionProvider" in second.initialize()["result"]["capabilities"]  # main: ECONNREFUSED
        text = "def area(r):\n    return r\n"
        first.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///a.py", "languageId": "python",
                                                               "version": 1, "text": text}})
        where = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 5}}
        first.request(1, "textDocument/prepareRename", where)
        second.request(1, "textDocument/prepareRename", where)
        assert first.answer(1)["result"]["placeholder"] == "area"
        assert second.answer(1)["result"] is None  # the other session never opened a.py
        first.request(2, "shutdown")
        first.answer(2)
        first.notify("exit")
        while first.sock.recv(65536):  # until its session ends, closing the connection
            pass
        first.close()
        # the first client left: the second is still served, and a third may connect
        second.request(3, "workspace/executeCommand", {"command": "diffill.status", "arguments": []})
        assert second.answer(3)["result"]["enabled"] is True
        third = TcpClient(tcp_server)
        try:
            assert "result" in third.initialize()
        finally:
            third.close()
    finally:
        first.close()
        second.close()


def test_tcp_refuses_a_client_past_the_limit_with_a_message(tcp_server: int):
    clients = [TcpClient(tcp_server) for _ in range(2)]
    try:
        for client in clients:
            assert "result" in client.initialize()
        extra = TcpClient(tcp_server)
        try:
            error = extra.initialize()["error"]
            assert error["code"] == -32002 and "--max-clients" in error["message"]
            assert extra.sock.recv(65536) == b""  # and the connection is closed
        finally:
            extra.close()
    finally:
        for client in clients:
            client.close()


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
    assert split_and_read(stream, cuts) == bodies


# What pygls and VS Code send: a Content-Type line after the length (80 bytes of header).
LONG_HEADER = b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n"


def split_and_read(stream: bytes, cuts: list[int]) -> list[bytes]:
    reader, out, at = FrameReader(), [], 0
    for cut in cuts:
        out += reader.feed(stream[at : at + cut])
        at += cut
    return out + reader.feed(stream[at:])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 79), st.lists(st.integers(1, 120), max_size=20))
def test_a_length_too_long_by_less_than_the_next_header_loses_only_its_own_message(extra: int, cuts: list[int]):
    # Found by the state machine: the next header began inside the declared body but ended
    # past it, was not seen, and the message after the bad one was lost too.
    bad, good = json.dumps(status_request("bad")).encode(), json.dumps(status_request(1)).encode()
    stream = LONG_HEADER % (len(bad) + extra) + bad + LONG_HEADER % len(good) + good
    out = split_and_read(stream, cuts)
    assert out == [bad, good]


def test_a_body_that_mentions_content_length_is_not_cut():
    body = json.dumps({"text": 'b"Content-Length: 12\\r\\n" is how a frame starts: Content-Le'}).encode()
    assert split_and_read(LONG_HEADER % len(body) + body, [len(body) + 40]) == [body]


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
