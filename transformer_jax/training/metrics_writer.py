"""Metrics to <workdir>/metrics.jsonl and TensorBoard event files (tensorboardX: no TensorFlow)."""
from __future__ import annotations

import json
import os

from transformer_jax.text_files import write_text_atomically

METRICS_FILE = 'metrics.jsonl'


class MetricsWriter:
  """Appends one JSON object per logged step; writes the same scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # TensorBoard files are a convenience, metrics.jsonl is the record
        self._tb = None

  def write(self, step: int, metrics: dict, prefix: str = '') -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{f'{prefix}{k}': v for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for k, v in record.items():
        if k != 'step' and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def truncate_metrics(workdir: str, step: int) -> int:
  """Drops the records after `step` (a resume retrains them); returns how many were dropped.

  Rewritten atomically, so a kill during the rewrite leaves the old file. Every reader
  (read_metrics, scripts/plot_bleu.py) then sees each step once.
  """
  records = read_metrics(workdir)
  kept = [r for r in records if r['step'] <= step]
  if len(kept) < len(records):
    write_text_atomically(os.path.join(workdir, METRICS_FILE),
                          ''.join(json.dumps(r) + '\n' for r in kept))
  return len(records) - len(kept)


def read_metrics(workdir: str) -> list[dict]:
  """All records of <workdir>/metrics.jsonl (empty list when absent)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
