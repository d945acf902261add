"""transformer_jax: the original encoder-decoder Transformer in JAX/Flax NNX.

The model and its math import eagerly; `Translator` and `train_and_evaluate` (which pull in
orbax, grain and TFDS) import on first use, so `import transformer_jax` stays light.
"""
import importlib

from transformer_jax.nn import (CrossAttention, DecoderLayer, EncoderLayer, FeedForward,
                                LayerNorm, SelfAttention, Transformer, TransformerConfig,
                                causal_mask, combine_masks, dot_product_attention, merge_heads,
                                padding_mask, segment_mask, sinusoidal_encoding,
                                sinusoidal_table, split_heads)

__version__ = '0.2.0'

_LAZY = {
    'Translator': 'transformer_jax.decoding.translator',
    'DecodeResult': 'transformer_jax.decoding.decoder',
    'make_decoder': 'transformer_jax.decoding.decoder',
    'train_and_evaluate': 'transformer_jax.training.loop',
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
