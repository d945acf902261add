"""The Marian (transformers `MarianMTModel`) format: its config and weight names mapped onto
this project's TransformerConfig and parameter tree, both ways, with NumPy only.

Marian is the paper's post-LN Transformer with a few choices of its own, each an option of
our model: SiLU ("swish") or GELU in the FFN, biases on the attention projections, a
`final_logits_bias`, sinusoids laid out sin-half | cos-half, LayerNorm epsilon 1e-5, one
embedding shared by encoder, decoder and output, and special ids from its vocabulary (pad =
decoder start = the last id, eos = 0).

torch's `Linear` stores W [out, in] and computes x·Wᵀ + b; ours store [in, ..., out] blocks,
so every projection is transposed and split into heads here. Our interleaved position layout
maps onto Marian's by a permutation of the d_model channels (`positions.halves_from_interleaved`)
applied to every d_model axis, which leaves the network's function unchanged exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from transformer_jax.errors import UserError
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.positions import halves_from_interleaved

ACTIVATION_FROM_MARIAN = {'relu': 'relu', 'swish': 'silu', 'silu': 'silu', 'gelu': 'gelu'}
ACTIVATION_TO_MARIAN = {'relu': 'relu', 'silu': 'swish', 'gelu': 'gelu'}
MARIAN_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default; MarianConfig has no field for it
# What an export records of the exported model that Marian's format cannot hold, so that
# importing the export gives back the same model (layout, epsilon, which biases exist).
ORIGIN_KEY = 'transformer_jax'
EMBEDDING_KEYS = ('model.shared.weight', 'model.encoder.embed_tokens.weight',
                  'model.decoder.embed_tokens.weight', 'lm_head.weight')


class MarianFormatError(UserError, ValueError):
  """A Marian config or checkpoint this project's model cannot express exactly."""


def model_options_from_marian(hf: dict, where: str) -> dict[str, Any]:
  """`config.model` values (architecture only) of a Marian config.json's contents."""
  def need(key, ok, what):
    if not ok(hf.get(key)):
      raise MarianFormatError(f'{where}: `{key}` = {hf.get(key)!r}: {what}')

  need('model_type', lambda v: v == 'marian', "only Marian models ('model_type': 'marian') load")
  need('share_encoder_decoder_embeddings', lambda v: v in (None, True),
       'separate source and target embeddings are not supported (one shared table is)')
  need('tie_word_embeddings', lambda v: v in (None, True), 'an untied output projection is '
       'not supported')
  need('activation_function', lambda v: v in ACTIVATION_FROM_MARIAN,
       f'supported: {sorted(ACTIVATION_FROM_MARIAN)}')
  for a, b in (('encoder_attention_heads', 'decoder_attention_heads'),
               ('encoder_ffn_dim', 'decoder_ffn_dim')):
    need(b, lambda v, a=a: v == hf.get(a), f'must equal `{a}` = {hf.get(a)!r}')
  for key in ('normalize_before', 'normalize_embedding', 'add_final_layer_norm'):
    need(key, lambda v: not v, 'pre-LN and embedding LayerNorm variants are not Marian')
  origin = hf.get(ORIGIN_KEY) or {}
  return {
      'd_model': hf['d_model'], 'num_heads': hf['encoder_attention_heads'],
      'd_ff': hf['encoder_ffn_dim'], 'num_encoder_layers': hf['encoder_layers'],
      'num_decoder_layers': hf['decoder_layers'], 'pre_ln': False,
      'activation': ACTIVATION_FROM_MARIAN[hf['activation_function']],
      'attention_bias': origin.get('attention_bias', True),
      'logits_bias': origin.get('logits_bias', True),
      'position_layout': origin.get('position_layout', 'halves'),
      'layer_norm_eps': origin.get('layer_norm_eps', MARIAN_LAYER_NORM_EPS),
      'scale_embedding': bool(hf.get('scale_embedding', False)),
  }


def marian_config(cfg: TransformerConfig, *, max_positions: int,
                  dropout: dict[str, float]) -> dict[str, Any]:
  """config.json of the Marian model equal to `cfg` (post-LN only)."""
  if cfg.pre_ln:
    raise MarianFormatError(
        'a pre-LN model (model.pre_ln=True) has no Marian equivalent: Marian is post-LN, and '
        'no weight mapping turns one into the other; export a post-LN run')
  return {
      'architectures': ['MarianMTModel'], 'model_type': 'marian',
      'vocab_size': cfg.vocab_size, 'decoder_vocab_size': cfg.vocab_size,
      'd_model': cfg.d_model, 'encoder_layers': cfg.num_encoder_layers,
      'decoder_layers': cfg.num_decoder_layers, 'encoder_attention_heads': cfg.num_heads,
      'decoder_attention_heads': cfg.num_heads, 'encoder_ffn_dim': cfg.d_ff,
      'decoder_ffn_dim': cfg.d_ff, 'activation_function': ACTIVATION_TO_MARIAN[cfg.activation],
      'max_position_embeddings': max_positions, 'scale_embedding': cfg.scale_embedding,
      'pad_token_id': cfg.pad_id, 'eos_token_id': cfg.eos_id, 'bos_token_id': cfg.bos_id,
      'decoder_start_token_id': cfg.bos_id, 'forced_eos_token_id': None,
      'share_encoder_decoder_embeddings': True, 'tie_word_embeddings': True,
      'static_position_embeddings': True, 'is_encoder_decoder': True, 'dtype': 'float32',
      'dropout': dropout['dropout'], 'attention_dropout': dropout['attention_dropout'],
      'activation_dropout': dropout['activation_dropout'],
      ORIGIN_KEY: {'position_layout': cfg.position_layout, 'layer_norm_eps': cfg.layer_norm_eps,
                   'attention_bias': cfg.attention_bias, 'logits_bias': cfg.logits_bias},
  }


# -- weights ------------------------------------------------------------------------------
def _layer_names(kind: str) -> list[tuple[str, str, str]]:
  """(marian attention, our attention, our residual) per attention of a layer kind."""
  if kind == 'encoder':
    return [('self_attn', 'self_attention', 'attention_residual')]
  return [('self_attn', 'self_attention', 'self_residual'),
          ('encoder_attn', 'cross_attention', 'cross_residual')]


def _norm_names(marian_attention: str) -> str:
  return f'{marian_attention}_layer_norm'


def params_from_marian(tensors: dict[str, np.ndarray], cfg: TransformerConfig,
                       where: str) -> dict:
  """Our parameter tree (nested dicts as `nnx.to_pure_dict`) from Marian's state dict."""
  get = _Reader(tensors, where)
  h, k, d = cfg.num_heads, cfg.head_dim, cfg.d_model
  heads_in = lambda w: w.T.reshape(d, h, k)           # Linear [H·K, D] -> [D, H, K]
  tree = {'embedding_VD': get.first(EMBEDDING_KEYS)}
  if cfg.logits_bias:
    tree['logits_bias_V'] = get('final_logits_bias').reshape(-1)
  elif 'final_logits_bias' in tensors:
    get.zero('final_logits_bias')
  for kind, count in (('encoder', cfg.num_encoder_layers), ('decoder', cfg.num_decoder_layers)):
    layers = {}
    for i in range(count):
      pre, layer = f'model.{kind}.layers.{i}.', {}
      for m_attn, attn, residual in _layer_names(kind):
        a = f'{pre}{m_attn}.'
        q, kk, v = (heads_in(get(a + f'{n}_proj.weight')) for n in 'qkv')
        biases = [get.bias(a + f'{n}_proj.bias', cfg.attention_bias).reshape(h, k) for n in 'qkv']
        out = {'w_o_HKD': get(a + 'out_proj.weight').T.reshape(h, k, d)}
        if attn == 'self_attention':
          out['w_qkv_D3HK'] = np.stack([q, kk, v], axis=1)
          out['b_qkv_3HK'] = np.stack(biases)
        else:
          out.update(w_q_DHK=q, w_kv_D2HK=np.stack([kk, v], axis=1), b_q_HK=biases[0],
                     b_kv_2HK=np.stack(biases[1:]))
        out['b_o_D'] = get.bias(a + 'out_proj.bias', cfg.attention_bias)
        if not cfg.attention_bias:
          out = {n: w for n, w in out.items() if not n.startswith('b_')}
        layer[attn] = out
        layer[residual] = {'norm': get.norm(pre + _norm_names(m_attn))}
      layer['feed_forward'] = {'w1_DF': get(pre + 'fc1.weight').T, 'b1_F': get(pre + 'fc1.bias'),
                               'w2_FD': get(pre + 'fc2.weight').T, 'b2_D': get(pre + 'fc2.bias')}
      layer['ff_residual'] = {'norm': get.norm(pre + 'final_layer_norm')}
      layers[i] = layer
    tree[f'{kind}_layers'] = layers
  if cfg.position_layout == 'interleaved':  # Marian's channels are in the halves layout
    tree = permute_model_channels(tree, np.argsort(halves_from_interleaved(d)))
  return tree


def marian_from_params(tree: dict, cfg: TransformerConfig) -> dict[str, np.ndarray]:
  """Marian's state dict (float32 NumPy) of the model with parameters `tree`."""
  if cfg.pre_ln:
    marian_config(cfg, max_positions=0, dropout={})  # raises the pre-LN error
  d = cfg.d_model
  if cfg.position_layout == 'interleaved':
    tree = permute_model_channels(tree, halves_from_interleaved(d))
  f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))
  zeros = lambda n: np.zeros((n,), np.float32)
  heads_out = lambda w: f32(w.reshape(d, -1).T)       # [D, H, K] -> Linear [H·K, D]
  emb = f32(tree['embedding_VD'])
  out = {key: emb for key in EMBEDDING_KEYS}
  out['final_logits_bias'] = (f32(tree['logits_bias_V'])[None] if cfg.logits_bias
                              else np.zeros((1, cfg.vocab_size), np.float32))
  for kind in ('encoder', 'decoder'):
    for i, layer in tree[f'{kind}_layers'].items():
      pre = f'model.{kind}.layers.{i}.'
      for m_attn, attn, residual in _layer_names(kind):
        p, a = layer[attn], f'{pre}{m_attn}.'
        if attn == 'self_attention':
          ws = [p['w_qkv_D3HK'][:, j] for j in range(3)]
          bs = [p['b_qkv_3HK'][j] for j in range(3)] if cfg.attention_bias else [None] * 3
        else:
          ws = [p['w_q_DHK'], p['w_kv_D2HK'][:, 0], p['w_kv_D2HK'][:, 1]]
          bs = ([p['b_q_HK'], p['b_kv_2HK'][0], p['b_kv_2HK'][1]] if cfg.attention_bias
                else [None] * 3)
        for n, w, b in zip('qkv', ws, bs):
          out[a + f'{n}_proj.weight'] = heads_out(w)
          out[a + f'{n}_proj.bias'] = zeros(d) if b is None else f32(b.reshape(-1))
        out[a + 'out_proj.weight'] = f32(p['w_o_HKD'].reshape(-1, d).T)
        out[a + 'out_proj.bias'] = f32(p['b_o_D']) if cfg.attention_bias else zeros(d)
        _write_norm(out, pre + _norm_names(m_attn), layer[residual]['norm'])
      ff = layer['feed_forward']
      out.update({pre + 'fc1.weight': f32(ff['w1_DF'].T), pre + 'fc1.bias': f32(ff['b1_F']),
                  pre + 'fc2.weight': f32(ff['w2_FD'].T), pre + 'fc2.bias': f32(ff['b2_D'])})
      _write_norm(out, pre + 'final_layer_norm', layer['ff_residual']['norm'])
  return out


def _write_norm(out: dict, name: str, norm: dict) -> None:
  out[name + '.weight'] = np.asarray(norm['scale'], np.float32)
  out[name + '.bias'] = np.asarray(norm['bias'], np.float32)


def permute_model_channels(tree: dict, perm: np.ndarray) -> dict:
  """The same network with its d_model channels reordered: new[..., c] = old[..., perm[c]].

  Every d_model axis moves together: embedding columns, LayerNorm scale and bias, the input
  axis of q/k/v/FFN-in projections and the output axis of W^O, FFN-out and their biases.
  Attention heads and the FFN's hidden units are internal and stay where they are.
  """
  axis_of = {'embedding_VD': 1, 'scale': 0, 'bias': 0, 'w_qkv_D3HK': 0, 'w_q_DHK': 0,
             'w_kv_D2HK': 0, 'w_o_HKD': 2, 'b_o_D': 0, 'w1_DF': 0, 'w2_FD': 1, 'b2_D': 0}

  def visit(node):
    if not isinstance(node, dict):
      return node
    return {name: (np.take(np.asarray(value), perm, axis=axis_of[name])
                   if name in axis_of and not isinstance(value, dict) else visit(value))
            for name, value in node.items()}
  return visit(tree)


class _Reader:
  """Named tensors of a Marian state dict, with errors that name the file and the tensor."""

  def __init__(self, tensors: dict[str, np.ndarray], where: str):
    self.tensors, self.where = tensors, where

  def __call__(self, name: str) -> np.ndarray:
    if name not in self.tensors:
      raise MarianFormatError(f'{self.where} has no tensor {name!r}: not a Marian checkpoint '
                              'of the architecture its config.json describes')
    return np.asarray(self.tensors[name], np.float32)

  def first(self, names) -> np.ndarray:
    for name in names:
      if name in self.tensors:
        return self(name)
    raise MarianFormatError(f'{self.where} has none of the embedding tensors {list(names)}')

  def zero(self, name: str) -> None:
    if np.any(self(name)):
      raise MarianFormatError(f'{self.where}: {name!r} is not zero but the model being built '
                              'has no such bias')

  def bias(self, name: str, kept: bool) -> np.ndarray:
    if not kept:
      self.zero(name)
    return self(name)

  def norm(self, prefix: str) -> dict:
    return {'scale': self(prefix + '.weight'), 'bias': self(prefix + '.bias')}
