"""`diffill serve --tcp HOST:PORT`: one session per client, each in a process of its own.

The server's state (documents, settings, in-flight requests, the model) is one session's,
so every connection gets a fresh one: the listener forks a child per client, and the child
serves that connection with the stdio loop (protocol.serve_stdio: frame recovery, prompt
exit) over the socket, and ends when its client leaves.  The listener keeps listening.

Bounded: at most `max_clients` sessions at once (each loads its own model).  A client
past the limit is refused clearly: its first request is answered with an error that says
so, a window/showMessage says it too, and the connection is closed.

Needs os.fork (Linux, macOS); elsewhere use stdio.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import NoReturn

from .protocol import FrameReader

log = logging.getLogger(__name__)

DEFAULT_MAX_CLIENTS = 4
SERVER_NOT_INITIALIZED = -32002  # the LSP code for "no session to answer you"
REFUSE_READ_S = 2.0  # how long a refused client gets to send its first request


def serve_tcp(host: str, port: int, max_clients: int = DEFAULT_MAX_CLIENTS) -> NoReturn:
    if not hasattr(os, "fork"):
        sys.exit("diffill serve --tcp needs os.fork (Linux or macOS); use stdio here")
    from . import server as _  # imported once here, so each session starts without the import

    listener = socket.create_server((host, port))
    print(f"diffill: listening on {host}:{port} (at most {max_clients} clients at once)", file=sys.stderr, flush=True)
    sessions: set[int] = set()
    while True:
        conn, peer = listener.accept()
        _reap(sessions)
        # A client that has just left may still be tearing down: give its place a moment.
        for _ in range(20):
            if len(sessions) < max_clients:
                break
            time.sleep(0.05)
            _reap(sessions)
        if len(sessions) >= max_clients:
            log.warning("refused %s: %d clients already", peer, len(sessions))
            _refuse(conn, max_clients)
            continue
        pid = os.fork()
        if pid == 0:  # the session: this client only
            listener.close()
            _end_with_listener()
            _serve_connection(conn)
        sessions.add(pid)
        conn.close()


def _serve_connection(conn: socket.socket) -> NoReturn:
    from .server import server

    server.start_io(conn.makefile("rb"), conn.makefile("wb"))  # ends the process when the client leaves
    os._exit(1)


def _reap(sessions: set[int]) -> None:
    """Forget the sessions whose client has left (and collect their exit status)."""
    for pid in list(sessions):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            sessions.discard(pid)


def _end_with_listener() -> None:
    """Linux: this session gets SIGTERM when the listener dies, so stopping the server
    stops every session (elsewhere a session ends when its client leaves)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _refuse(conn: socket.socket, max_clients: int) -> None:
    message = (f"diffill: already serving {max_clients} clients (the --max-clients limit); "
               "close one, or start another server")

    def send(payload: dict) -> None:
        body = json.dumps(payload).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    try:
        send({"jsonrpc": "2.0", "method": "window/showMessage", "params": {"type": 1, "message": message}})
        # Answer the first request (initialize) so the client fails with this message, not a hang.
        conn.settimeout(REFUSE_READ_S)
        frames = FrameReader()
        while data := conn.recv(65536):
            bodies = frames.feed(data)
            if bodies:
                try:
                    msg_id = json.loads(bodies[0]).get("id")
                except (ValueError, AttributeError):
                    msg_id = None
                send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": SERVER_NOT_INITIALIZED, "message": message}})
                break
    except OSError:
        pass  # the client went away first: nothing more to tell it
    finally:
        conn.close()
