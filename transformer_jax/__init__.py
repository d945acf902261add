"""transformer_jax: the original encoder-decoder Transformer in JAX/Flax NNX."""
from transformer_jax.attention import dot_product_attention, merge_heads, split_heads
from transformer_jax.config import TransformerConfig
from transformer_jax.masks import causal_mask, combine_masks, padding_mask, segment_mask
from transformer_jax.model import DecoderLayer, EncoderLayer, Transformer
from transformer_jax.layers import FeedForward, LayerNorm, MultiHeadAttention
from transformer_jax.positions import sinusoidal_encoding, sinusoidal_table

__version__ = '0.1.0'
