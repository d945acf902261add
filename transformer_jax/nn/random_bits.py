"""Dropout's random bits: Threefry-2x32 unrolled, four 16-bit draws per hash.

`jax.random.bits(key, shape, uint16)` (partitionable Threefry, jax's default) hashes one
counter per element and keeps 16 of the hash's 64 bits, and on XLA:CPU it lowers the hash
to a rolled `while` loop of five steps that each write two u32 arrays of the full shape:
at a train step's [B, T, D] dropout sites that loop was 12–14 % of a CPU step
(docs/PERFORMANCE.md, session 10). Here the same hash (Salmon et al. 2011, 20 rounds, the
key schedule of `jax.extend.random.threefry_2x32`, which a test compares it with) is written
out as plain elementwise ops, which XLA fuses into the consumer's loop, and each hash
yields four uint16 values (its two output words, low and high halves).

Counters are each block's row-major index over the array's own shape (the last axis in
blocks of four), so the bits follow from the key and the shape alone: not from the mesh an
array is sharded over, nor from the device count.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
LANES = 4  # uint16 values per hash: two u32 words, two halves each


def _rotate_left(x, d: int):
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(key0, key1, x0, x1):
  """The Threefry-2x32 hash (20 rounds) of counter pairs (x0, x1) under key (key0, key1).

  All arguments uint32 (keys scalars, counters arrays of one shape); returns two uint32
  arrays. Written as straight-line ops (no loop) so that XLA fuses it with its consumer.
  """
  ks = (key0, key1, key0 ^ key1 ^ _PARITY)
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for rotation in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, rotation)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def _block_counters(shape: tuple[int, ...]) -> jax.Array:
  """uint32 row-major index of every element of `shape`, built from iotas (shardable)."""
  if math.prod(shape) >= 2 ** 32:
    raise ValueError(f'dropout bits for {math.prod(shape) * LANES} elements: over 2^34')
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  return index


def uint16_bits(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform random uint16 values of `shape` from a threefry key (typed or raw uint32[2])."""
  shape = tuple(shape)
  if not shape:
    return uint16_bits(rng, (1,))[0]
  data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  if data.shape != (2,):
    # Another PRNG implementation (rbg: four words): its own bits, as jax draws them.
    return jax.random.bits(rng, shape, jnp.uint16)
  *lead, width = shape
  blocks = -(-width // LANES)
  hi, lo = threefry2x32(data[0], data[1], jnp.zeros((), jnp.uint32),
                        _block_counters((*lead, blocks)))
  mask = np.uint32(0xFFFF)
  lanes = [hi & mask, hi >> np.uint32(16), lo & mask, lo >> np.uint32(16)]
  bits = jnp.stack(lanes, axis=-1).astype(jnp.uint16).reshape(*lead, blocks * LANES)
  return bits[..., :width]
