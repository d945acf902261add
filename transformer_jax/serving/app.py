"""The HTTP API and the page: `create_app(engine, settings)` is a FastAPI app.

    POST /v1/translate  {"texts": [...], "beam_size"?, "alpha"?, "n_best"?}
                        -> {"translations": [{"text", "score", "truncated", "n_best"?}], ...}
    POST /v1/attention  {"source", "target"?} -> tokens and every layer's and head's weights
    GET  /healthz  /readyz  /v1/model  /metrics  /

The routes are thin: `bodies` reads and checks a body, `service` does the work, `middleware`
counts and logs. Every error body is {"error": message, "status": code}.
"""
from __future__ import annotations

import contextlib
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from transformer_jax.serving.bodies import (AttentionRequest, HttpError, TranslateRequest,
                                            error_response, read_json)
from transformer_jax.serving.engine import Engine
from transformer_jax.serving.middleware import LogAndCount
from transformer_jax.serving.service import ALPHA_RANGE, ServerSettings, Service  # noqa: F401


def _json_body(model) -> dict:
  """The OpenAPI request body of a route that reads its body itself."""
  return {'requestBody': {'required': True, 'content': {
      'application/json': {'schema': model.model_json_schema()}}}}


def _answer_errors_as_json(app: FastAPI) -> None:
  """HttpError, an unknown path and a wrong method all answer {"error", "status"}."""

  @app.exception_handler(HttpError)
  async def http_error(request: Request, e: HttpError):
    return error_response(e.status, e.message, e.headers)

  @app.exception_handler(404)
  async def not_found(request: Request, e):
    return error_response(404, f'no such endpoint: {request.method} {request.url.path}')

  @app.exception_handler(405)
  async def wrong_method(request: Request, e):
    return error_response(405, f'{request.url.path} does not take {request.method}')


def create_app(engine: Engine, settings: ServerSettings = ServerSettings()) -> FastAPI:
  """The server for one engine. Warm-up (if on) runs on the decode thread at start-up."""
  service = Service(engine, settings)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    service.start()
    yield
    await service.stop()

  app = FastAPI(title='transformer_jax', version='1', lifespan=lifespan,
                docs_url='/docs', redoc_url=None)
  app.state.batcher, app.state.engine, app.state.metrics = (service.batcher, engine,
                                                            service.metrics)
  app.add_middleware(LogAndCount, metrics=service.metrics)
  _answer_errors_as_json(app)

  @app.post('/v1/translate', openapi_extra=_json_body(TranslateRequest))
  async def translate(request: Request):
    """Translations of `texts`, in order (empty text: empty translation, score 0)."""
    body = await read_json(request, TranslateRequest, settings.max_body_bytes)
    return await service.translate(body, request.state.info)

  @app.post('/v1/attention', openapi_extra=_json_body(AttentionRequest))
  async def attention(request: Request):
    """Teacher-forced attention of (source, target); no target: the model's translation."""
    body = await read_json(request, AttentionRequest, settings.max_body_bytes)
    return await service.attention(body, request.state.info)

  @app.get('/healthz')
  async def healthz():
    return {'status': 'ok'}

  @app.get('/readyz')
  async def readyz():
    service.require_ready()
    return {'status': 'ready', 'compile_seconds': engine.compile_seconds}

  @app.get('/v1/model')
  async def model_info():
    return service.model_info()

  @app.get('/metrics')
  async def prometheus():
    return PlainTextResponse(service.metrics.render(service.batcher.queued),
                             media_type='text/plain; version=0.0.4')

  page = resources.files('transformer_jax.serving').joinpath('page/index.html').read_text(
      encoding='utf-8')

  @app.get('/', response_class=HTMLResponse)
  async def index():
    return HTMLResponse(page)

  return app
