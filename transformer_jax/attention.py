"""Scaled dot-product attention and head split/merge, as pure functions.

Shape suffixes: B batch, T query length, S key length, D model width,
H heads, K per-head width (D = H·K), N query rows and G = N / B query rows
per key row (beams of one sentence).
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


def single_query_attention(q_NHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array,
                           mask_B1TS: jax.Array | None = None) -> jax.Array:
  """Attention of one query per row (a decoding step): out [N, H, K].

  The same softmax(q·kᵀ/√d_k)·v as `dot_product_attention` with T = 1, written
  as broadcast-multiply-and-sum over [B, S, H, K]: XLA fuses it into one pass
  over the keys and values, where the einsum form transposes the whole cache
  into a batched [B·H] matrix-vector product every step (slower on CPU).

  q may have G times the rows of k and v: query row b·G + j attends over key
  row b. Beam search uses this to let the k beams of a sentence share its
  encoder keys/values instead of holding k copies. `mask_B1TS` (True = attend)
  broadcasts to [N or B or 1, 1, 1, S].
  """
  rows, num_heads, head_dim = q_NHK.shape
  batch, length = k_BSHK.shape[:2]
  if rows % batch:
    raise ValueError(f'{rows} query rows do not split into groups over {batch} key rows')
  groups = rows // batch
  q_BGHK = (q_NHK * jnp.asarray(head_dim ** -0.5, q_NHK.dtype)).reshape(
      batch, groups, num_heads, head_dim)
  # Products in the compute dtype, sums in float32 (as the einsum's accumulator would be).
  scores_BGSH = jnp.sum((q_BGHK[:, :, None] * k_BSHK[:, None]).astype(jnp.float32), axis=-1)
  if mask_B1TS is not None:
    mask_MS = mask_B1TS.reshape(mask_B1TS.shape[0], mask_B1TS.shape[-1])
    if mask_MS.shape[0] == rows and groups > 1:
      mask_BGS = mask_MS.reshape(batch, groups, length)
    else:  # one row per key row, or one row for all
      mask_BGS = mask_MS[:, None, :]
    scores_BGSH = jnp.where(mask_BGS[..., None], scores_BGSH, jnp.finfo(jnp.float32).min)
  weights_BGSH = jax.nn.softmax(scores_BGSH, axis=2)
  out_BGHK = jnp.sum((weights_BGSH.astype(v_BSHK.dtype)[..., None] * v_BSHK[:, None])
                     .astype(jnp.float32), axis=2)
  return out_BGHK.reshape(rows, num_heads, head_dim).astype(q_NHK.dtype)
