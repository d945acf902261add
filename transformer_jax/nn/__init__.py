"""The model and its math: pure functions (attention, masks, positions, dropout, the tied
output projection) and the NNX modules that own parameters and call them.

Floor 0 of the package: nothing here imports data, training or decoding.
"""
from transformer_jax.nn.attention import dot_product_attention, merge_heads, split_heads
from transformer_jax.nn.attention_layers import CrossAttention, SelfAttention
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.layers import FeedForward, LayerNorm, Residual
from transformer_jax.nn.masks import causal_mask, combine_masks, padding_mask, segment_mask
from transformer_jax.nn.model import DecoderLayer, EncoderLayer, Transformer
from transformer_jax.nn.positions import sinusoidal_encoding, sinusoidal_table
