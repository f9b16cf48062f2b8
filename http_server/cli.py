"""`diffill serve --http HOST:PORT` and `diffill bench --http`."""

from __future__ import annotations

import argparse
import sys

from .config import ServeConfig, load_tokens


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8000), got {value!r}")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffill serve --http", description="diffill's HTTP infill server")
    ap.add_argument("--http", type=parse_address, required=True, metavar="HOST:PORT",
                    help="address to listen on (127.0.0.1 keeps it on this machine; 0.0.0.0 opens it)")
    ap.add_argument("--model", default=None,
                    help="model directory or hub id (default: the bundled model; tiny-random: plumbing tests)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: half the cores; on a busy box fewer threads are faster)")
    ap.add_argument("--token-file", help="bearer tokens, one a line (also $DIFFILL_HTTP_TOKENS, comma-separated)")
    ap.add_argument("--max-batch", type=int, default=ServeConfig.max_batch,
                    help="requests sharing one forward (1: no batching)")
    ap.add_argument("--max-queue", type=int, default=ServeConfig.max_queue,
                    help="requests that may wait; more are answered 503 with Retry-After")
    ap.add_argument("--timeout", type=float, default=ServeConfig.timeout_s, help="seconds per request")
    ap.add_argument("--max-body-bytes", type=int, default=ServeConfig.max_body_bytes)
    ap.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (uvicorn's TLS)")
    ap.add_argument("--ssl-keyfile", help="the certificate's private key")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ray = ap.add_argument_group("scale out on Ray Serve (pip install -e '.[serve]')")
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve replicas")
    ray.add_argument("--replicas", type=int, default=1)
    ray.add_argument("--gpus-per-replica", type=float, default=None,
                     help="default: 1 with --device cuda, else 0")
    ray.add_argument("--cpus-per-replica", type=float, default=1.0)
    ray.add_argument("--autoscale", type=_bounds, metavar="MIN:MAX", help="autoscale between MIN and MAX replicas")
    return ap


def _bounds(value: str) -> tuple[int, int]:
    low, sep, high = value.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or not 0 < int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX replicas (e.g. 1:4), got {value!r}")
    return int(low), int(high)


def config_from(args: argparse.Namespace) -> ServeConfig:
    host, port = args.http
    return ServeConfig(host=host, port=port, model=args.model, device=args.device, precision=args.precision,
                       tokens=load_tokens(args.token_file), max_batch=args.max_batch, max_queue=args.max_queue,
                       timeout_s=args.timeout, max_body_bytes=args.max_body_bytes,
                       ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)


def load_engine(config: ServeConfig, threads: int | None = None):
    import os

    import torch

    from infill_engine.engine import Engine

    if config.device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))

    if config.model == "tiny-random":
        return Engine.tiny_random()
    return Engine.load(config.model, config.device, precision=config.precision)


def serve(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"diffill: serve --http needs the serve extra: pip install 'diffill[serve]' ({exc})", file=sys.stderr)
        return 2
    config = config_from(args)
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        print("diffill: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    if args.ray:
        from .ray_app import RayOptions, run

        if config.ssl_certfile:
            print("diffill: with --ray, Ray's proxy serves HTTP; put TLS in front of it (a load balancer)",
                  file=sys.stderr)
            return 2
        gpus = args.gpus_per_replica if args.gpus_per_replica is not None else float(config.device != "cpu")
        print(f"diffill: Ray Serve, {args.replicas} replica(s), on http://{config.host}:{config.port}",
              file=sys.stderr, flush=True)
        run(config, RayOptions(args.replicas, gpus, args.cpus_per_replica, args.autoscale),
            args.threads)
        return 0
    import uvicorn

    from .app import create_app

    engine = load_engine(config, args.threads)
    if engine.is_random:
        print(f"diffill: warning: {engine.name}", file=sys.stderr)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.auth:
        print("diffill: warning: listening beyond this machine with no bearer tokens (--token-file)", file=sys.stderr)
    scheme = "https" if config.ssl_certfile else "http"
    print(f"diffill: serving {engine.name} on {scheme}://{config.host}:{config.port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine, config), host=config.host, port=config.port, log_level=args.log_level,
                ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile)
    return 0
