"""Serving: the HTTP API and attention page over a trained model (`serve.py`).

`engine` holds the model and its compiled shapes, `batcher` gathers concurrent requests into
batches, `bodies` checks request bodies, `service` does each endpoint's work, `middleware` logs
and counts, `app` is the FastAPI app, `metrics` its Prometheus counters, `page/` the web page.
Needs the `serve` extra (fastapi, uvicorn); `import transformer_jax` never imports this.

Floor 3: imports decoding and what is below it; never training.
"""
