"""Dropout's bits: the unrolled hash is jax's Threefry, and its uint16 draws look uniform."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from transformer_jax.nn.random_bits import threefry2x32, uint16_bits


def test_unrolled_threefry_equals_jaxs():
  counters = jax.random.bits(jax.random.key(1), (2, 4096), jnp.uint32)
  for seed in (0, 7, 2 ** 31 + 5):
    k0, k1 = jax.random.key_data(jax.random.key(seed))
    expected = threefry2x32_p.bind(k0, k1, counters[0], counters[1])
    got = jax.jit(threefry2x32)(k0, k1, counters[0], counters[1])
    for e, g in zip(expected, got):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_uint16_draws_are_uniform_and_independent_across_lanes():
  bits = np.asarray(uint16_bits(jax.random.key(3), (64, 1024))).astype(np.int64)
  n = bits.size
  ones_per_position = [((bits >> b) & 1).mean() for b in range(16)]
  np.testing.assert_allclose(ones_per_position, 0.5, atol=4 / np.sqrt(n))  # 8 sigma
  # The four draws of one hash (adjacent along the last axis) and their neighbours are
  # uncorrelated; a bug that copied a half into two lanes correlates them fully.
  flat = (bits.reshape(-1, 4) - 32767.5) / 18918.6  # standardised: uniform's sd is 2^16/√12
  for a in range(4):
    for b in range(a + 1, 4):
      assert abs((flat[:, a] * flat[:, b]).mean()) < 5 / np.sqrt(n / 4), (a, b)
  for byte in (bits >> 8, bits & 255):  # each byte's 256 values equally often: chi-square,
    counts = np.bincount(byte.ravel(), minlength=256)  # 255 dof, p < 1e-6 beyond 390
    assert ((counts - n / 256) ** 2 / (n / 256)).sum() < 390


def test_bits_follow_from_key_and_shape():
  key = jax.random.key(0)
  a = np.asarray(uint16_bits(key, (8, 30)))  # a width that is not a multiple of four
  np.testing.assert_array_equal(a, np.asarray(jax.jit(uint16_bits, static_argnums=1)(key, (8, 30))))
  assert (a != np.asarray(uint16_bits(jax.random.key(1), (8, 30)))).mean() > 0.99
  # Raw uint32[2] key data and the typed key draw the same bits.
  np.testing.assert_array_equal(np.asarray(uint16_bits(jax.random.key_data(key), (8, 30))), a)
  assert uint16_bits(key, ()).shape == () and uint16_bits(key, (5,)).shape == (5,)


def test_other_prng_implementations_use_their_own_bits():
  key = jax.random.key(0, impl='rbg')
  np.testing.assert_array_equal(np.asarray(uint16_bits(key, (4, 8))),
                                np.asarray(jax.random.bits(key, (4, 8), jnp.uint16)))


def test_arrays_too_large_for_32_bit_counters_are_refused():
  with pytest.raises(ValueError, match='2\\^34'):
    jax.eval_shape(lambda k: uint16_bits(k, (2 ** 20, 2 ** 14 + 4)), jax.random.key(0))
