"""Masks and sinusoidal positions against hand-written arrays and the paper's formula."""
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn.masks import (causal_mask, combine_masks, padding_mask, segment_mask,
                                   segments_from_tokens)
from transformer_jax.nn.positions import sinusoidal_encoding, sinusoidal_table


def _bool(rows):
  return np.array(rows, dtype=bool)


def test_padding_mask():
  q_tokens = jnp.array([[5, 3, 0]])
  k_tokens = jnp.array([[7, 0, 2, 0]])
  want = _bool([[[[1, 0, 1, 0],
                  [1, 0, 1, 0],
                  [0, 0, 0, 0]]]])
  got = padding_mask(q_tokens, k_tokens)
  assert got.dtype == jnp.bool_
  np.testing.assert_array_equal(got, want)
  # Another pad id: 7 is now the padding and 0 a real token.
  want_pad7 = _bool([[[[0, 1, 1, 1],
                       [0, 1, 1, 1],
                       [0, 1, 1, 1]]]])
  np.testing.assert_array_equal(padding_mask(q_tokens, k_tokens, pad_id=7), want_pad7)


def test_causal_mask():
  want = _bool([[[[1, 0, 0, 0],
                  [1, 1, 0, 0],
                  [1, 1, 1, 0],
                  [1, 1, 1, 1]]]])
  got = causal_mask(4)
  assert got.shape == (1, 1, 4, 4) and got.dtype == jnp.bool_
  np.testing.assert_array_equal(got, want)


def test_segment_mask():
  q_seg = jnp.array([[1, 1, 2, 0]])
  k_seg = jnp.array([[1, 2, 2, 0, 0]])
  want = _bool([[[[1, 0, 0, 0, 0],
                  [1, 0, 0, 0, 0],
                  [0, 1, 1, 0, 0],
                  [0, 0, 0, 0, 0]]]])  # padding (0) neither attends nor is attended
  got = segment_mask(q_seg, k_seg)
  assert got.dtype == jnp.bool_
  np.testing.assert_array_equal(got, want)


def test_combine_masks_is_logical_and_with_broadcasting():
  seg = jnp.array([[1, 1, 2, 2], [1, 1, 1, 0]])
  got = combine_masks(segment_mask(seg, seg), None, causal_mask(4))
  want = _bool([[[[1, 0, 0, 0],
                  [1, 1, 0, 0],
                  [0, 0, 1, 0],
                  [0, 0, 1, 1]]],
                [[[1, 0, 0, 0],
                  [1, 1, 0, 0],
                  [1, 1, 1, 0],
                  [0, 0, 0, 0]]]])
  assert got.shape == (2, 1, 4, 4)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(combine_masks(None, causal_mask(3)), causal_mask(3))
  assert combine_masks() is None and combine_masks(None, None) is None


def test_segments_from_tokens():
  np.testing.assert_array_equal(segments_from_tokens(jnp.array([[4, 5, 0, 0], [9, 0, 3, 0]])),
                                [[1, 1, 0, 0], [1, 0, 1, 0]])


def _paper_table(length, d_model):
  """PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), float64."""
  pe = np.zeros((length, d_model))
  for pos in range(length):
    for i in range(d_model // 2):
      angle = pos / 10000 ** (2 * i / d_model)
      pe[pos, 2 * i] = np.sin(angle)
      pe[pos, 2 * i + 1] = np.cos(angle)
  return pe


@pytest.mark.parametrize('d_model', [2, 16])
def test_sinusoidal_table_is_the_paper_formula(d_model):
  got = sinusoidal_table(50, d_model)
  assert got.shape == (50, d_model) and got.dtype == jnp.float32
  # float32 angles up to 49 rad carry ~49·2^-24 absolute error.
  np.testing.assert_allclose(got, _paper_table(50, d_model), atol=1e-5)


def test_explicit_positions_index_the_table():
  positions = jnp.array([[3, 0, 7, 7], [0, 1, 0, 2]])  # packed rows restart at 0
  table = sinusoidal_table(8, 16)
  got = sinusoidal_encoding(positions, 16)
  assert got.shape == (2, 4, 16)
  np.testing.assert_array_equal(got, table[positions])
  np.testing.assert_array_equal(sinusoidal_encoding(jnp.array(5), 16), table[5])


def test_offset_is_a_fixed_rotation_of_each_frequency_pair():
  """§3.5: PE(pos + k) is a linear function of PE(pos), the same one for every pos."""
  d_model, offset = 8, 3
  table = np.asarray(sinusoidal_table(20, d_model), np.float64)
  for i in range(d_model // 2):
    w = 10000.0 ** (-2 * i / d_model)
    rotate = np.array([[np.cos(w * offset), -np.sin(w * offset)],
                       [np.sin(w * offset), np.cos(w * offset)]])
    pair = table[:, 2 * i:2 * i + 2]  # (sin, cos) at angle pos·w
    np.testing.assert_allclose(pair[:-offset] @ rotate, pair[offset:], atol=1e-5)


def test_odd_width_is_rejected():
  with pytest.raises(ValueError, match='even'):
    sinusoidal_encoding(jnp.arange(3), 7)
