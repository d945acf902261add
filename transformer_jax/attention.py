"""Scaled dot-product attention and head split/merge, as pure functions.

Shape suffixes: B batch, T query length, S key length, D model width,
H heads, K per-head width (D = H·K).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.dropout import dropout


def split_heads(x_BTD: jax.Array, num_heads: int) -> jax.Array:
  """[B, T, D] -> [B, T, H, K] with K = D / H (the paper's h parallel heads)."""
  batch, length, width = x_BTD.shape
  if width % num_heads:
    raise ValueError(f'd_model={width} is not divisible by num_heads={num_heads}')
  return x_BTD.reshape(batch, length, num_heads, width // num_heads)


def merge_heads(x_BTHK: jax.Array) -> jax.Array:
  """[B, T, H, K] -> [B, T, H·K]: Concat(head_1, ..., head_h) of paper §3.2.2."""
  batch, length, num_heads, head_dim = x_BTHK.shape
  return x_BTHK.reshape(batch, length, num_heads * head_dim)


def dot_product_attention(
    q_BTHK: jax.Array,
    k_BSHK: jax.Array,
    v_BSHK: jax.Array,
    mask_B1TS: jax.Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    return_weights: bool = False,
):
  """Attention(Q, K, V) = softmax(Q·Kᵀ / √d_k + mask) · V   (paper eq. 1).

  Args:
    q_BTHK, k_BSHK, v_BSHK: queries, keys, values, per head.
    mask_B1TS: boolean, True where query t may attend to key s; broadcastable
      to [B, H, T, S]. Masked keys get exactly zero weight.
    dropout_rate, dropout_rng: dropout on the attention weights (training only;
      no rng means no dropout).
    return_weights: also return the weights [B, H, T, S] (after softmax,
      before dropout).

  Returns:
    out_BTHK, or (out_BTHK, weights_BHTS) when return_weights.
  """
  head_dim = q_BTHK.shape[-1]
  # Scaling q (T·K values) is cheaper than scaling the scores (T·S values).
  q_BTHK = q_BTHK * jnp.asarray(head_dim ** -0.5, q_BTHK.dtype)
  scores_BHTS = jnp.einsum('bthk,bshk->bhts', q_BTHK, k_BSHK)
  # Softmax in float32 whatever the compute dtype: bf16 exp/sum lose mass.
  scores_BHTS = scores_BHTS.astype(jnp.float32)
  if mask_B1TS is not None:
    # finfo.min rather than -inf: a fully masked (padding) row stays finite.
    scores_BHTS = jnp.where(mask_B1TS, scores_BHTS, jnp.finfo(jnp.float32).min)
  weights_BHTS = jax.nn.softmax(scores_BHTS, axis=-1)
  probs_BHTS = weights_BHTS
  if dropout_rate > 0.0 and dropout_rng is not None:
    probs_BHTS = dropout(probs_BHTS, dropout_rate, dropout_rng)
  out_BTHK = jnp.einsum('bhts,bshk->bthk', probs_BHTS.astype(v_BSHK.dtype), v_BSHK)
  if return_weights:
    return out_BTHK, weights_BHTS
  return out_BTHK
