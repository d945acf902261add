"""Host-side metrics: averages of the summed device metrics, and the checks on them."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from transformer_jax.errors import UserError


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left untouched."""


def summarize(sums) -> dict:
  """Host-side averages of summed metrics: loss, nll, perplexity, token accuracy."""
  n = max(float(sums['num_tokens']), 1.0)
  nll = float(sums['nll_sum']) / n
  out = {'loss': float(sums['loss_sum']) / n, 'nll': nll,
         'perplexity': float(jnp.exp(jnp.minimum(nll, 50.0))),
         'accuracy': float(sums['correct_sum']) / n, 'num_tokens': int(n)}
  for k in ('learning_rate', 'grad_norm'):
    if k in sums:
      out[k] = float(sums[k])
  return out


def window_metrics(window: list[dict], seconds: float) -> dict:
  """The logged train metrics of a window of steps: token-weighted averages, the last step's
  learning rate and gradient norm, and target tokens per second of training time."""
  totals = {k: sum(float(m[k]) for m in window) for k in ('loss_sum', 'nll_sum', 'correct_sum',
                                                          'num_tokens')}
  totals.update(learning_rate=window[-1]['learning_rate'], grad_norm=window[-1]['grad_norm'])
  logged = summarize(totals)
  logged['target_tokens_per_s'] = totals['num_tokens'] / max(seconds, 1e-9)
  return logged


def non_finite_message(step: int) -> str:
  return (f'non-finite loss at step {step}: training stopped; the last good checkpoint is kept. '
          'Lower optimizer.learning_rate_scale, set optimizer.grad_clip_norm, or check the data.')


def is_finite(host_metrics) -> bool:
  return bool(np.isfinite(float(host_metrics['loss_sum'])))
