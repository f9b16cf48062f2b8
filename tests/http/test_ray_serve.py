"""`diffill serve --http --ray`: the app as Ray Serve replicas, Ray started in this process on the CPU.

One test, one Ray session: a 1-replica and a 2-replica app side by side, their throughput measured
in alternating rounds and printed (a 2-core box shared with other work promises no ratio), then a
replica killed mid-load is replaced while every request still gets its answer (clients retry
the 5xx a dying replica leaves behind, as they retry a 503)."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from http_server.config import ServeConfig  # noqa: E402
from http_server.ray_app import RayOptions, deployment  # noqa: E402
from tests import REPO  # noqa: E402
from tests.http.conftest import free_port  # noqa: E402

BODIES = [{"prefix": p, "suffix": "\n", "max_tokens": 16}
          for p in ("def add(a, b):\n    return ", "import os\n", "for i in range(", "class A:\n    def ")]


async def load(url: str, requests: int, clients: int) -> tuple[float, int]:
    """(requests/s, retries) for closed-loop clients that retry what a replica could not answer."""
    queue = iter(range(requests))
    retries = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal retries
        for n in queue:
            for attempt in range(40):
                try:
                    r = await http.post(f"{url}/v1/infill", json=BODIES[n % len(BODIES)])
                    if r.status_code == 200:
                        break
                    assert r.status_code >= 500, r.text
                except httpx.TransportError:
                    pass
                retries += 1
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"request {n} never answered")

    async with httpx.AsyncClient(timeout=60) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return requests / (time.perf_counter() - t0), retries


def replica_actors() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]


def test_two_replicas_share_load_and_a_killed_one_is_replaced():
    # Logical CPUs: one per replica, three replicas (the 1-replica and the 2-replica app side by side).
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = ServeConfig(port=port)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for name, replicas in (("one", 1), ("two", 2)):
            serve.run(deployment(config, RayOptions(replicas=replicas), threads=1), name=name, route_prefix=f"/{name}")
        pids = {httpx.get(f"{base}/two/health").json()["pid"] for _ in range(20)}
        assert len(pids) == 2, "requests did not reach both replicas"
        # Alternate rounds, so a change in the machine's load hits both alike.
        rates: dict[str, list[float]] = {"one": [], "two": []}
        for _ in range(2):
            for name in rates:
                rates[name].append(asyncio.run(load(f"{base}/{name}", 24, 4))[0])
        one, two = (sum(r) / len(r) for r in rates.values())
        print(f"\nRay Serve, bundled model, {os.cpu_count()} CPU cores: 1 replica {one:.2f} req/s, "
              f"2 replicas {two:.2f} req/s ({two / one:.2f}x)")

        async def kill_during_load() -> tuple[float, int]:
            running = asyncio.ensure_future(load(f"{base}/two", 24, 4))
            await asyncio.sleep(1.0)
            victim = next(name for name in replica_actors() if name.startswith("SERVE_REPLICA::two#"))
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            return await running

        _, retries = asyncio.run(kill_during_load())  # every one of the 24 answered (load raises otherwise)
        deadline = time.monotonic() + 60
        while serve.status().applications["two"].deployments["diffill"].replica_states.get("RUNNING") != 2:
            assert time.monotonic() < deadline, "the killed replica was not replaced"
            time.sleep(0.5)
        print(f"replica killed mid-load: 24/24 answered, {retries} retries, back to 2 replicas")
    finally:
        serve.shutdown()
        ray.shutdown()
