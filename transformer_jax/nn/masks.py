"""Attention masks as pure functions. All masks are boolean, True = may attend.

Every mask has the shape [B, 1, T, S] (or broadcasts to it): the singleton is
the head axis, so one mask serves all heads.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def padding_mask(q_tokens_BT: jax.Array, k_tokens_BS: jax.Array, pad_id: int = 0) -> jax.Array:
  """[B, 1, T, S]: True where neither the query nor the key is padding."""
  q_ok = q_tokens_BT != pad_id
  k_ok = k_tokens_BS != pad_id
  return (q_ok[:, None, :, None] & k_ok[:, None, None, :])


def causal_mask(length: int) -> jax.Array:
  """[1, 1, T, T]: True where key position s <= query position t (paper §3.2.3)."""
  idx = jnp.arange(length)
  return (idx[None, :] <= idx[:, None])[None, None]


def segment_mask(q_segments_BT: jax.Array, k_segments_BS: jax.Array) -> jax.Array:
  """[B, 1, T, S]: True where query and key lie in the same packed sentence.

  Segment ids number the sentences packed into one row 1, 2, ...; 0 marks
  padding, which attends nowhere and is attended by nothing.
  """
  same = q_segments_BT[:, None, :, None] == k_segments_BS[:, None, None, :]
  real = (q_segments_BT != 0)[:, None, :, None] & (k_segments_BS != 0)[:, None, None, :]
  return same & real


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
  """Logical AND of the given masks (None entries are ignored; all None -> None)."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  out = present[0]
  for m in present[1:]:
    out = jnp.logical_and(out, m)
  return out


def segments_from_tokens(tokens_BT: jax.Array, pad_id: int = 0) -> jax.Array:
  """Segment ids for unpacked rows: 1 on real tokens, 0 on padding."""
  return (tokens_BT != pad_id).astype(jnp.int32)


def decoder_segments_from_tokens(decoder_inputs_BT: jax.Array, pad_id: int = 0) -> jax.Array:
  """`segments_from_tokens` of unpacked decoder inputs, with position 0 always real.

  Position 0 holds the decoder's start token, which Marian / OPUS-MT models take to be the
  padding id itself: it must still be attended to.
  """
  first_T = jnp.arange(decoder_inputs_BT.shape[-1]) == 0
  return ((decoder_inputs_BT != pad_id) | first_T).astype(jnp.int32)
