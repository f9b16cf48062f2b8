"""`diffill serve --http --ray --replicas N`: the same app as a Ray Serve deployment.

Each replica loads the model once and serves the whole FastAPI app of app.py (auth, limits,
metrics, continuous batching) through Ray Serve's ingress; Ray's HTTP proxy spreads
requests over the replicas, restarts a replica that dies, and scales between bounds with
`--autoscale MIN:MAX`.  Batching stays the replica's own continuous batching (batcher.py)
rather than `@serve.batch`: serve.batch hands over a fixed batch that leaves together,
whereas a denoising loop wants each request to join and leave at any step.

Ray is an optional extra (`pip install -e '.[serve]'`); nothing else imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import serve

from .config import ServeConfig


@dataclass(frozen=True)
class RayOptions:
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; None: a fixed count
    target_ongoing_requests: int = 8  # per replica, what autoscaling aims for


@serve.ingress()
class InfillReplica:
    def __init__(self, config: ServeConfig, threads: int | None = None):
        from .cli import load_engine

        self.config = config
        self.engine = load_engine(config, threads)

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.engine, self.config)


def deployment(config: ServeConfig, options: RayOptions, threads: int | None = None):
    """The bound Ray Serve application for `serve.run`."""
    scaling: dict = {"num_replicas": options.replicas}
    if options.autoscale:
        low, high = options.autoscale
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                          "target_ongoing_requests": options.target_ongoing_requests}}
    replica = serve.deployment(
        InfillReplica,
        name="diffill",
        ray_actor_options={"num_cpus": options.cpus_per_replica, "num_gpus": options.gpus_per_replica},
        # More than the replica's own queue holds would only wait in Ray's: let the replica answer 503.
        max_ongoing_requests=config.max_queue + config.max_batch,
        health_check_period_s=2,
        health_check_timeout_s=10,
        **scaling,
    )
    return replica.bind(config, threads)


def run(config: ServeConfig, options: RayOptions, threads: int | None = None, blocking: bool = True) -> None:
    """Start (or join) Ray, its HTTP proxy on config.host:port, and the deployment."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(deployment(config, options, threads), name="diffill", route_prefix="/", blocking=blocking)
