"""Greedy and beam-search decoding with the Transformer's key/value cache.

Every function is pure and traceable with fixed shapes: the whole decode is one
`lax.while_loop`, so it compiles once per (batch, source length, beam,
max_length). The encoder runs once; each decoder layer's cross-attention keys
and values are projected once (`Transformer.init_cache`) and stay outside the
loop's carry; only the self-attention cache grows, one position per step.

Token conventions: source rows are `tokens + [eos]` padded with 0; decoding
starts from bos; outputs exclude bos, include eos when produced, and are 0
after it. Shape suffixes: B sentences, S source length, L max_length,
N decoder rows (B, or B·k with k beams), V vocabulary.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from transformer_jax.beam_search import (BeamSearchResult, StepFn, beam_search_from_step_fn,
                                         length_penalty)

__all__ = ['GreedyResult', 'BeamSearchResult', 'greedy_from_step_fn', 'greedy_decode',
           'beam_search_from_step_fn', 'beam_search', 'length_penalty', 'model_step_fn',
           'make_decoder']


class GreedyResult(NamedTuple):
  tokens_BL: jax.Array  # int32, 0 after eos
  num_steps: jax.Array  # int32 scalar, decoder steps run (< L when stopped early)


def _argmax(scores_BV):
  """jnp.argmax over the last axis (ties: the first index), as a max and a compare.

  XLA:CPU lowers jnp.argmax to a variadic (value, index) reduction that runs
  about 10x slower than these two plain reductions on [64, 8192] logits.
  """
  vocab = scores_BV.shape[-1]
  is_max_BV = scores_BV == scores_BV.max(axis=-1, keepdims=True)
  return jnp.min(jnp.where(is_max_BV, jnp.arange(vocab, dtype=jnp.int32), vocab - 1), axis=-1)


def greedy_from_step_fn(step_fn: StepFn, state: Any, *, batch_size: int, max_length: int,
                        bos_id: int = 2, eos_id: int = 3, pad_id: int = 0,
                        stop_early: bool = True) -> GreedyResult:
  """Greedy decoding: y_t = argmax_v step_fn(y_{t-1}, t)[v], starting from bos.

  `step_fn(tokens_B, step, state) -> (scores_BV, state)` may return logits or
  log-probabilities (argmax is the same). Rows that have produced eos keep
  running (fixed shapes) but their outputs are replaced by pad_id. With
  stop_early, the loop ends once every row has produced eos.
  """
  init = (jnp.asarray(0, jnp.int32), jnp.full((batch_size,), bos_id, jnp.int32),
          jnp.zeros((batch_size,), bool), jnp.full((batch_size, max_length), pad_id, jnp.int32),
          state)

  def cond(carry):
    step, _, finished_B, _, _ = carry
    running = step < max_length
    if stop_early:
      running &= ~jnp.all(finished_B)
    return running

  def body(carry):
    step, last_B, finished_B, tokens_BL, state = carry
    scores_BV, state = step_fn(last_B, step, state)
    next_B = jnp.where(finished_B, pad_id, _argmax(scores_BV))
    tokens_BL = jax.lax.dynamic_update_index_in_dim(tokens_BL, next_B, step, axis=1)
    return step + 1, next_B, finished_B | (next_B == eos_id), tokens_BL, state

  step, _, _, tokens_BL, _ = jax.lax.while_loop(cond, body, init)
  return GreedyResult(tokens_BL, step)


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
    scores_NV = jax.nn.log_softmax(logits_NV) if log_probs else logits_NV
    return scores_NV, new_cache['self_kv']

  return step_fn, cache['self_kv']


def greedy_decode(model, inputs_BS, *, max_length: int, bos_id: int = 2, eos_id: int = 3,
                  stop_early: bool = True) -> jax.Array:
  """Greedy translation of inputs_BS [B, S] (rows `tokens + [eos]`, 0-padded): tokens [B, L]."""
  step_fn, state = model_step_fn(model, inputs_BS, max_length, log_probs=False)
  return greedy_from_step_fn(step_fn, state, batch_size=inputs_BS.shape[0],
                             max_length=max_length, bos_id=bos_id, eos_id=eos_id,
                             pad_id=model.cfg.pad_id, stop_early=stop_early).tokens_BL


def beam_search(model, inputs_BS, *, beam_size: int, max_length: int, alpha: float = 0.6,
                bos_id: int = 2, eos_id: int = 3,
                stop_early: bool = True) -> tuple[jax.Array, jax.Array]:
  """Beam-search translation: the best hypothesis [B, L] per sentence and its score [B].

  Score = log P(Y | X) / ((5 + |Y|) / 6)^α; see `beam_search_from_step_fn`.
  """
  step_fn, state = model_step_fn(model, inputs_BS, max_length, beam_size=beam_size)
  result = beam_search_from_step_fn(step_fn, state, batch_size=inputs_BS.shape[0],
                                    beam_size=beam_size, max_length=max_length, alpha=alpha,
                                    bos_id=bos_id, eos_id=eos_id, stop_early=stop_early)
  return result.tokens_BL, result.scores_B


def make_decoder(graphdef: nnx.GraphDef, decode_fn: Callable = greedy_decode,
                 **decode_kwargs) -> Callable:
  """`decode_fn` (greedy_decode or beam_search) jitted as `decode(state, inputs_BS)`.

      graphdef, params = nnx.split(model, nnx.Param)   # or nnx.split(model)
      translate = make_decoder(graphdef, beam_search, beam_size=4, max_length=64)
      tokens_BL, scores_B = translate(params, inputs_BS)

  decode_kwargs are fixed at construction, so jit compiles once per input shape
  (batch, source length). The weights are arguments, not constants baked into
  the executable: one compilation serves every checkpoint of the same graphdef.
  """

  @jax.jit
  def decode(state, inputs_BS):
    return decode_fn(nnx.merge(graphdef, state), inputs_BS, **decode_kwargs)

  return decode
