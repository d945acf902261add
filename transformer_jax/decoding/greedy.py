"""Greedy decoding as a pure function of a step function, and as a registered method.

Shape suffixes: B sentences, S source length, L max length, V vocabulary.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.decoding.methods import DecodeResult, lengths_from_tokens, register_method
from transformer_jax.decoding.model_step import StepFn, model_step_fn, never_generated


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
                        banned_ids: tuple[int, ...] = (0,),
                        stop_early: bool = True) -> DecodeResult:
  """Greedy decoding: y_t = argmax_v step_fn(y_{t-1}, t)[v], starting from bos.

  `step_fn(tokens_B, step, state) -> (scores_BV, state)` may return logits or
  log-probabilities (argmax is the same, and the score normalises them:
  log p(y_t) = x[y_t] - logsumexp(x)). Rows that have produced eos keep
  running (fixed shapes) but their outputs are replaced by pad_id (never generated) and their
  score stops growing. With stop_early, the loop ends once every row has
  produced eos. The score is log P(Y | X), with no length penalty.
  """
  init = (jnp.asarray(0, jnp.int32), jnp.full((batch_size,), bos_id, jnp.int32),
          jnp.zeros((batch_size,), bool), jnp.full((batch_size, max_length), pad_id, jnp.int32),
          jnp.zeros((batch_size,), jnp.float32), state)

  def cond(carry):
    step, _, finished_B, _, _, _ = carry
    running = step < max_length
    if stop_early:
      running &= ~jnp.all(finished_B)
    return running

  def body(carry):
    step, last_B, finished_B, tokens_BL, logp_B, state = carry
    scores_BV, state = step_fn(last_B, step, state)
    # Some ids are never generated (model_step.never_generated); the score still normalises
    # over the whole vocabulary.
    best_B = _argmax(scores_BV.at[:, list(banned_ids)].set(-jnp.inf))
    scores_BV = scores_BV.astype(jnp.float32)
    token_logp_B = (jnp.take_along_axis(scores_BV, best_B[:, None], axis=1)[:, 0]
                    - jax.nn.logsumexp(scores_BV, axis=-1))
    logp_B = jnp.where(finished_B, logp_B, logp_B + token_logp_B)
    next_B = jnp.where(finished_B, pad_id, best_B)
    tokens_BL = jax.lax.dynamic_update_index_in_dim(tokens_BL, next_B, step, axis=1)
    return step + 1, next_B, finished_B | (next_B == eos_id), tokens_BL, logp_B, state

  step, _, _, tokens_BL, logp_B, _ = jax.lax.while_loop(cond, body, init)
  return DecodeResult(tokens_BL, logp_B, lengths_from_tokens(tokens_BL, eos_id), step)


@register_method('greedy')
def greedy_decode(model, inputs_BS, *, max_length: int, beam_size: int = 1, alpha: float = 0.0,
                  bos_id: int | None = None, eos_id: int | None = None,
                  stop_early: bool = True) -> DecodeResult:
  """Greedy translation of inputs_BS [B, S] (rows `tokens + [eos]`, padded with pad_id).

  `beam_size` must be 1 and `alpha` is unused: greedy ranks nothing by length.
  bos_id / eos_id: the model's (`model.cfg`) unless given.
  """
  if beam_size != 1:
    raise ValueError(f'greedy decoding keeps one hypothesis: beam_size must be 1, got {beam_size}')
  step_fn, state = model_step_fn(model, inputs_BS, max_length, log_probs=False)
  return greedy_from_step_fn(step_fn, state, batch_size=inputs_BS.shape[0],
                             max_length=max_length,
                             bos_id=model.cfg.bos_id if bos_id is None else bos_id,
                             eos_id=model.cfg.eos_id if eos_id is None else eos_id,
                             pad_id=model.cfg.pad_id,
                             banned_ids=tuple(never_generated(model.cfg)), stop_early=stop_early)
