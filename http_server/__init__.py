"""diffill over HTTP: one model server for a whole team's editors.

config.py      ServeConfig, the one settings object (flags and environment become one of these)
app.py         the FastAPI app: thin handlers for /v1/infill, /v1/completions, /v1/models, /health, /metrics
schemas.py     the request bodies (pydantic: a bad field is a 422 naming it)
middleware.py  the body-size limit (413) and the per-request metrics, as plain ASGI
metrics.py     the Prometheus counters and histograms
batcher.py     the model thread: a bounded queue and continuous batching of concurrent requests
hole_batch.py  one forward over the holes of many requests (bundled model), and the per-request loop
cli.py         `diffill serve --http`; bench.py `diffill bench --http`; live.py a server on a thread
ray_app.py     `--ray --replicas N`: the same app as Ray Serve replicas (optional extra)

The engine knows nothing of HTTP; this package sits beside the language server, above the engine.
"""
