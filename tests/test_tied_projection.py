"""The tied output projection's hand-written backward pass equals autodiff of the einsum."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn.tied_projection import tied_logits


def _einsum_logits(y_BTD, emb_VD):
  return jnp.einsum('btd,vd->btv', y_BTD, emb_VD).astype(jnp.float32)


@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_values_and_gradients_equal_autodiff_of_the_einsum(dtype, tol):
  k_y, k_e, k_g = jax.random.split(jax.random.key(0), 3)
  y_BTD = jax.random.normal(k_y, (2, 5, 8)).astype(dtype)
  emb_VD = jax.random.normal(k_e, (13, 8)).astype(dtype)
  g_BTV = jax.random.normal(k_g, (2, 5, 13))  # an arbitrary cotangent: every entry matters

  def pullback(fn):
    logits, vjp = jax.vjp(fn, y_BTD, emb_VD)
    return logits, vjp(g_BTV)

  (got, (g_y, g_e)), (want, (w_y, w_e)) = pullback(tied_logits), pullback(_einsum_logits)
  assert got.dtype == jnp.float32 and got.shape == (2, 5, 13)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
  for g, w, like in ((g_y, w_y, y_BTD), (g_e, w_e, emb_VD)):
    assert g.dtype == like.dtype and g.shape == like.shape
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                               rtol=tol, atol=tol * 10)


def test_gradients_under_jit_match():
  y_BTD = jax.random.normal(jax.random.key(1), (3, 4, 6))
  emb_VD = jax.random.normal(jax.random.key(2), (9, 6))
  targets = jnp.arange(12).reshape(3, 4) % 9

  def loss(fn, y, e):
    return -jnp.take_along_axis(jax.nn.log_softmax(fn(y, e)), targets[..., None], -1).sum()

  got = jax.jit(jax.grad(lambda y, e: loss(tied_logits, y, e), argnums=(0, 1)))(y_BTD, emb_VD)
  want = jax.grad(lambda y, e: loss(_einsum_logits, y, e), argnums=(0, 1))(y_BTD, emb_VD)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
