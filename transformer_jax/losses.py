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


def masked_token_metrics(logits_BTV, targets_BT, weights_BT, smoothing: float = 0.1):
  """Sums over real (weight 1) target tokens: loss, nll, correct and the token count."""
  loss_BT, nll_BT = label_smoothed_cross_entropy(logits_BTV, targets_BT, smoothing)
  w = weights_BT.astype(jnp.float32)
  correct_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)
  return {
      'loss_sum': (loss_BT * w).sum(),
      'nll_sum': (nll_BT * w).sum(),
      'correct_sum': (correct_BT * w).sum(),
      'num_tokens': w.sum(),
  }
