"""Properties of the pure attention math in transformer_jax/attention.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn.attention import (cache_layout, dot_product_attention, merge_heads,
                                      single_query_attention, split_heads)

B, T, S, H, K = 2, 5, 7, 3, 4


def _qkv(seed, dtype=jnp.float32, t=T, s=S, k=K):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, t, H, k))
  keys = rng.normal(size=(B, s, H, k))
  v = rng.normal(size=(B, s, H, k))
  return tuple(jnp.asarray(a, dtype) for a in (q, keys, v))


def _random_mask(seed, t=T, s=S):
  """[B, 1, T, S] boolean with at least one allowed key per query row."""
  rng = np.random.default_rng(seed)
  mask = rng.random((B, 1, t, s)) < 0.5
  mask[:, :, np.arange(t), rng.integers(0, s, size=t)] = True
  return mask


def _reference(q, k, v, mask):
  """softmax(Q·Kᵀ/√d_k + mask)·V transcribed in float64 NumPy; mask adds -inf."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  scores = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    scores = np.where(mask, scores, -np.inf)
  scores = scores - scores.max(-1, keepdims=True)
  weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
  return np.einsum('bhts,bshk->bthk', weights, v), weights


@pytest.mark.parametrize('use_mask', [False, True])
def test_matches_numpy_transcription_of_paper_eq1(use_mask):
  q, k, v = _qkv(0)
  mask = _random_mask(1) if use_mask else None
  out, weights = dot_product_attention(q, k, v, None if mask is None else jnp.asarray(mask),
                                       return_weights=True)
  want_out, want_weights = _reference(q, k, v, mask)
  assert out.shape == (B, T, H, K) and weights.shape == (B, H, T, S)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)


def test_weights_sum_to_one_and_masked_keys_get_exactly_zero():
  q, k, v = _qkv(2)
  mask = _random_mask(3)
  _, weights = dot_product_attention(q, k, v, jnp.asarray(mask), return_weights=True)
  weights = np.asarray(weights)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  mask_BHTS = np.broadcast_to(mask, weights.shape)
  assert np.all(weights[~mask_BHTS] == 0.0)
  assert np.all(weights[mask_BHTS] > 0.0)


def test_fully_masked_row_stays_finite():
  """A padding query that may attend nowhere must not produce NaN (finfo.min, not -inf)."""
  q, k, v = _qkv(4)
  mask = _random_mask(5)
  mask[0, 0, 1, :] = False
  out, weights = dot_product_attention(q, k, v, jnp.asarray(mask), return_weights=True)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(weights))


def test_bfloat16_inputs_use_float32_softmax():
  q, k, v = _qkv(6, jnp.bfloat16)
  mask = _random_mask(7)
  out, weights = dot_product_attention(q, k, v, jnp.asarray(mask), return_weights=True)
  assert weights.dtype == jnp.float32
  assert out.dtype == jnp.bfloat16
  # Float32 weights sum to one to float32 precision, not bfloat16's 2^-8.
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  want_out, _ = _reference(q, k, v, mask)  # from the same bf16-rounded inputs
  np.testing.assert_allclose(np.asarray(out, np.float32), want_out, atol=3e-2)


def test_dropout_without_rng_is_identity():
  q, k, v = _qkv(8)
  plain = dot_product_attention(q, k, v)
  no_rng = dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=None)
  np.testing.assert_array_equal(plain, no_rng)


def test_dropout_with_rng_drops_weights_and_preserves_their_mean():
  """With V = identity over keys, the output *is* the dropped weight matrix.

  Each entry must be 0 or w/(1-rate) (inverted dropout), about `rate` of them 0,
  and their mean equal to the undropped mean (1/S per entry).
  """
  rate, s = 0.5, 32
  q, k, _ = _qkv(9, t=16, s=s, k=s)
  v = jnp.broadcast_to(jnp.eye(s)[None, :, None, :], (B, s, H, s))
  out, weights = dot_product_attention(q, k, v, dropout_rate=rate,
                                       dropout_rng=jax.random.key(0), return_weights=True)
  dropped = np.asarray(out).transpose(0, 2, 1, 3)  # [B, H, T, S], like the weights
  weights = np.asarray(weights)
  kept = dropped != 0
  np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - rate), rtol=1e-5)
  assert abs(1 - kept.mean() - rate) < 0.05
  assert abs(dropped.mean() / weights.mean() - 1) < 0.05

  again = dot_product_attention(q, k, v, dropout_rate=rate, dropout_rng=jax.random.key(0))
  other = dot_product_attention(q, k, v, dropout_rate=rate, dropout_rng=jax.random.key(1))
  np.testing.assert_array_equal(out, again)
  assert not np.allclose(out, other)


@pytest.mark.parametrize('use_mask', [False, True])
def test_agrees_with_jax_nn_dot_product_attention(use_mask):
  q, k, v = _qkv(10)
  # jax.nn wants a 4-D boolean mask broadcastable to [B, N, T, S]: ours is [B, 1, T, S].
  mask = jnp.asarray(_random_mask(11)) if use_mask else None
  ours = dot_product_attention(q, k, v, mask)
  theirs = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='xla')
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_split_merge_heads_round_trip_and_head_i_is_slice_i():
  x = jnp.arange(B * T * 12, dtype=jnp.float32).reshape(B, T, 12)
  heads = split_heads(x, 3)
  assert heads.shape == (B, T, 3, 4)
  for i in range(3):  # head i reads channels [i·K, (i+1)·K): Concat order of §3.2.2
    np.testing.assert_array_equal(heads[:, :, i], x[:, :, 4 * i:4 * (i + 1)])
  np.testing.assert_array_equal(merge_heads(heads), x)


def test_split_heads_rejects_indivisible_width():
  with pytest.raises(ValueError, match='divisible'):
    split_heads(jnp.zeros((B, T, 10)), 3)


@pytest.mark.parametrize('mask_rows', [None, 1, 'keys', 'queries'])
def test_single_query_attention_matches_the_einsum_form_with_shared_keys(mask_rows):
  """Query row b·G + j over key row b == the full form with keys repeated G times."""
  batch, groups, length, heads, head_dim = 3, 4, 7, 2, 8
  keys = jax.random.split(jax.random.key(5), 4)
  q_NHK = jax.random.normal(keys[0], (batch * groups, heads, head_dim))
  k_BSHK = jax.random.normal(keys[1], (batch, length, heads, head_dim))
  v_BSHK = jax.random.normal(keys[2], (batch, length, heads, head_dim))
  mask = None
  if mask_rows is not None:
    rows = {1: 1, 'keys': batch, 'queries': batch * groups}[mask_rows]
    mask = jax.random.bernoulli(keys[3], 0.7, (rows, 1, 1, length)).at[:, ..., 0].set(True)
  out_NHK = single_query_attention(q_NHK, *cache_layout(k_BSHK, v_BSHK), mask)

  repeat = lambda x: jnp.repeat(x, groups, axis=0)
  full_mask = None
  if mask is not None:
    full_mask = repeat(mask) if mask.shape[0] == batch else mask
  expected = dot_product_attention(q_NHK[:, None], repeat(k_BSHK), repeat(v_BSHK), full_mask)
  np.testing.assert_allclose(out_NHK, expected[:, 0], rtol=1e-5, atol=1e-6)


def test_single_query_attention_rejects_rows_that_do_not_group():
  with pytest.raises(ValueError, match='5 query rows'):
    single_query_attention(jnp.zeros((5, 2, 4)), jnp.zeros((2, 2, 4, 3)), jnp.zeros((2, 2, 3, 4)))
