"""The output projection tied to the embedding, with a backward pass laid out for the CPU.

logits_BTV = y_BTD · E_VDᵀ. Its weight gradient is dE_VD = g_BTVᵀ · y_BTD. Written that
way (what autodiff of the einsum gives), XLA:CPU materialises gᵀ, a transposed copy of the
[B·T, V] logits gradient, for the row-major GEMM: at vocab 8k the largest single memory-
bound pass of a train step (docs/PERFORMANCE.md, session 4). Computing dEᵀ_DV = yᵀ_DN · g_NV
instead transposes y (V/D times smaller) and the [D, V] result, and g is written once, in
the layout both backward matmuls read.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def tied_logits(y_BTD, emb_VD):
  """float32 logits [B, T, V] of decoder states y_BTD against the embedding emb_VD."""
  return jnp.einsum('btd,vd->btv', y_BTD, emb_VD).astype(jnp.float32)


def _tied_logits_fwd(y_BTD, emb_VD):
  return tied_logits(y_BTD, emb_VD), (y_BTD, emb_VD)


def _tied_logits_bwd(residuals, g_BTV):
  y_BTD, emb_VD = residuals
  g_BTV = g_BTV.astype(y_BTD.dtype)
  g_y_BTD = jnp.einsum('btv,vd->btd', g_BTV, emb_VD)
  g_emb_DV = jnp.einsum('btd,btv->dv', y_BTD, g_BTV)
  return g_y_BTD, g_emb_DV.T.astype(emb_VD.dtype)


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)
