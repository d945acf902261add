"""The server's counters, rendered in the Prometheus text format (no client library needed)."""
from __future__ import annotations

import bisect
import collections
import threading

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
  def __init__(self, bounds):
    self.bounds = tuple(bounds)
    self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
    self.total = 0.0
    self.n = 0

  def observe(self, value: float) -> None:
    self.counts[bisect.bisect_left(self.bounds, value)] += 1
    self.total += value
    self.n += 1

  def render(self, name: str, labels: str = '') -> list[str]:
    lines, cumulative = [], 0
    sep = ',' if labels else ''
    for bound, count in zip(self.bounds + (float('inf'),), self.counts):
      cumulative += count
      le = '+Inf' if bound == float('inf') else f'{bound:g}'
      lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}')
    brace = f'{{{labels}}}' if labels else ''
    lines += [f'{name}_sum{brace} {self.total:.6f}', f'{name}_count{brace} {self.n}']
    return lines


class ServerMetrics:
  """Requests by endpoint and status, latency per endpoint, batch sizes, sentences decoded."""

  def __init__(self):
    self._lock = threading.Lock()
    self.requests = collections.Counter()  # (path, status) -> count
    self.latency = collections.defaultdict(lambda: Histogram(LATENCY_BUCKETS_S))
    self.batch_sentences = Histogram(BATCH_BUCKETS)
    self.batch_rows = Histogram(BATCH_BUCKETS)
    self.sentences = 0

  def observe_request(self, path: str, status: int, seconds: float) -> None:
    with self._lock:
      self.requests[(path, status)] += 1
      self.latency[path].observe(seconds)

  def observe_batch(self, sentences: int, rows: int) -> None:
    with self._lock:
      self.batch_sentences.observe(sentences)
      self.batch_rows.observe(rows)
      self.sentences += sentences

  def render(self, queued: int) -> str:
    with self._lock:
      lines = ['# HELP transformer_jax_requests_total HTTP requests by path and status.',
               '# TYPE transformer_jax_requests_total counter']
      for (path, status), count in sorted(self.requests.items()):
        lines.append(f'transformer_jax_requests_total{{path="{path}",status="{status}"}} {count}')
      lines += ['# HELP transformer_jax_request_seconds Time from arrival to answer.',
                '# TYPE transformer_jax_request_seconds histogram']
      for path, histogram in sorted(self.latency.items()):
        lines += histogram.render('transformer_jax_request_seconds', f'path="{path}"')
      lines += ['# HELP transformer_jax_batch_sentences Sentences per decoded batch.',
                '# TYPE transformer_jax_batch_sentences histogram',
                *self.batch_sentences.render('transformer_jax_batch_sentences'),
                '# HELP transformer_jax_batch_rows Rows of the compiled shape each batch ran in.',
                '# TYPE transformer_jax_batch_rows histogram',
                *self.batch_rows.render('transformer_jax_batch_rows'),
                '# HELP transformer_jax_sentences_total Sentences decoded.',
                '# TYPE transformer_jax_sentences_total counter',
                f'transformer_jax_sentences_total {self.sentences}',
                '# HELP transformer_jax_queued_sentences Sentences waiting for a batch.',
                '# TYPE transformer_jax_queued_sentences gauge',
                f'transformer_jax_queued_sentences {queued}']
    return '\n'.join(lines) + '\n'
