"""Beam search with the GNMT length penalty, as a pure function of a step function.

The search knows nothing about the model: it drives a
`step_fn(tokens_N, step, state) -> (log_probs_NV, state)` over N = B·k rows
(row b·k + j is beam j of sentence b), and reorders every leaf of `state` by
beam after each step. Whatever is the same for all beams of a sentence (the
encoder's cross-attention keys/values) belongs in the step function's closure,
not in `state`, so that it is never gathered.

Shape suffixes: B sentences, W beams (k of them: the beam width), C = 2k candidates,
L max length, V vocabulary, N = B·k decoder rows. (K is the per-head width elsewhere.)
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.decoding.methods import DecodeResult, lengths_from_tokens, register_method
from transformer_jax.decoding.model_step import StepFn, model_step_fn

NEG_INF = -jnp.inf  # an empty slot; -inf (not -1e7) so that no arithmetic revives it


def length_penalty(length, alpha: float):
  """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^α (Wu et al. 2016, eq. 14); |Y| counts eos."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _take_beams(x_BW_, beam_idx_BC):
  """x[b, beam_idx[b, c]] for every sentence b: [B, W, ...] -> [B, C, ...]."""
  idx = beam_idx_BC.reshape(beam_idx_BC.shape + (1,) * (x_BW_.ndim - 2))
  return jnp.take_along_axis(x_BW_, idx, axis=1)


def _top(scores_BN, k, *arrays_BN_):
  """The k highest-scoring entries along axis 1 of `scores` and of each array."""
  top_scores, idx = jax.lax.top_k(scores_BN, k)
  return (top_scores,) + tuple(_take_beams(a, idx) for a in arrays_BN_)


def _top_candidates(cand_logp_BWV, n_cand):
  """The n_cand best (log-prob, parent beam, token) over all k·V extensions of a sentence.

  Two stages: the n_cand best tokens of each beam, then the n_cand best of those
  k·n_cand. Any global top-n_cand entry is in its beam's top n_cand, so this is
  the one-stage top_k over [B, k·V], ties included (both order them by beam,
  then token); XLA:CPU runs top_k over a 4×8k row ~3.5× slower than these two.
  """
  b, k, vocab = cand_logp_BWV.shape
  per_beam = min(n_cand, vocab)  # a beam cannot give more than its vocabulary
  beam_logp_BWP, beam_token_BWP = jax.lax.top_k(cand_logp_BWV, per_beam)
  cand_logp_BC, j_BC = jax.lax.top_k(beam_logp_BWP.reshape(b, k * per_beam), n_cand)
  token_BC = jnp.take_along_axis(beam_token_BWP.reshape(b, k * per_beam), j_BC, axis=1)
  return cand_logp_BC, j_BC // per_beam, token_BC


def _extend_beams(carry, step_fn: StepFn, *, alpha: float, eos_id: int):
  """One search step: extend every live hypothesis, keep the live and finished k best."""
  step, live_tokens, live_logp, fin_tokens, fin_scores, state = carry
  b, k = live_logp.shape
  n_cand = 2 * k
  last_N = jax.lax.dynamic_index_in_dim(live_tokens, step, axis=2, keepdims=False).reshape(-1)
  log_probs_NV, state = step_fn(last_N, step, state)
  vocab = log_probs_NV.shape[-1]
  cand_logp_BWV = live_logp[:, :, None] + log_probs_NV.reshape(b, k, vocab).astype(jnp.float32)
  cand_logp_BC, parent_BC, token_BC = _top_candidates(cand_logp_BWV, n_cand)
  cand_tokens_BCL = jax.lax.dynamic_update_index_in_dim(
      _take_beams(live_tokens, parent_BC), token_BC[:, :, None], step + 1, axis=2)
  ends_BC = token_BC == eos_id

  # Live: the k best candidates that did not end in eos.
  live_logp, live_tokens, live_parent_BW = _top(
      jnp.where(ends_BC, NEG_INF, cand_logp_BC), k, cand_tokens_BCL, parent_BC)
  rows_N = (jnp.arange(b)[:, None] * k + live_parent_BW).reshape(-1)
  state = jax.tree.map(lambda x: jnp.take(x, rows_N, axis=0), state)

  # Finished: the k best of the old finished set and the candidates that end now,
  # counting an eos only among the top k (top_k sorts), as fairseq does.
  finishes_BC = ends_BC & (jnp.arange(n_cand) < k)
  new_scores_BC = jnp.where(finishes_BC, cand_logp_BC / length_penalty(step + 1, alpha),
                            NEG_INF)
  fin_scores, fin_tokens = _top(
      jnp.concatenate([fin_scores, new_scores_BC], axis=1), k,
      jnp.concatenate([fin_tokens, cand_tokens_BCL], axis=1))
  return step + 1, live_tokens, live_logp, fin_tokens, fin_scores, state


def _initial_carry(b: int, k: int, max_length: int, bos_id: int, state):
  """(step, live tokens, live log-probs, finished tokens, finished scores, state) at step 0."""
  # Column 0 holds bos; column t + 1 the token chosen at step t.
  live_tokens_BWL = jnp.zeros((b, k, max_length + 1), jnp.int32).at[:, :, 0].set(bos_id)
  # Only beam 0 is real at first: the other k - 1 copies would repeat its extensions.
  live_logp_BW = jnp.full((b, k), NEG_INF).at[:, 0].set(0.0)
  fin_tokens_BWL = jnp.zeros((b, k, max_length + 1), jnp.int32)
  fin_scores_BW = jnp.full((b, k), NEG_INF)
  return (jnp.asarray(0, jnp.int32), live_tokens_BWL, live_logp_BW, fin_tokens_BWL,
          fin_scores_BW, state)


def _sentence_done(live_logp_BW, fin_scores_BW, best_possible_lp):
  """Per sentence: no live hypothesis can beat the worst finished one, even scored with the
  largest penalty lp(max_length) (or no live hypothesis is left)."""
  worst_finished_B = fin_scores_BW.min(axis=1)  # -inf while a slot is empty
  best_live_bound_B = live_logp_BW.max(axis=1) / best_possible_lp
  return (worst_finished_B > best_live_bound_B) | (best_live_bound_B == NEG_INF)


def beam_search_from_step_fn(
    step_fn: StepFn,
    state: Any,
    *,
    batch_size: int,
    beam_size: int,
    max_length: int,
    alpha: float = 0.6,
    bos_id: int = 2,
    eos_id: int = 3,
    stop_early: bool = True,
) -> DecodeResult:
  """Beam search over `step_fn`, entirely inside one `lax.while_loop`.

  Each step extends the k live hypotheses of a sentence by every token and
  keeps the 2k best extensions by log-probability. The k best of them that do
  not end in eos stay live (at most k end in eos, one per parent, so finished
  hypotheses never starve the live set); those ending in eos and ranked in the
  top k join the finished set, scored log P(Y) / lp(|Y|), which keeps the k
  best so far. Counting an eos only in the top k (as fairseq does; flax's
  wmt example counts all 2k) makes beam_size=1 with α = 0 exactly greedy.

  With stop_early, a sentence is done when its k finished slots are full and
  no live hypothesis can beat the worst of them even with the largest penalty
  lp(max_length): log-probabilities only fall as a hypothesis grows, so
  log P(live) / lp(max_length) bounds every extension's score when α >= 0.
  The loop stops when every sentence is done.

  Args:
    step_fn: log-probabilities (<= 0) of the next token for each row.
    state: pytree whose leaves have leading dimension batch_size·beam_size,
      reordered by parent beam after each step.
    alpha: α of the length penalty (>= 0); 0 ranks by log-probability alone.

  Returns:
    The best finished hypothesis per sentence (or, if none finished within
    max_length, the best live one, scored with lp(max_length)), its score, and
    the number of steps run. Tokens exclude bos and are 0 after eos.
  """
  # α may be a traced scalar (a server compiles one search for every α); then the caller checks.
  if isinstance(alpha, (int, float)) and alpha < 0:
    raise ValueError(f'alpha must be >= 0 for the early-stopping bound, got {alpha}')
  best_possible_lp = length_penalty(max_length, alpha)
  init = _initial_carry(batch_size, beam_size, max_length, bos_id, state)

  def cond(carry):
    step, _, live_logp, _, fin_scores, _ = carry
    running = step < max_length
    if stop_early:
      running &= ~jnp.all(_sentence_done(live_logp, fin_scores, best_possible_lp))
    return running

  body = functools.partial(_extend_beams, step_fn=step_fn, alpha=alpha, eos_id=eos_id)
  step, live_tokens, live_logp, fin_tokens, fin_scores, _ = jax.lax.while_loop(cond, body, init)
  return _result(step, live_tokens, live_logp / best_possible_lp, fin_tokens, fin_scores,
                 eos_id)


def _result(step, live_tokens_BWL, live_scores_BW, fin_tokens_BWL, fin_scores_BW, eos_id):
  """The search's DecodeResult: the best finished hypothesis (else the best live one, scored
  with lp(max_length)) and the ranked n-best; bos (column 0) dropped."""
  # top_k keeps both sets sorted: slot 0 is the best.
  any_finished_B = fin_scores_BW[:, 0] > NEG_INF
  tokens_BL = jnp.where(any_finished_B[:, None], fin_tokens_BWL[:, 0, 1:],
                        live_tokens_BWL[:, 0, 1:])
  scores_B = jnp.where(any_finished_B, fin_scores_BW[:, 0], live_scores_BW[:, 0])
  nbest_tokens_BWL, nbest_scores_BW = _ranked_hypotheses(
      fin_tokens_BWL[:, :, 1:], fin_scores_BW, live_tokens_BWL[:, :, 1:], live_scores_BW)
  return DecodeResult(tokens_BL, scores_B, lengths_from_tokens(tokens_BL, eos_id), step,
                      nbest_tokens_BWL, nbest_scores_BW)


def _ranked_hypotheses(fin_tokens_BWL, fin_scores_BW, live_tokens_BWL, live_scores_BW):
  """The k best hypotheses per sentence: finished ones first (by score), then live ones.

  The same rule as the single best (a finished hypothesis beats any live one), so slot 0
  is always tokens_BL / scores_B. Both inputs are sorted already (top_k keeps them so);
  a stable sort on "unused" moves the empty (-inf) finished slots behind the live ones.
  """
  k = fin_scores_BW.shape[1]
  scores_BC = jnp.concatenate([fin_scores_BW, live_scores_BW], axis=1)
  tokens_BCL = jnp.concatenate([fin_tokens_BWL, live_tokens_BWL], axis=1)
  order_BC = jnp.argsort(scores_BC == NEG_INF, axis=1, stable=True)[:, :k]
  return _take_beams(tokens_BCL, order_BC), jnp.take_along_axis(scores_BC, order_BC, axis=1)


@register_method('beam_search')
def beam_search(model, inputs_BS, *, beam_size: int, max_length: int, alpha: float = 0.6,
                bos_id: int | None = None, eos_id: int | None = None,
                stop_early: bool = True) -> DecodeResult:
  """Beam-search translation of inputs_BS [B, S]: the best hypothesis per sentence.

  Score = log P(Y | X) / ((5 + |Y|) / 6)^α; see `beam_search_from_step_fn`.
  bos_id / eos_id: the model's (`model.cfg`) unless given.
  """
  step_fn, state = model_step_fn(model, inputs_BS, max_length, beam_size=beam_size)
  return beam_search_from_step_fn(step_fn, state, batch_size=inputs_BS.shape[0],
                                  beam_size=beam_size, max_length=max_length, alpha=alpha,
                                  bos_id=model.cfg.bos_id if bos_id is None else bos_id,
                                  eos_id=model.cfg.eos_id if eos_id is None else eos_id,
                                  stop_early=stop_early)
