"""Inverted dropout as a pure function (Srivastava et al. 2014), and the key of each site."""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

from transformer_jax.nn import random_bits


def site_key(rng: jax.Array | None, name: str) -> jax.Array | None:
  """The dropout key of the site called `name` ('self_attention/output', 'layer_3', ...).

  fold_in(rng, crc32(name)): a site's random bits follow from its name, not from its place
  in a count, so adding or removing a sub-layer leaves every other site's mask as it was.
  None (evaluation) stays None.
  """
  return None if rng is None else jax.random.fold_in(rng, zlib.crc32(name.encode()))


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Zeroes each element with probability `rate` and scales the rest by 1/(1-rate).

  No rng (evaluation) or rate 0 returns x unchanged, so callers need no branch.

  The mask compares one random uint16 per element with round(rate·2¹⁶), no
  bits-to-float conversion; the bits come four to a Threefry hash, unrolled so that
  XLA fuses them into the mask (random_bits.py: ~12 % of a CPU train step, where
  `jax.random.bits` lowers to a loop over whole arrays; docs/PERFORMANCE.md). The
  rate applied is thereby rounded to a multiple of 2⁻¹⁶ (an error under 8e-6).
  """
  if rng is None or rate == 0.0:
    return x
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
  drop_below = min(round(rate * 2 ** 16), 2 ** 16 - 1)
  keep = random_bits.uint16_bits(rng, x.shape) >= jnp.uint16(drop_below)
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))
