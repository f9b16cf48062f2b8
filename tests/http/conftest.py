"""Live servers for the HTTP tests: the real app on uvicorn, on a loopback port, in this process."""

from __future__ import annotations

import socket

import pytest
import torch

from http_server.app import create_app
from http_server.config import ServeConfig
from http_server.live import LiveServer
from infill_engine.engine import Engine

TOKEN = "s3cret-token"


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """On a shared 2-core box one torch thread is several times faster than two (the server's
    own default is half the cores); the rest of the suite keeps its setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bundled() -> Engine:
    # fp32: batched and lone requests then agree token for token (bf16 rounds padding differently)
    return Engine.load(precision="fp32")


@pytest.fixture(scope="session")
def tiny() -> Engine:
    return Engine.tiny_random()


@pytest.fixture(scope="module")
def server(bundled):
    """The bundled model behind bearer auth, batching on."""
    with LiveServer(create_app(bundled, ServeConfig(tokens=frozenset({TOKEN}), max_body_bytes=64 * 1024))) as live:
        yield live


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live(engine: Engine, **config) -> LiveServer:
    return LiveServer(create_app(engine, ServeConfig(**config)))
