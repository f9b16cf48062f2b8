"""`diffill bench --http`: requests/s and latency percentiles at several client counts, with
the replica's batching off and on, in one run (so both sides see the same machine load).

Each client is closed-loop (sends its next request when the last is answered), as editors
do.  By default the bench starts the server itself, twice, on loopback ports; with --url it
measures a running server as it is configured."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import replace
from pathlib import Path

import httpx

from .config import ServeConfig

SOURCE = Path(__file__).resolve().parent.parent / "infill_engine" / "sampler.py"


def holes(count: int, max_tokens: int) -> list[dict]:
    """Holes at the start of `count` lines of a real source file: varied contexts, all code."""
    text = SOURCE.read_text()
    starts = [i for i, ch in enumerate(text) if ch == "\n" and text[i + 1:i + 2] == " "]
    picks = [starts[(k * len(starts)) // count] + 1 for k in range(count)]
    return [{"prefix": text[:p], "suffix": text[p:], "max_tokens": max_tokens} for p in picks]


async def load(url: str, clients: int, requests: int, bodies: list[dict], headers: dict) -> tuple[float, list[float]]:
    """(requests per second, latencies in ms) for `requests` spread over `clients` closed loops."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for n in counter:
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/infill", json=bodies[n % len(bodies)], headers=headers)
            r.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return requests / (time.perf_counter() - t0), latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure(servers: dict[str, str], args, bodies: list[dict], headers: dict) -> list[dict]:
    """Every mode at each client count in turn, so a change in the machine's load hits both alike."""
    for url in servers.values():
        asyncio.run(load(url, 1, 2, bodies, headers))  # warm-up: first-call costs are not the server's speed
    rows = []
    for clients in args.clients:
        for label, url in servers.items():
            # at least 4 requests per client: the ramp (all joining at once) must not be the whole run
            rate, lat = asyncio.run(load(url, clients, max(args.requests, 4 * clients), bodies, headers))
            rows.append({"mode": label, "clients": clients, "rps": rate,
                         "p50": percentile(lat, 50), "p95": percentile(lat, 95)})
            print(f"  {label:<12} {clients:>3} clients  {rate:6.2f} req/s", flush=True)
    return sorted(rows, key=lambda r: (r["mode"] != "batching off", r["clients"]))


def print_table(rows: list[dict]) -> None:
    print(f"\n{'mode':<12} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for row in rows:
        print(f"{row['mode']:<12} {row['clients']:>7} {row['rps']:>8.2f} {row['p50']:>8.0f} {row['p95']:>8.0f}")
    by = {(r["mode"], r["clients"]): r for r in rows}
    for clients in sorted({r["clients"] for r in rows}):
        if ("batching on", clients) in by and ("batching off", clients) in by:
            gain = by[("batching on", clients)]["rps"] / by[("batching off", clients)]["rps"]
            print(f"batching on / off at {clients} clients: {gain:.2f}x req/s")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        xs = [r["clients"] for r in mine]
        left.plot(xs, [r["rps"] for r in mine], marker="o", label=mode)
        right.plot(xs, [r["p95"] for r in mine], marker="o", label=mode)
    for ax, title in ((left, "requests/s"), (right, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="diffill bench --http", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model for the servers the bench starts (default: bundled)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clients", type=lambda v: [int(c) for c in v.split(",")], default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=16, help="requests per client count (at least 4 per client)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=ServeConfig.max_batch, help="the 'batching on' side")
    ap.add_argument("--url", help="measure this running server instead of starting two")
    ap.add_argument("--token", help="bearer token for --url")
    ap.add_argument("--plot", help="also draw the figures into this PNG (needs matplotlib)")
    args = ap.parse_args(argv)
    bodies = holes(12, args.max_tokens)
    if args.url:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        rows = measure({"as running": args.url.rstrip("/")}, args, bodies, headers)
    else:
        from contextlib import ExitStack

        from .app import create_app
        from .cli import load_engine
        from .live import LiveServer

        config = ServeConfig(model=args.model, device=args.device, max_queue=1024, timeout_s=600)
        engine = load_engine(config, args.threads)
        print(f"diffill bench --http: {engine.name} on {args.device}, {args.max_tokens}-token holes", flush=True)
        with ExitStack() as stack:  # both servers share the engine; only one is busy at a time
            servers = {label: stack.enter_context(LiveServer(create_app(engine, replace(config, max_batch=size)))).url
                       for label, size in (("batching off", 1), ("batching on", args.max_batch))}
            rows = measure(servers, args, bodies, {})
    print_table(rows)
    if args.plot:
        plot(rows, args.plot)
        print(f"figure: {args.plot}")
    return 0
