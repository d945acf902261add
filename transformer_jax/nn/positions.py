"""Sinusoidal positional encoding (paper §3.5)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sinusoidal_encoding(positions_BT: jax.Array, d_model: int) -> jax.Array:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

  Indexed by explicit positions so that packed rows restart at 0 for every
  sentence and one-step decoding can ask for a single position.

  Args:
    positions_BT: integer positions, any leading shape [...].
    d_model: encoding width (even).
  Returns:
    float32 [..., d_model], even channels sine, odd channels cosine.
  """
  if d_model % 2:
    raise ValueError(f'd_model must be even for sinusoidal positions, got {d_model}')
  inv_freq_I = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
  angles_BTI = positions_BT.astype(jnp.float32)[..., None] * inv_freq_I
  pe_BTI2 = jnp.stack([jnp.sin(angles_BTI), jnp.cos(angles_BTI)], axis=-1)
  return pe_BTI2.reshape(*positions_BT.shape, d_model)


def sinusoidal_table(length: int, d_model: int) -> jax.Array:
  """[length, d_model] encoding of positions 0..length-1 (for plots and tables)."""
  return sinusoidal_encoding(jnp.arange(length), d_model)
