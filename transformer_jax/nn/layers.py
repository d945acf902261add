"""NNX building blocks: `param`, LayerNorm, FeedForward, Residual.

Modules own parameters and call the pure math (attention.py, dropout.py); the attention
modules are in attention_layers.py. Every Param
carries `logical_axes` metadata (names such as 'embed', 'heads', 'mlp'); the
rules that map these names onto mesh axes live in sharding.py only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.dropout import dropout


def param(rngs: nnx.Rngs, init, shape, dtype, logical_axes) -> nnx.Param:
  assert len(shape) == len(logical_axes), (shape, logical_axes)
  return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=tuple(logical_axes))


class LayerNorm(nnx.Module):
  """Layer normalisation (Ba et al. 2016), statistics in float32."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    d = cfg.d_model
    self.scale = param(rngs, nnx.initializers.ones, (d,), cfg.weight_dtype, ('embed',))
    self.bias = param(rngs, nnx.initializers.zeros, (d,), cfg.weight_dtype, ('embed',))
    self.eps = cfg.layer_norm_eps

  def __call__(self, x_BTD):
    x = x_BTD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(x_BTD.dtype)


_ACTIVATIONS = {'relu': jax.nn.relu, 'silu': jax.nn.silu,
                # torch's and Marian's GELU is the exact erf form, not the tanh approximation
                'gelu': lambda x: jax.nn.gelu(x, approximate=False)}


class FeedForward(nnx.Module):
  """FFN(x) = max(0, x·W1 + b1)·W2 + b2   (paper eq. 2; cfg.activation replaces the max)."""

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
    h_BTF = _ACTIVATIONS[self.cfg.activation](x_BTD @ self.w1_DF[...].astype(dt) + self.b1_F[...].astype(dt))
    h_BTF = dropout(h_BTF, self.cfg.relu_dropout_rate, dropout_rng)
    return h_BTF @ self.w2_FD[...].astype(dt) + self.b2_D[...].astype(dt)


class Residual(nnx.Module):
  """Residual connection around a sub-layer, with its LayerNorm placed by cfg.pre_ln.

  post-LN (paper): LayerNorm(x + Dropout(Sublayer(x)));  pre-LN: x + Dropout(Sublayer(LayerNorm(x))).
  `sublayer(h) -> (y, aux)`: aux (attention weights, a cache; None when there is nothing) is
  handed back beside the output.
  """

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.norm = LayerNorm(cfg, rngs=rngs)
    self.cfg = cfg

  def __call__(self, x_BTD, sublayer, rng):
    h, aux = sublayer(self.norm(x_BTD) if self.cfg.pre_ln else x_BTD)
    y = x_BTD + dropout(h, self.cfg.dropout_rate, rng)
    return (y if self.cfg.pre_ln else self.norm(y)), aux
