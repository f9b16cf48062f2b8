"""diffill over HTTP: one model server for a whole team's editors.

config.py     ServeConfig, the one settings object (flags and environment become one of these)
batcher.py    the model thread: a bounded queue and continuous batching of concurrent requests
hole_batch.py one forward over the holes of many requests (bundled model), and the per-request loop
app.py        the FastAPI app: /v1/infill, /v1/completions, /v1/models, /health, /metrics
metrics.py    the Prometheus counters and histograms
cli.py        `diffill serve --http` and `diffill bench --http`

The engine knows nothing of HTTP; this package sits beside the language server, above the engine.
"""
