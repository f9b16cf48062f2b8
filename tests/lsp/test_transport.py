"""`python -m lsp_server --tcp HOST:PORT` and the command line's errors."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from tests.lsp.harness import SERVER_COMMAND, server_env


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
