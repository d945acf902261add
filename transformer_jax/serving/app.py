"""The HTTP API and the page: `create_app(engine, settings)` is a FastAPI app.

    POST /v1/translate  {"texts": [...], "beam_size"?, "alpha"?, "n_best"?}
                        -> {"translations": [{"text", "score", "truncated", "n_best"?}], ...}
    POST /v1/attention  {"source", "target"?} -> tokens and every layer's and head's weights
    GET  /healthz  /readyz  /v1/model  /metrics  /

Bodies are read and checked here, not by FastAPI's parser, so that every bad input gets its own
status and a message naming the field: a body too large or too many texts or characters (413),
bytes that are not UTF-8, malformed JSON, a missing, unknown or mistyped field, a lone surrogate,
a beam size that is not served, α or n_best out of range (422), a full queue (429, Retry-After),
a request over its time budget (504), a model still compiling (503, Retry-After).
Every error body is {"error": message, "status": code}.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import threading
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from transformer_jax.serving.batcher import (Batcher, BatcherSettings, DeadlineExceeded,
                                             QueueFull)
from transformer_jax.serving.engine import Engine
from transformer_jax.serving.metrics import ServerMetrics

log = logging.getLogger('transformer_jax.serving')

KNOWN_PATHS = frozenset({'/v1/translate', '/v1/attention', '/v1/model', '/healthz', '/readyz',
                         '/metrics', '/', '/docs', '/openapi.json'})
ALPHA_RANGE = (0.0, 2.0)  # GNMT's α; beyond 2 the penalty swamps the model


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  batcher: BatcherSettings = BatcherSettings()
  max_texts: int = 64              # texts in one request
  max_chars: int = 20_000          # characters in one request, all texts together
  max_body_bytes: int = 1 << 20    # the raw body
  warmup: bool = True              # compile every served shape at start-up (off: tests only)


class _WarmupStopped(Exception):
  """The server stopped before every shape was compiled."""


class HttpError(Exception):
  def __init__(self, status: int, message: str, headers: dict | None = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


class TranslateRequest(BaseModel):
  model_config = ConfigDict(extra='forbid')
  texts: list[StrictStr]
  beam_size: StrictInt | None = None
  alpha: StrictFloat | StrictInt | None = None
  n_best: StrictInt | None = None


class AttentionRequest(BaseModel):
  model_config = ConfigDict(extra='forbid')
  source: StrictStr
  target: StrictStr | None = None  # None: the model's own translation (default decoding)


def _field(loc) -> str:
  """('texts', 2) -> 'texts[2]'."""
  out = ''
  for part in loc:
    out += f'[{part}]' if isinstance(part, int) else (f'.{part}' if out else str(part))
  return out or 'body'


async def _read_json(request: Request, model: type[BaseModel], max_bytes: int) -> Any:
  """The body as `model`, or the HttpError that says what is wrong with it."""
  declared = request.headers.get('content-length')
  if declared is not None and declared.isdigit() and int(declared) > max_bytes:
    raise HttpError(413, f'the body is {int(declared)} bytes; the limit is {max_bytes}')
  body = b''
  async for chunk in request.stream():
    body += chunk
    if len(body) > max_bytes:
      raise HttpError(413, f'the body is over {max_bytes} bytes, the limit')
  try:
    text = body.decode('utf-8')
  except UnicodeDecodeError as e:
    raise HttpError(422, f'the body is not UTF-8: byte {e.start} is 0x{body[e.start]:02x}; '
                         'send JSON encoded as UTF-8') from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise HttpError(422, f'the body is not JSON: {e.msg} at line {e.lineno} column '
                         f'{e.colno}') from None
  try:
    return model.model_validate(data)
  except ValidationError as e:
    first = e.errors()[0]
    problem = first['msg']
    if first['type'] == 'missing':
      problem = 'is required'
    elif first['type'] == 'extra_forbidden':
      problem = f'is not a field (fields: {", ".join(model.model_fields)})'
    raise HttpError(422, f'{_field(first["loc"])}: {problem}') from None


def _check_text(text: str, field: str) -> None:
  try:
    text.encode('utf-8')
  except UnicodeEncodeError as e:
    raise HttpError(422, f'{field}: character {e.start} is a lone surrogate '
                         f'({text[e.start]!a}), not text; send valid UTF-16 pairs') from None


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
  return JSONResponse({'error': message, 'status': status}, status_code=status, headers=headers)


class _LogAndCount:
  """Counts every request in the metrics and logs one line per API request (a plain ASGI
  middleware: Starlette's BaseHTTPMiddleware costs a task and a stream per request)."""

  def __init__(self, app, metrics: ServerMetrics):
    self.app, self.metrics, self.ids = app, metrics, itertools.count(1)

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    start, request_id, status = time.perf_counter(), next(self.ids), [500]
    info = {}
    scope.setdefault('state', {}).update(id=request_id, info=info)  # request.state.id / .info

    async def send_with_id(message):
      if message['type'] == 'http.response.start':
        status[0] = message['status']
        message = {**message, 'headers': [*message.get('headers', []),
                                          (b'x-request-id', str(request_id).encode())]}
      await send(message)

    try:
      await self.app(scope, receive, send_with_id)
    finally:
      seconds = time.perf_counter() - start
      path = scope['path']
      # Unknown paths share one label: a scanner must not grow the metrics without bound.
      self.metrics.observe_request(path if path in KNOWN_PATHS else 'other', status[0], seconds)
      if path.startswith('/v1/'):
        log.info('request id=%d %s %s status=%d %s total_ms=%.1f', request_id, scope['method'],
                 path, status[0], ' '.join(f'{k}={v}' for k, v in info.items()),
                 seconds * 1e3)


def create_app(engine: Engine, settings: ServerSettings = ServerSettings()) -> FastAPI:
  """The server for one engine. Warm-up (if on) runs on the decode thread at start-up."""
  settings.batcher.check()
  metrics = ServerMetrics()
  batcher = Batcher(engine, settings.batcher, on_batch=metrics.observe_batch)
  state = {'ready': False, 'warmup_error': None, 'warmup_progress': (0, 0)}

  @contextlib.asynccontextmanager
  async def lifespan(app):
    batcher.start()
    warmup = None
    stopping = threading.Event()
    if settings.warmup:
      def progress(done, total):
        state['warmup_progress'] = (done, total)
        if stopping.is_set():  # a stop during warm-up need not wait for every shape
          raise _WarmupStopped()

      async def warm():
        try:
          seconds = await batcher.run_in_worker(engine.warmup, progress)
          state['ready'] = True
          log.info('ready: every served shape compiled in %.1fs', seconds)
        except _WarmupStopped:
          log.info('warm-up stopped: the server is stopping')
        except Exception as e:  # readyz reports it; the process stays up to say so
          state['warmup_error'] = f'{type(e).__name__}: {e}'
          log.exception('warm-up failed')
      warmup = asyncio.get_running_loop().create_task(warm())
    else:
      state['ready'] = True
    yield
    stopping.set()
    if warmup is not None:
      await asyncio.gather(warmup, return_exceptions=True)  # ends after the shape it is on
    await batcher.stop()

  app = FastAPI(title='transformer_jax', version='1', lifespan=lifespan,
                docs_url='/docs', redoc_url=None)
  app.state.batcher, app.state.engine, app.state.metrics = batcher, engine, metrics

  app.add_middleware(_LogAndCount, metrics=metrics)

  @app.exception_handler(HttpError)
  async def http_error(request: Request, e: HttpError):
    return _error(e.status, e.message, e.headers)

  @app.exception_handler(404)
  async def not_found(request: Request, e):
    return _error(404, f'no such endpoint: {request.method} {request.url.path}')

  @app.exception_handler(405)
  async def wrong_method(request: Request, e):
    return _error(405, f'{request.url.path} does not take {request.method}')

  def require_ready():
    if not state['ready']:
      done, total = state['warmup_progress']
      why = state['warmup_error'] or f'the model is still compiling ({done}/{total} shapes)'
      raise HttpError(503, why, {'Retry-After': '5'})

  def decoding_arguments(beam_size, alpha) -> tuple[int, float]:
    beam_size = engine.default_beam_size if beam_size is None else beam_size
    alpha = engine.default_alpha if alpha is None else float(alpha)
    if beam_size not in engine.settings.beam_sizes:
      raise HttpError(422, f'beam_size: {beam_size} is not served; served beam sizes: '
                           f'{list(engine.settings.beam_sizes)} (serve.py --beam_sizes)')
    if not (math.isfinite(alpha) and ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]):
      raise HttpError(422, f'alpha: {alpha} is out of range [{ALPHA_RANGE[0]:g}, '
                           f'{ALPHA_RANGE[1]:g}]')
    return beam_size, alpha

  async def translate_ids(sources, beam_size, alpha, info):
    try:
      translations, timing = await batcher.translate(sources, beam_size, alpha)
    except QueueFull as e:
      raise HttpError(429, str(e), {'Retry-After': '1'}) from None
    except DeadlineExceeded as e:
      raise HttpError(504, str(e)) from None
    info['queue_ms'] = f'{timing.queue_ms:.1f}'
    info['decode_ms'] = f'{timing.decode_ms:.1f}'
    return translations

  @app.post('/v1/translate', openapi_extra={'requestBody': {'required': True, 'content': {
      'application/json': {'schema': TranslateRequest.model_json_schema()}}}})
  async def translate(request: Request):
    """Translations of `texts`, in order (empty text: empty translation, score 0)."""
    body = await _read_json(request, TranslateRequest, settings.max_body_bytes)
    if not body.texts:
      raise HttpError(422, 'texts: is empty; send at least one text')
    if len(body.texts) > settings.max_texts:
      raise HttpError(413, f'texts: {len(body.texts)} texts; the limit is {settings.max_texts} '
                           'per request')
    chars = sum(map(len, body.texts))
    if chars > settings.max_chars:
      raise HttpError(413, f'texts: {chars} characters; the limit is {settings.max_chars} '
                           'per request')
    for i, text in enumerate(body.texts):
      _check_text(text, f'texts[{i}]')
    beam_size, alpha = decoding_arguments(body.beam_size, body.alpha)
    if body.n_best is not None and not 1 <= body.n_best <= beam_size:
      raise HttpError(422, f'n_best: {body.n_best} is out of range [1, beam_size={beam_size}]')
    require_ready()
    encoded = [engine.encode(t) for t in body.texts]
    info = request.state.info
    info['texts'] = len(encoded)
    info['tokens'] = sum(len(e.ids) for e in encoded)
    translations = await translate_ids([e.ids for e in encoded], beam_size, alpha, info)
    out = []
    for source, translation in zip(encoded, translations):
      if translation is None:
        entry = {'text': '', 'score': 0.0, 'truncated': False}
        hyps = []
      else:
        entry = {'text': engine.detokenize(translation.best.tokens),
                 'score': translation.best.score, 'truncated': source.truncated}
        hyps = translation.n_best
      if body.n_best is not None:
        entry['n_best'] = [{'text': engine.detokenize(h.tokens), 'score': h.score}
                           for h in hyps[:body.n_best]]
      out.append(entry)
    return {'translations': out, 'beam_size': beam_size, 'alpha': alpha,
            'num_truncated': sum(e.truncated for e in encoded),
            'max_length': engine.max_length}

  @app.post('/v1/attention', openapi_extra={'requestBody': {'required': True, 'content': {
      'application/json': {'schema': AttentionRequest.model_json_schema()}}}})
  async def attention(request: Request):
    """Teacher-forced attention of (source, target); no target: the model's translation."""
    body = await _read_json(request, AttentionRequest, settings.max_body_bytes)
    for field in ('source', 'target'):
      text = getattr(body, field)
      if text is not None:
        _check_text(text, field)
        if len(text) > settings.max_chars:
          raise HttpError(413, f'{field}: {len(text)} characters; the limit is '
                               f'{settings.max_chars}')
    source = engine.encode(body.source)
    if not source.ids:
      raise HttpError(422, 'source: is empty; send a sentence')
    require_ready()
    info = request.state.info
    if body.target is None:
      translation, = await translate_ids([source.ids], engine.default_beam_size,
                                         engine.default_alpha, info)
      target_ids, target = translation.best.tokens, engine.detokenize(translation.best.tokens)
    else:
      target = body.target
      target_ids = engine.vocab.encode(target) if target.strip() else []
    try:
      weights = await asyncio.wait_for(batcher.run_in_worker(engine.attention, source.ids,
                                                             target_ids),
                                       settings.batcher.timeout_s)
    except asyncio.TimeoutError:
      raise HttpError(504, f'not answered within {settings.batcher.timeout_s:g}s') from None
    piece = engine.vocab.id_to_piece
    decoder_inputs = weights['decoder_input_ids']
    info['tokens'] = len(source.ids) + len(decoder_inputs)
    return {'source': body.source, 'target': target, 'truncated': source.truncated,
            'source_tokens': [piece(i) for i in source.ids],
            'target_tokens': [piece(i) for i in decoder_inputs],
            # what each target row predicts: the next target token, then </s>
            'output_tokens': [piece(i) for i in weights['output_ids']],
            'layers': {'encoder': int(weights['encoder_self'].shape[0]),
                       'decoder': int(weights['cross'].shape[0])},
            'heads': int(weights['cross'].shape[1]),
            'encoder_self': weights['encoder_self'].tolist(),
            'decoder_self': weights['decoder_self'].tolist(),
            'cross': weights['cross'].tolist()}

  @app.get('/healthz')
  async def healthz():
    return {'status': 'ok'}

  @app.get('/readyz')
  async def readyz():
    require_ready()
    return {'status': 'ready', 'compile_seconds': engine.compile_seconds}

  @app.get('/v1/model')
  async def model_info():
    translator = engine.translator
    return {'workdir': translator.workdir.path,
            'checkpoint': translator.checkpoint_description,
            'config': translator.config.to_dict(),
            'vocab': {'size': engine.vocab.size, 'bos_id': engine.vocab.bos_id,
                      'eos_id': engine.vocab.eos_id},
            'max_length': engine.max_length,
            'decoding': {'beam_size': engine.default_beam_size, 'alpha': engine.default_alpha,
                         'beam_sizes': list(engine.settings.beam_sizes),
                         'alpha_range': list(ALPHA_RANGE)},
            'buckets': {'source_lengths': list(engine.source_buckets),
                        'batch_rows': list(engine.batch_rows),
                        'max_batch_tokens': engine.settings.max_batch_tokens,
                        'max_decoder_rows': engine.settings.max_decoder_rows},
            'limits': {'max_texts': settings.max_texts, 'max_chars': settings.max_chars,
                       'max_body_bytes': settings.max_body_bytes,
                       'max_queue': settings.batcher.max_queue,
                       'timeout_s': settings.batcher.timeout_s},
            'batching': {'enabled': settings.batcher.batching,
                         'max_wait_ms': settings.batcher.max_wait_ms},
            'ready': state['ready'], 'compile_seconds': engine.compile_seconds}

  @app.get('/metrics')
  async def prometheus():
    return PlainTextResponse(metrics.render(batcher.queued),
                             media_type='text/plain; version=0.0.4')

  page = resources.files('transformer_jax.serving').joinpath('page/index.html').read_text(
      encoding='utf-8')

  @app.get('/', response_class=HTMLResponse)
  async def index():
    return HTMLResponse(page)

  return app
