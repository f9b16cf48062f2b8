"""The server's Prometheus metrics, in a registry of their own (one per app, so tests can
run several apps in one process)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("diffill_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("diffill_errors", "Requests that ended in an error", ["kind"], registry=r)
        self.latency = Histogram("diffill_request_seconds", "Time from arrival to answer", ["endpoint"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.tokens_per_forward = Histogram("diffill_tokens_per_forward", "Hole tokens committed per forward",
                                            buckets=(1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32), registry=r)
        self.batch_size = Histogram("diffill_batch_size", "Requests sharing one forward",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("diffill_queue_depth", "Requests waiting for the model", registry=r)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
