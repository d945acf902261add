"""Multi-head attention modules: `SelfAttention` and `CrossAttention`.

MultiHead(Q, K, V) = Concat(head_1..head_h)·W^O, head_i = Attention(Q·W_i^Q, K·W_i^K, V·W_i^V).
The two modules differ only in where K and V come from, so they share the output
projection and the attention call (`_HeadsToOutput`); each owns its input projections.
An attention variant is a new subclass here (or a new pure function in attention.py
that `_HeadsToOutput.attend` calls).

Shape suffixes: B batch, T query length, S key length, D model width, H heads,
K per-head width, N decoding rows (B, or B·beams).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer_jax.nn.attention import dot_product_attention, single_query_attention
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.layers import param


def _use_cudnn(cfg: TransformerConfig, dropout_active: bool, return_weights: bool) -> bool:
  """cuDNN's fused attention has no attention dropout and returns no weights."""
  if dropout_active or return_weights:
    return False
  if cfg.attention_impl == 'cudnn':
    return True
  return cfg.attention_impl == 'auto' and jax.default_backend() == 'gpu'


def _projection_init():
  return nnx.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=0,
                                           out_axis=(-2, -1))


class _HeadsToOutput(nnx.Module):
  """Attention over per-head q, k, v and the output projection W^O, shared by both kinds."""

  def _init_output(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    # Created after the input projections: parameter keys are drawn in creation order.
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
    out_init = nnx.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                                 in_axis=(0, 1), out_axis=-1)
    self.w_o_HKD = param(rngs, out_init, (h, k, d), cfg.weight_dtype, ('heads', 'kv', 'embed'))
    if cfg.attention_bias:
      self.b_o_D = param(rngs, nnx.initializers.zeros, (d,), cfg.weight_dtype, ('embed',))
    self.cfg = cfg

  def _bias(self, name: str, shape, logical_axes, rngs: nnx.Rngs, cfg: TransformerConfig):
    """A zero-initialised projection bias, only when cfg.attention_bias (Marian has them)."""
    if cfg.attention_bias:
      setattr(self, name, param(rngs, nnx.initializers.zeros, shape, cfg.weight_dtype,
                                logical_axes))

  def _plus_bias(self, x, name: str):
    return x + self._w(getattr(self, name)) if self.cfg.attention_bias else x

  def _w(self, p):
    return p[...].astype(self.cfg.compute_dtype)

  def attend(self, q_BTHK, k_BSHK, v_BSHK, mask_B1TS, dropout_rng=None, return_weights=False):
    """Attention of per-head q, k, v then the output projection: (y [B, T, D], weights or None)."""
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
    return self._plus_bias(y_BTD, 'b_o_D'), weights

  def attend_cached(self, q_N1HK, k_BHKS, v_BHSK, mask_B1TS):
    """One decoding step's attention over cached keys/values, then the output projection.

    Keys and values are in `single_query_attention`'s layout; q may have G rows
    per key row (beams sharing their sentence's encoder keys). y [N, 1, D].
    """
    out_NHK = single_query_attention(q_N1HK[:, 0], k_BHKS, v_BHSK, mask_B1TS)
    y_ND = jnp.einsum('nhk,hkd->nd', out_NHK, self._w(self.w_o_HKD))
    return self._plus_bias(y_ND, 'b_o_D')[:, None]


class SelfAttention(_HeadsToOutput):
  """Q, K and V from the same sequence, projected by one fused [D, 3, H, K] matmul."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
    self.w_qkv_D3HK = param(rngs, _projection_init(), (d, 3, h, k), cfg.weight_dtype,
                            ('embed', None, 'heads', 'kv'))
    self._init_output(cfg, rngs)
    self._bias('b_qkv_3HK', (3, h, k), (None, 'heads', 'kv'), rngs, cfg)

  def project_qkv(self, x_BTD):
    """q, k, v each [B, T, H, K]."""
    qkv = jnp.einsum('btd,dahk->abthk', x_BTD, self._w(self.w_qkv_D3HK))
    if self.cfg.attention_bias:
      qkv = qkv + self._w(self.b_qkv_3HK)[:, None, None]
    return qkv[0], qkv[1], qkv[2]

  def __call__(self, x_BTD, mask_B1TS, *, dropout_rng=None, return_weights=False):
    q, k, v = self.project_qkv(x_BTD)
    return self.attend(q, k, v, mask_B1TS, dropout_rng, return_weights)


class CrossAttention(_HeadsToOutput):
  """Q from the decoder, K and V (one fused [D, 2, H, K] matmul) from the encoder output,
  so that a decoder cache computes K and V once per sentence (`project_kv`)."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    d, h, k = cfg.d_model, cfg.num_heads, cfg.head_dim
    self.w_q_DHK = param(rngs, _projection_init(), (d, h, k), cfg.weight_dtype,
                         ('embed', 'heads', 'kv'))
    self.w_kv_D2HK = param(rngs, _projection_init(), (d, 2, h, k), cfg.weight_dtype,
                           ('embed', None, 'heads', 'kv'))
    self._init_output(cfg, rngs)
    self._bias('b_q_HK', (h, k), ('heads', 'kv'), rngs, cfg)
    self._bias('b_kv_2HK', (2, h, k), (None, 'heads', 'kv'), rngs, cfg)

  def project_q(self, x_BTD):
    return self._plus_bias(jnp.einsum('btd,dhk->bthk', x_BTD, self._w(self.w_q_DHK)), 'b_q_HK')

  def project_kv(self, memory_BSD):
    """Keys and values from the encoder output: each [B, S, H, K]."""
    kv = jnp.einsum('bsd,dahk->abshk', memory_BSD, self._w(self.w_kv_D2HK))
    if self.cfg.attention_bias:
      kv = kv + self._w(self.b_kv_2HK)[:, None, None]
    return kv[0], kv[1]

  def __call__(self, x_BTD, memory_BSD, mask_B1TS, *, dropout_rng=None, return_weights=False):
    q = self.project_q(x_BTD)
    k, v = self.project_kv(memory_BSD)
    return self.attend(q, k, v, mask_B1TS, dropout_rng, return_weights)
