"""NNX building blocks: LayerNorm, MultiHeadAttention, FeedForward.

Modules own parameters and call the pure math in attention.py. Every Param
carries `logical_axes` metadata (names such as 'embed', 'heads', 'mlp'); the
rules that map these names onto mesh axes live in sharding.py only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer_jax.attention import dot_product_attention, single_query_attention
from transformer_jax.config import TransformerConfig
from transformer_jax.dropout import dropout


def param(rngs: nnx.Rngs, init, shape, dtype, logical_axes) -> nnx.Param:
  assert len(shape) == len(logical_axes), (shape, logical_axes)
  return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=tuple(logical_axes))


class LayerNorm(nnx.Module):
  """Layer normalisation (Ba et al. 2016), statistics in float32."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, eps: float = 1e-6):
    d = cfg.d_model
    self.scale = param(rngs, nnx.initializers.ones, (d,), cfg.weight_dtype, ('embed',))
    self.bias = param(rngs, nnx.initializers.zeros, (d,), cfg.weight_dtype, ('embed',))
    self.eps = eps

  def __call__(self, x_BTD):
    x = x_BTD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x_BTD.dtype)


def _use_cudnn(cfg: TransformerConfig, dropout_active: bool, return_weights: bool) -> bool:
  """cuDNN's fused attention has no attention dropout and returns no weights."""
  if dropout_active or return_weights:
    return False
  if cfg.attention_impl == 'cudnn':
    return True
  return cfg.attention_impl == 'auto' and jax.default_backend() == 'gpu'


class MultiHeadAttention(nnx.Module):
  """MultiHead(Q, K, V) = Concat(head_1..head_h)·W^O, head_i = Attention(Q·W_i^Q, K·W_i^K, V·W_i^V).

  Self-attention projects Q, K, V with one fused [D, 3, H, K] matmul; cross-
  attention projects Q from the decoder and K, V (fused [D, 2, H, K]) from the
  encoder output, so a decoder cache can compute K, V once per sentence.
  """

  def __init__(self, cfg: TransformerConfig, *, self_attention: bool, rngs: nnx.Rngs):
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
    init = nnx.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=0,
                                             out_axis=(-2, -1))
    if self_attention:
      self.w_qkv_D3HK = param(rngs, init, (d, 3, h, k), cfg.weight_dtype,
                              ('embed', None, 'heads', 'kv'))
    else:
      self.w_q_DHK = param(rngs, init, (d, h, k), cfg.weight_dtype, ('embed', 'heads', 'kv'))
      self.w_kv_D2HK = param(rngs, init, (d, 2, h, k), cfg.weight_dtype,
                             ('embed', None, 'heads', 'kv'))
    out_init = nnx.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                                 in_axis=(0, 1), out_axis=-1)
    self.w_o_HKD = param(rngs, out_init, (h, k, d), cfg.weight_dtype, ('heads', 'kv', 'embed'))
    self.cfg = cfg
    self.self_attention = self_attention

  def _w(self, p):
    return p[...].astype(self.cfg.compute_dtype)

  def project_qkv(self, x_BTD):
    """Self-attention: q, k, v each [B, T, H, K]."""
    qkv = jnp.einsum('btd,dahk->abthk', x_BTD, self._w(self.w_qkv_D3HK))
    return qkv[0], qkv[1], qkv[2]

  def project_q(self, x_BTD):
    return jnp.einsum('btd,dhk->bthk', x_BTD, self._w(self.w_q_DHK))

  def project_kv(self, memory_BSD):
    """Cross-attention keys and values from the encoder output: each [B, S, H, K]."""
    kv = jnp.einsum('bsd,dahk->abshk', memory_BSD, self._w(self.w_kv_D2HK))
    return kv[0], kv[1]

  def attend(self, q_BTHK, k_BSHK, v_BSHK, mask_B1TS, dropout_rng=None, return_weights=False):
    """Attention of per-head q, k, v followed by the output projection: y [B, T, D]."""
    cfg = self.cfg
    attn_dropout = cfg.attention_dropout_rate if dropout_rng is not None else 0.0
    weights = None
    if _use_cudnn(cfg, attn_dropout > 0.0, return_weights):
      out_BTHK = jax.nn.dot_product_attention(
          q_BTHK, k_BSHK, v_BSHK, mask=mask_B1TS,
          implementation='cudnn' if cfg.attention_impl == 'cudnn' else None)
    else:
      out = dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask_B1TS, dropout_rate=attn_dropout,
                                  dropout_rng=dropout_rng, return_weights=return_weights)
      out_BTHK, weights = out if return_weights else (out, None)
    y_BTD = jnp.einsum('bthk,hkd->btd', out_BTHK, self._w(self.w_o_HKD))
    return y_BTD, weights

  def attend_cached(self, q_N1HK, k_BHKS, v_BHSK, mask_B1TS):
    """One decoding step's attention over cached keys/values, then the output projection.

    Keys and values are in `single_query_attention`'s layout; q may have G rows
    per key row (beams sharing their sentence's encoder keys). y [N, 1, D].
    """
    out_NHK = single_query_attention(q_N1HK[:, 0], k_BHKS, v_BHSK, mask_B1TS)
    return jnp.einsum('nhk,hkd->nd', out_NHK, self._w(self.w_o_HKD))[:, None]

  def __call__(self, x_BTD, mask_B1TS, *, memory_BSD=None, dropout_rng=None,
               return_weights=False):
    """Self-attention when memory is None, else cross-attention over memory."""
    if self.self_attention:
      if memory_BSD is not None:
        raise ValueError('a self-attention module was given encoder memory')
      q, k, v = self.project_qkv(x_BTD)
    else:
      if memory_BSD is None:
        raise ValueError('a cross-attention module needs memory_BSD (the encoder output)')
      q = self.project_q(x_BTD)
      k, v = self.project_kv(memory_BSD)
    return self.attend(q, k, v, mask_B1TS, dropout_rng, return_weights)


class FeedForward(nnx.Module):
  """FFN(x) = max(0, x·W1 + b1)·W2 + b2   (paper eq. 2)."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.d_ff
    init = nnx.initializers.lecun_normal()
    self.w1_DF = param(rngs, init, (d, f), cfg.weight_dtype, ('embed', 'mlp'))
    self.b1_F = param(rngs, nnx.initializers.zeros, (f,), cfg.weight_dtype, ('mlp',))
    self.w2_FD = param(rngs, init, (f, d), cfg.weight_dtype, ('mlp', 'embed'))
    self.b2_D = param(rngs, nnx.initializers.zeros, (d,), cfg.weight_dtype, ('embed',))
    self.cfg = cfg

  def __call__(self, x_BTD, dropout_rng=None):
    dt = self.cfg.compute_dtype
    h_BTF = jax.nn.relu(x_BTD @ self.w1_DF[...].astype(dt) + self.b1_F[...].astype(dt))
    h_BTF = dropout(h_BTF, self.cfg.relu_dropout_rate, dropout_rng)
    return h_BTF @ self.w2_FD[...].astype(dt) + self.b2_D[...].astype(dt)
