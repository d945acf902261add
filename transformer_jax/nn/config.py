"""The model's hyperparameters as one frozen dataclass."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

_DTYPES = ('float32', 'bfloat16', 'float16')
_ATTENTION_IMPLS = ('auto', 'xla', 'cudnn')
ACTIVATIONS = ('relu', 'silu', 'gelu')          # FFN non-linearity (paper: relu; OPUS-MT: silu)
POSITION_LAYOUTS = ('interleaved', 'halves')    # sin/cos channels: paper §3.5 | Marian, t2t


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of the encoder-decoder Transformer.

  Defaults are the paper's base model (Table 3, row "base") but for the
  vocabulary, which comes from the data.
  """
  vocab_size: int
  d_model: int = 512
  num_heads: int = 8
  d_ff: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  dropout_rate: float = 0.1            # P_drop on embeddings and sub-layer outputs
  attention_dropout_rate: float = 0.0  # on the attention weights
  relu_dropout_rate: float = 0.0       # inside the feed-forward block
  max_length: int = 256                # longest sequence the model is asked to handle
  pre_ln: bool = False                 # False: the paper's post-LN; True: pre-LN
  dtype: str = 'float32'               # compute dtype (bfloat16 on accelerators)
  param_dtype: str = 'float32'
  attention_impl: str = 'auto'         # 'auto': cuDNN on GPU when possible, else 'xla'
  remat: bool = False                  # recompute layer activations in the backward pass
  # Special ids come from the vocabulary (config_lib.special_ids); OPUS-MT: pad = bos = last id.
  pad_id: int = 0                      # masked in attention, never generated
  bos_id: int = 2                      # the decoder's start token
  eos_id: int = 3
  # Options that let the model express other post-LN Transformers (Marian / OPUS-MT):
  activation: str = 'relu'
  attention_bias: bool = False         # biases on the q, k, v and output projections
  logits_bias: bool = False            # a trained bias added to the output logits
  position_layout: str = 'interleaved'
  layer_norm_eps: float = 1e-6         # Marian: 1e-5
  scale_embedding: bool = True         # embeddings times sqrt(d_model) (paper §3.4)

  def __post_init__(self):
    def positive(name):
      if getattr(self, name) <= 0:
        raise ValueError(f'TransformerConfig.{name} must be positive, got {getattr(self, name)}')
    for name in ('vocab_size', 'd_model', 'num_heads', 'd_ff', 'max_length'):
      positive(name)
    for name in ('num_encoder_layers', 'num_decoder_layers'):
      if getattr(self, name) < 0:
        raise ValueError(f'TransformerConfig.{name} must be >= 0, got {getattr(self, name)}')
    if self.d_model % self.num_heads:
      raise ValueError(f'TransformerConfig.d_model={self.d_model} must be divisible by '
                       f'num_heads={self.num_heads}')
    if self.d_model % 2:  # sinusoidal positions pair a sine and a cosine channel
      raise ValueError(f'TransformerConfig.d_model must be even, got {self.d_model}')
    for name in ('dropout_rate', 'attention_dropout_rate', 'relu_dropout_rate'):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f'TransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}')
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f'TransformerConfig.{name}={getattr(self, name)!r}; valid: {_DTYPES}')
    for name, valid in (('activation', ACTIVATIONS), ('position_layout', POSITION_LAYOUTS)):
      if getattr(self, name) not in valid:
        raise ValueError(f'TransformerConfig.{name}={getattr(self, name)!r}; valid: {valid}')
    for name in ('pad_id', 'bos_id', 'eos_id'):
      if not 0 <= getattr(self, name) < self.vocab_size:
        raise ValueError(f'TransformerConfig.{name}={getattr(self, name)} is not an id of the '
                         f'vocabulary (size {self.vocab_size})')
    if not 0.0 < self.layer_norm_eps < 1.0:
      raise ValueError(f'TransformerConfig.layer_norm_eps must be in (0, 1), got '
                       f'{self.layer_norm_eps}')
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ValueError(f'TransformerConfig.attention_impl={self.attention_impl!r}; '
                       f'valid: {_ATTENTION_IMPLS}')

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)
