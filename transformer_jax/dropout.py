"""Inverted dropout as a pure function (Srivastava et al. 2014)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Zeroes each element with probability `rate` and scales the rest by 1/(1-rate).

  No rng (evaluation) or rate 0 returns x unchanged, so callers need no branch.
  """
  if rng is None or rate == 0.0:
    return x
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
