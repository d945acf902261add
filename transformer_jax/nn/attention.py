"""Scaled dot-product attention and head split/merge, as pure functions.

Shape suffixes: B batch, T query length, S key length, D model width,
H heads, K per-head width (D = H·K), N query rows and G = N / B query rows
per key row (beams of one sentence).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.nn.dropout import dropout


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


def single_query_attention(q_NHK: jax.Array, k_BHKS: jax.Array, v_BHSK: jax.Array,
                           mask_B1TS: jax.Array | None = None) -> jax.Array:
  """Attention of one query per row (a decoding step) over a cache: out [N, H, K].

  The same softmax(q·kᵀ/√d_k)·v as `dot_product_attention` with T = 1, for
  keys stored [B, H, K, S] and values [B, H, S, K]: both products are then
  plain batched matmuls (q[1, K]·Kᵀ[K, S], p[1, S]·V[S, K]) that XLA runs
  without copying the cache into another layout each step, as it must for
  [B, S, H, K] (the layout of the full pass).

  q may have G times the rows of k and v: query row b·G + j attends over key
  row b. Beam search uses this to let the k beams of a sentence share its
  encoder keys/values instead of holding k copies. `mask_B1TS` (True = attend)
  has 1, B or N rows and broadcasts to [·, 1, 1, S].
  """
  rows, num_heads, head_dim = q_NHK.shape
  batch, length = k_BHKS.shape[0], k_BHKS.shape[-1]
  if rows % batch:
    raise ValueError(f'{rows} query rows do not split into groups over {batch} key rows')
  groups = rows // batch
  q_NHK = q_NHK * jnp.asarray(head_dim ** -0.5, q_NHK.dtype)
  q_BHGK = q_NHK.reshape(batch, groups, num_heads, head_dim).transpose(0, 2, 1, 3)
  scores_BHGS = jnp.einsum('bhgk,bhks->bhgs', q_BHGK, k_BHKS,
                           preferred_element_type=jnp.float32)
  if mask_B1TS is not None:
    mask_MS = mask_B1TS.reshape(mask_B1TS.shape[0], mask_B1TS.shape[-1])
    if mask_MS.shape[0] == rows and groups > 1:
      mask_B1GS = mask_MS.reshape(batch, 1, groups, length)
    else:  # one row per key row, or one row for all
      mask_B1GS = mask_MS[:, None, None, :]
    scores_BHGS = jnp.where(mask_B1GS, scores_BHGS, jnp.finfo(jnp.float32).min)
  weights_BHGS = jax.nn.softmax(scores_BHGS, axis=-1)
  out_BHGK = jnp.einsum('bhgs,bhsk->bhgk', weights_BHGS.astype(v_BHSK.dtype), v_BHSK)
  return out_BHGK.transpose(0, 2, 1, 3).reshape(rows, num_heads, head_dim)


def cache_layout(k_BSHK: jax.Array, v_BSHK: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keys [B, S, H, K] -> [B, H, K, S] and values -> [B, H, S, K]: `single_query_attention`'s."""
  return k_BSHK.transpose(0, 2, 3, 1), v_BSHK.transpose(0, 2, 1, 3)
