"""The encoder-decoder Transformer (Vaswani et al. 2017) as Flax NNX modules.

Randomness is explicit: every call takes an optional `dropout_rng` (None at
evaluation) and derives one key per dropout site from the site's name
(`dropout.site_key`), so a train step is a pure function of (params, batch,
step key) and adding a sub-layer moves no other site's mask.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from transformer_jax.nn import masks
from transformer_jax.nn.attention import cache_layout
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.dropout import dropout, site_key
from transformer_jax.nn.attention_layers import CrossAttention, SelfAttention
from transformer_jax.nn.layers import FeedForward, LayerNorm, Residual, param
from transformer_jax.nn.positions import sinusoidal_encoding
from transformer_jax.nn.tied_projection import tied_logits


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.self_attention = SelfAttention(cfg, rngs=rngs)
    self.feed_forward = FeedForward(cfg, rngs=rngs)
    self.attention_residual = Residual(cfg, rngs=rngs)
    self.ff_residual = Residual(cfg, rngs=rngs)

  def __call__(self, x_BSD, mask_B1SS, dropout_rng=None, return_weights=False):
    x, w = self.attention_residual(
        x_BSD, lambda h: self.self_attention(
            h, mask_B1SS, dropout_rng=site_key(dropout_rng, 'self_attention/weights'),
            return_weights=return_weights), site_key(dropout_rng, 'self_attention/output'))
    x, _ = self.ff_residual(
        x, lambda h: (self.feed_forward(h, site_key(dropout_rng, 'feed_forward/hidden')), None),
        site_key(dropout_rng, 'feed_forward/output'))
    return x, w


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.self_attention = SelfAttention(cfg, rngs=rngs)
    self.cross_attention = CrossAttention(cfg, rngs=rngs)
    self.feed_forward = FeedForward(cfg, rngs=rngs)
    self.self_residual = Residual(cfg, rngs=rngs)
    self.cross_residual = Residual(cfg, rngs=rngs)
    self.ff_residual = Residual(cfg, rngs=rngs)

  def __call__(self, y_BTD, memory_BSD, self_mask_B1TT, cross_mask_B1TS, dropout_rng=None,
               return_weights=False):
    y, w_self = self.self_residual(
        y_BTD, lambda h: self.self_attention(
            h, self_mask_B1TT, dropout_rng=site_key(dropout_rng, 'self_attention/weights'),
            return_weights=return_weights), site_key(dropout_rng, 'self_attention/output'))
    y, w_cross = self.cross_residual(
        y, lambda h: self.cross_attention(
            h, memory_BSD, cross_mask_B1TS,
            dropout_rng=site_key(dropout_rng, 'cross_attention/weights'),
            return_weights=return_weights), site_key(dropout_rng, 'cross_attention/output'))
    y, _ = self.ff_residual(
        y, lambda h: (self.feed_forward(h, site_key(dropout_rng, 'feed_forward/hidden')), None),
        site_key(dropout_rng, 'feed_forward/output'))
    return y, (w_self, w_cross)

  def step(self, y_N1D, step, self_kv, cross_kv, cross_mask_B11S):
    """One decoding step with cached keys/values (layouts of `single_query_attention`).

    self_kv: (k_NHKL, v_NHLK) of earlier positions (L = max decode length); the
    new position's k, v are written at index `step`. cross_kv: (k_BHKS, v_BHSK)
    of the encoder output, computed once per sentence by `Transformer.init_cache`;
    with beams, N = B·k rows read B rows of it.
    """
    k_cache, v_cache = self_kv
    max_len = k_cache.shape[-1]

    def self_attend(h):
      q, k, v = self.self_attention.project_qkv(h)
      k_new, v_new = cache_layout(k.astype(k_cache.dtype), v.astype(v_cache.dtype))
      k_all = jax.lax.dynamic_update_slice_in_dim(k_cache, k_new, step, 3)
      v_all = jax.lax.dynamic_update_slice_in_dim(v_cache, v_new, step, 2)
      mask = (jnp.arange(max_len) <= step)[None, None, None, :]
      return self.self_attention.attend_cached(q, k_all, v_all, mask), (k_all, v_all)

    y, new_self_kv = self.self_residual(y_N1D, self_attend, None)
    cross_q = lambda h: (self.cross_attention.attend_cached(
        self.cross_attention.project_q(h), cross_kv[0], cross_kv[1], cross_mask_B11S), None)
    y, _ = self.cross_residual(y, cross_q, None)
    y, _ = self.ff_residual(y, lambda h: (self.feed_forward(h), None), None)
    return y, new_self_kv


class Transformer(nnx.Module):
  """Encoder-decoder Transformer with one embedding shared by source, target and output."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    # N(0, d^-1/2) so that the embedding scaled by √d (§3.4) has unit variance.
    embed_init = nnx.initializers.normal(stddev=cfg.d_model ** -0.5)
    self.embedding_VD = param(rngs, embed_init, (cfg.vocab_size, cfg.d_model),
                              cfg.weight_dtype, ('vocab', 'embed'))
    self.encoder_layers = nnx.List([EncoderLayer(cfg, rngs=rngs)
                                    for _ in range(cfg.num_encoder_layers)])
    self.decoder_layers = nnx.List([DecoderLayer(cfg, rngs=rngs)
                                    for _ in range(cfg.num_decoder_layers)])
    if cfg.pre_ln:  # pre-LN leaves the residual stream un-normalised: normalise once at the end.
      self.encoder_norm = LayerNorm(cfg, rngs=rngs)
      self.decoder_norm = LayerNorm(cfg, rngs=rngs)
    if cfg.logits_bias:  # Marian's final_logits_bias
      self.logits_bias_V = param(rngs, nnx.initializers.zeros, (cfg.vocab_size,),
                                 cfg.weight_dtype, ('vocab',))
    self.cfg = cfg

  # -- pieces ---------------------------------------------------------------
  def embed(self, tokens_BT, positions_BT, dropout_rng=None):
    cfg = self.cfg
    emb_VD = self.embedding_VD[...].astype(cfg.compute_dtype)
    x_BTD = jnp.take(emb_VD, tokens_BT, axis=0)
    if cfg.scale_embedding:
      x_BTD = x_BTD * jnp.asarray(cfg.d_model ** 0.5, cfg.compute_dtype)
    pe_BTD = sinusoidal_encoding(positions_BT, cfg.d_model, cfg.position_layout)
    x_BTD = x_BTD + pe_BTD.astype(cfg.compute_dtype)
    return dropout(x_BTD, cfg.dropout_rate, dropout_rng)

  def logits(self, y_BTD):
    """Output projection tied to the embedding; float32 logits for a stable loss."""
    emb_VD = self.embedding_VD[...].astype(self.cfg.compute_dtype)
    logits = tied_logits(y_BTD, emb_VD)
    if self.cfg.logits_bias:
      logits = logits + self.logits_bias_V[...].astype(jnp.float32)
    return logits

  def _maybe_remat(self, fn):
    return jax.checkpoint(fn) if self.cfg.remat else fn

  def encode(self, inputs_BS, inputs_segmentation=None, inputs_position=None, dropout_rng=None,
             return_weights=False):
    """Encoder output [B, S, D] (and per-layer self-attention weights if asked)."""
    cfg = self.cfg
    seg_BS = (masks.segments_from_tokens(inputs_BS, cfg.pad_id)
              if inputs_segmentation is None else inputs_segmentation)
    pos_BS = (jnp.broadcast_to(jnp.arange(inputs_BS.shape[1]), inputs_BS.shape)
              if inputs_position is None else inputs_position)
    mask = masks.segment_mask(seg_BS, seg_BS)
    x = self.embed(inputs_BS, pos_BS, site_key(dropout_rng, 'encoder/embedding'))
    weights = []
    for i, layer in enumerate(self.encoder_layers):
      run = self._maybe_remat(lambda x, r, layer=layer: layer(x, mask, r, return_weights))
      x, w = run(x, site_key(dropout_rng, f'encoder/layer_{i}'))
      weights.append(w)
    if cfg.pre_ln:
      x = self.encoder_norm(x)
    return (x, weights) if return_weights else x

  def decode(self, memory_BSD, inputs_segmentation, decoder_inputs_BT, targets_segmentation=None,
             targets_position=None, dropout_rng=None, return_weights=False):
    """Teacher-forced decoder: logits [B, T, V] for every target position."""
    cfg = self.cfg
    tgt_seg = (masks.decoder_segments_from_tokens(decoder_inputs_BT, cfg.pad_id)
               if targets_segmentation is None else targets_segmentation)
    pos = (jnp.broadcast_to(jnp.arange(decoder_inputs_BT.shape[1]), decoder_inputs_BT.shape)
           if targets_position is None else targets_position)
    self_mask = masks.combine_masks(masks.segment_mask(tgt_seg, tgt_seg),
                                    masks.causal_mask(decoder_inputs_BT.shape[1]))
    cross_mask = masks.segment_mask(tgt_seg, inputs_segmentation)
    y = self.embed(decoder_inputs_BT, pos, site_key(dropout_rng, 'decoder/embedding'))
    weights = []
    for i, layer in enumerate(self.decoder_layers):
      run = self._maybe_remat(lambda y, r, layer=layer: layer(y, memory_BSD, self_mask, cross_mask,
                                                              r, return_weights))
      y, w = run(y, site_key(dropout_rng, f'decoder/layer_{i}'))
      weights.append(w)
    if cfg.pre_ln:
      y = self.decoder_norm(y)
    logits = self.logits(y)
    return (logits, weights) if return_weights else logits

  def __call__(self, inputs_BS, decoder_inputs_BT, *, inputs_segmentation=None,
               targets_segmentation=None, inputs_position=None, targets_position=None,
               dropout_rng=None, return_attention=False):
    """Teacher-forced forward pass: logits [B, T, V] (float32).

    Segmentation (1, 2, ... per packed sentence, 0 = padding) and positions are
    derived from the tokens when not given (one sentence per row).
    With return_attention, also returns {'encoder_self', 'decoder_self',
    'cross'}: lists over layers of weights [B, H, query, key].
    """
    src_seg = (masks.segments_from_tokens(inputs_BS, self.cfg.pad_id)
               if inputs_segmentation is None else inputs_segmentation)
    enc = self.encode(inputs_BS, src_seg, inputs_position, dropout_rng, return_attention)
    memory, enc_w = enc if return_attention else (enc, None)
    dec = self.decode(memory, src_seg, decoder_inputs_BT, targets_segmentation, targets_position,
                      dropout_rng, return_attention)
    if not return_attention:
      return dec
    logits, dec_w = dec
    return logits, {'encoder_self': enc_w, 'decoder_self': [w[0] for w in dec_w],
                    'cross': [w[1] for w in dec_w]}

  # -- incremental decoding -------------------------------------------------
  def init_cache(self, memory_BSD, inputs_segmentation_BS, max_decode_length: int):
    """Decoding cache: cross-attention k/v computed once, empty self-attention k/v.

    Keys are stored [B, H, K, L] and values [B, H, L, K] (`attention.cache_layout`).
    """
    cfg = self.cfg
    batch = memory_BSD.shape[0]
    empty_k = jnp.zeros((batch, cfg.num_heads, cfg.head_dim, max_decode_length), cfg.compute_dtype)
    empty_v = jnp.zeros((batch, cfg.num_heads, max_decode_length, cfg.head_dim), cfg.compute_dtype)
    return {
        'self_kv': [(empty_k, empty_v) for _ in self.decoder_layers],
        'cross_kv': [cache_layout(*layer.cross_attention.project_kv(memory_BSD))
                     for layer in self.decoder_layers],
        'cross_mask': (inputs_segmentation_BS != 0)[:, None, None, :],
    }

  def decode_step(self, tokens_B, step, cache):
    """Logits [B, V] for the next token after `tokens_B` at position `step`, and the new cache."""
    pos = jnp.full((tokens_B.shape[0], 1), step, jnp.int32)
    y = self.embed(tokens_B[:, None], pos)
    new_self_kv = []
    for layer, self_kv, cross_kv in zip(self.decoder_layers, cache['self_kv'], cache['cross_kv']):
      y, kv = layer.step(y, step, self_kv, cross_kv, cache['cross_mask'])
      new_self_kv.append(kv)
    if self.cfg.pre_ln:
      y = self.decoder_norm(y)
    return self.logits(y)[:, 0], {**cache, 'self_kv': new_self_kv}
