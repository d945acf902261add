"""The logging and metrics middleware: one count per request, one log line per API request."""
from __future__ import annotations

import itertools
import logging
import time

from transformer_jax.serving.metrics import ServerMetrics

log = logging.getLogger('transformer_jax.serving')

KNOWN_PATHS = frozenset({'/v1/translate', '/v1/attention', '/v1/model', '/healthz', '/readyz',
                         '/metrics', '/', '/docs', '/openapi.json'})


class LogAndCount:
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
