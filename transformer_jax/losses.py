"""Label-smoothed cross-entropy from integer labels (no one-hot array is built)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothed_cross_entropy(logits_BTV, targets_BT, smoothing: float = 0.1):
  """Per-token smoothed loss and plain negative log-likelihood.

  The smoothed target puts c = 1 - ε on the label and ε/(V-1) on every other
  token (Szegedy et al. 2016; paper §5.4). Written with integer labels:
      loss = (c - ε/(V-1))·nll + ε/(V-1)·Σ_v(-log p_v) - H(target)
  where H(target) is the entropy of the smoothed target, subtracted so that a
  perfect model scores 0 (as flax's examples/wmt does).

  Args:
    logits_BTV: float logits [B, T, V].
    targets_BT: int labels [B, T].
    smoothing: ε in [0, 1).
  Returns:
    (loss_BT, nll_BT), float32, not yet masked.
  """
  vocab = logits_BTV.shape[-1]
  log_probs_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  nll_BT = -jnp.take_along_axis(log_probs_BTV, targets_BT[..., None], axis=-1)[..., 0]
  if smoothing == 0.0:
    return nll_BT, nll_BT
  confidence = 1.0 - smoothing
  low = smoothing / (vocab - 1)
  sum_neg_log_probs_BT = -log_probs_BTV.sum(-1)
  entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
  loss_BT = (confidence - low) * nll_BT + low * sum_neg_log_probs_BT - entropy
  return loss_BT, nll_BT


def first_argmax(x_BTV):
  """jnp.argmax over the last axis (the first index of the maximum), as two single-operand
  reductions: XLA:CPU vectorises those, not argmax's (value, index) pair reduction, which
  took 3% of a CPU train step at vocab 8k (docs/PERFORMANCE.md)."""
  vocab = x_BTV.shape[-1]
  # XLA:CPU materialises the [B, T, V] indices before reducing: int16 halves that buffer.
  index_dtype = jnp.int16 if vocab < 2 ** 15 else jnp.int32
  max_BT1 = x_BTV.max(-1, keepdims=True)
  index_BTV = jax.lax.broadcasted_iota(index_dtype, x_BTV.shape, x_BTV.ndim - 1)
  first_BT = jnp.where(x_BTV == max_BT1, index_BTV, jnp.asarray(vocab, index_dtype)).min(-1)
  return first_BT.astype(jnp.int32)


def masked_token_metrics(logits_BTV, targets_BT, weights_BT, smoothing: float = 0.1):
  """Sums over real (weight 1) target tokens: loss, nll, correct and the token count."""
  loss_BT, nll_BT = label_smoothed_cross_entropy(logits_BTV, targets_BT, smoothing)
  w = weights_BT.astype(jnp.float32)
  correct_BT = (first_argmax(logits_BTV) == targets_BT).astype(jnp.float32)
  return {
      'loss_sum': (loss_BT * w).sum(),
      'nll_sum': (nll_BT * w).sum(),
      'correct_sum': (correct_BT * w).sum(),
      'num_tokens': w.sum(),
  }
