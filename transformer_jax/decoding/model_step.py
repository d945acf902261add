"""The Transformer as a decoding step function with its key/value cache.

The encoder runs once; each decoder layer's cross-attention keys and values are
projected once (`Transformer.init_cache`) and stay outside the search loop's carry; only
the self-attention cache grows, one position per step.

Shape suffixes: B sentences, S source length, N decoder rows (B, or B·k with k beams),
V vocabulary.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# step_fn(tokens_N, step, state) -> (scores_NV, state): what greedy and beam search drive.
StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


def never_generated(cfg) -> list[int]:
  """Ids no decoder emits: padding (OPUS-MT's decoder start token is padding too)."""
  return [cfg.pad_id]


def model_step_fn(model, inputs_BS, max_length: int, *, beam_size: int = 1,
                  log_probs: bool = True) -> tuple[StepFn, Any]:
  """The model as a step function over N = B·beam_size rows, and its initial state.

  Encodes once and projects the cross-attention keys/values once on the B
  sentences. With beams (row b·k + j is beam j of sentence b) they stay at B
  rows: a one-query attention step lets the k beams of a sentence read the
  same keys (`single_query_attention`), so they are neither copied k times nor
  gathered by beam search (they are closed over, not part of the state). The
  state is the self-attention cache only.
  """
  inputs_BS = jnp.asarray(inputs_BS, jnp.int32)
  segmentation_BS = (inputs_BS != model.cfg.pad_id).astype(jnp.int32)
  memory_BSD = model.encode(inputs_BS, segmentation_BS)
  cache = model.init_cache(memory_BSD, segmentation_BS, max_length)
  if beam_size > 1:
    repeat = lambda x: jnp.repeat(x, beam_size, axis=0)
    cache = {**cache, 'self_kv': [(repeat(k), repeat(v)) for k, v in cache['self_kv']]}
  fixed = {'cross_kv': cache['cross_kv'], 'cross_mask': cache['cross_mask']}

  def step_fn(tokens_N, step, self_kv):
    logits_NV, new_cache = model.decode_step(tokens_N, step, {**fixed, 'self_kv': self_kv})
    if not log_probs:  # greedy: it keeps pad out of its argmax itself
      return logits_NV, new_cache['self_kv']
    # Padding is never generated. Masked after the softmax, as transformers' bad_words_ids
    # does for OPUS-MT, so the other tokens' log-probabilities are what the model says.
    scores_NV = jax.nn.log_softmax(logits_NV).at[:, never_generated(model.cfg)].set(-jnp.inf)
    return scores_NV, new_cache['self_kv']

  return step_fn, cache['self_kv']


