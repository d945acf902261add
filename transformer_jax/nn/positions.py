"""Sinusoidal positional encoding (paper §3.5)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_encoding(positions_BT: jax.Array, d_model: int,
                        layout: str = 'interleaved') -> jax.Array:
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

  Indexed by explicit positions so that packed rows restart at 0 for every
  sentence and one-step decoding can ask for a single position.

  Args:
    positions_BT: integer positions, any leading shape [...].
    d_model: encoding width (even).
    layout: 'interleaved' (the paper's formula above: even channels sine, odd
      cosine) or 'halves' (Marian, tensor2tensor: channel i is the sine and
      d/2 + i the cosine of frequency i). The two differ by the fixed channel
      permutation `halves_from_interleaved`.
  Returns:
    float32 [..., d_model].
  """
  if d_model % 2:
    raise ValueError(f'd_model must be even for sinusoidal positions, got {d_model}')
  inv_freq_I = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
  angles_BTI = positions_BT.astype(jnp.float32)[..., None] * inv_freq_I
  if layout == 'halves':
    return jnp.concatenate([jnp.sin(angles_BTI), jnp.cos(angles_BTI)], axis=-1)
  if layout != 'interleaved':
    raise ValueError(f"layout must be 'interleaved' or 'halves', got {layout!r}")
  pe_BTI2 = jnp.stack([jnp.sin(angles_BTI), jnp.cos(angles_BTI)], axis=-1)
  return pe_BTI2.reshape(*positions_BT.shape, d_model)


def halves_from_interleaved(d_model: int) -> np.ndarray:
  """Channel permutation p with halves_PE[..., c] = interleaved_PE[..., p[c]].

  Applied to every d_model axis of a network's weights (embedding, projections, LayerNorm)
  it maps a model with one layout onto an exactly equal model with the other: LayerNorm,
  residuals and matmuls all commute with a consistent permutation of the channels.
  """
  return np.concatenate([np.arange(0, d_model, 2), np.arange(1, d_model, 2)])


def sinusoidal_table(length: int, d_model: int, layout: str = 'interleaved') -> jax.Array:
  """[length, d_model] encoding of positions 0..length-1 (for plots and tables)."""
  return sinusoidal_encoding(jnp.arange(length), d_model, layout)
