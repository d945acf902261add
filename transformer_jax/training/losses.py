"""Label-smoothed cross-entropy from integer labels (no one-hot array is built)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _smoothing_weights(vocab: int, smoothing: float) -> tuple[float, float, float]:
  """(confidence, low, entropy): the smoothed target puts `confidence` on the label, `low`
  on every other token; `entropy` is that distribution's entropy."""
  confidence = 1.0 - smoothing
  low = smoothing / (vocab - 1)
  entropy = 0.0
  if smoothing:
    entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
  return confidence, low, entropy


def label_smoothed_cross_entropy(logits_BTV, targets_BT, smoothing: float = 0.1):
  """Per-token smoothed loss and plain negative log-likelihood.

  The smoothed target q puts c = 1 - ε on the label and ε/(V-1) on every other
  token (Szegedy et al. 2016; paper §5.4). Written with integer labels:
      loss = (c - ε/(V-1))·nll + ε/(V-1)·Σ_v(-log p_v) - H(q)
  where H(q) is subtracted so that a perfect model scores 0 (as flax's examples/wmt does),
  and Σ_v(-log p_v) = V·logsumexp(x) - Σ_v x_v needs no log-probs array.

  The gradient is written by hand: ∂loss/∂x = p - q and ∂nll/∂x = p - onehot, one pass over
  [B, T, V] that recomputes p = exp(x - logsumexp). Autodiff of the formula above instead
  materialises a broadcast, a scatter into the label and the log-probs, each a [B, T, V]
  array, and on a CPU those memory-bound passes cost as much as the output matmul
  (docs/PERFORMANCE.md, session 4).

  Args:
    logits_BTV: float logits [B, T, V].
    targets_BT: int labels [B, T].
    smoothing: ε in [0, 1).
  Returns:
    (loss_BT, nll_BT), float32, not yet masked.
  """
  return _cross_entropy(logits_BTV, targets_BT, float(smoothing))


def _forward(logits_BTV, targets_BT, smoothing):
  x_BTV = logits_BTV.astype(jnp.float32)
  vocab = x_BTV.shape[-1]
  max_BT = jax.lax.stop_gradient(x_BTV.max(-1))
  lse_BT = jnp.log(jnp.exp(x_BTV - max_BT[..., None]).sum(-1)) + max_BT
  nll_BT = lse_BT - jnp.take_along_axis(x_BTV, targets_BT[..., None], axis=-1)[..., 0]
  if smoothing == 0.0:
    return (nll_BT, nll_BT), lse_BT
  confidence, low, entropy = _smoothing_weights(vocab, smoothing)
  sum_neg_log_probs_BT = vocab * lse_BT - x_BTV.sum(-1)
  loss_BT = (confidence - low) * nll_BT + low * sum_neg_log_probs_BT - entropy
  return (loss_BT, nll_BT), lse_BT


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits_BTV, targets_BT, smoothing):
  return _forward(logits_BTV, targets_BT, smoothing)[0]


def _cross_entropy_fwd(logits_BTV, targets_BT, smoothing):
  out, lse_BT = _forward(logits_BTV, targets_BT, smoothing)
  return out, (logits_BTV, targets_BT, lse_BT)


def _cross_entropy_bwd(smoothing, residuals, cotangents):
  logits_BTV, targets_BT, lse_BT = residuals
  g_loss_BT, g_nll_BT = cotangents
  vocab = logits_BTV.shape[-1]
  confidence, low, _ = _smoothing_weights(vocab, smoothing)
  p_BTV = jnp.exp(logits_BTV.astype(jnp.float32) - lse_BT[..., None])
  # g_loss·(p - q) + g_nll·(p - onehot), with q = (c - low)·onehot + low.
  is_label_BTV = targets_BT[..., None] == jax.lax.broadcasted_iota(
      targets_BT.dtype, logits_BTV.shape, logits_BTV.ndim - 1)
  on_label_BT = (confidence - low) * g_loss_BT + g_nll_BT
  g_BTV = ((g_loss_BT + g_nll_BT)[..., None] * p_BTV - (low * g_loss_BT)[..., None]
           - jnp.where(is_label_BTV, on_label_BT[..., None], 0.0))
  return g_BTV.astype(logits_BTV.dtype), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def label_is_a_top_prediction(logits_BTV, targets_BT):
  """Token accuracy without an argmax: the label's logit equals the row's maximum.

  Equal to argmax == label except when two logits tie exactly for the maximum (a label
  among tied maxima counts as correct). It reads [B, T, V] once and writes nothing of that
  size; argmax, or max then the first index where equal, made XLA:CPU materialise a
  [B, T, V] index array, one more memory-bound pass per step.
  """
  label_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  return label_BT >= logits_BTV.max(-1)


def masked_token_metrics(logits_BTV, targets_BT, weights_BT, smoothing: float = 0.1):
  """Sums over real (weight 1) target tokens: loss, nll, correct and the token count."""
  loss_BT, nll_BT = label_smoothed_cross_entropy(logits_BTV, targets_BT, smoothing)
  w = weights_BT.astype(jnp.float32)
  logits_BTV = jax.lax.stop_gradient(logits_BTV)
  correct_BT = label_is_a_top_prediction(logits_BTV, targets_BT).astype(jnp.float32)
  return {
      'loss_sum': (loss_BT * w).sum(),
      'nll_sum': (nll_BT * w).sum(),
      'correct_sum': (correct_BT * w).sum(),
      'num_tokens': w.sum(),
  }
