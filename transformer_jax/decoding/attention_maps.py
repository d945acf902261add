"""Attention weights of one sentence pair, as arrays and as heat maps."""
from __future__ import annotations

import numpy as np
from flax import nnx


def attention_maps(model, vocab, source: str, target: str) -> dict:
  """Weights of every layer and head for one (source, target) pair, teacher-forced.

  Returns {'source_tokens', 'target_tokens' (the decoder inputs: <s> + target),
  'encoder_self': [layers, heads, S, S], 'decoder_self': [layers, heads, T, T],
  'cross': [layers, heads, T, S]} as NumPy arrays.
  """
  src_ids = vocab.encode(source) + [vocab.eos_id]
  tgt_ids = [vocab.bos_id] + vocab.encode_target(target)
  _, weights = model(np.asarray([src_ids], np.int32), np.asarray([tgt_ids], np.int32),
                     return_attention=True)
  piece = vocab.id_to_piece
  stack = lambda ws: np.stack([np.asarray(w[0]) for w in ws]) if ws else np.zeros((0,))
  return {'source_tokens': [piece(i) for i in src_ids],
          'target_tokens': [piece(i) for i in tgt_ids],
          'encoder_self': stack(weights['encoder_self']),
          'decoder_self': stack(weights['decoder_self']),
          'cross': stack(weights['cross'])}


def model_from_translator(translator):
  """The NNX model holding a Translator's loaded params (for attention_maps)."""
  return nnx.merge(translator.graphdef, translator.params)


def plot_attention(weights_HQK, query_tokens, key_tokens, *, title: str = '', max_cols: int = 4):
  """Heat maps, one per head, keys on x and queries on y. Returns the matplotlib Figure."""
  import matplotlib.pyplot as plt
  weights_HQK = np.asarray(weights_HQK)
  heads = weights_HQK.shape[0]
  cols = min(heads, max_cols)
  rows = -(-heads // cols)
  size = 0.28 * max(len(key_tokens), len(query_tokens)) + 1.5
  fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
  for h in range(rows * cols):
    ax = axes[h // cols][h % cols]
    if h >= heads:
      ax.axis('off')
      continue
    ax.imshow(weights_HQK[h], cmap='viridis', vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(key_tokens)), key_tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(query_tokens)), query_tokens, fontsize=7)
    ax.set_title(f'head {h}', fontsize=9)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig
