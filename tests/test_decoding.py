"""Properties of greedy decoding and beam search a user relies on.

The model tests use one tiny pre-LN Transformer whose non-embedding matrices
are scaled up: a freshly initialised model with a tied embedding mostly echoes
its input token, which would make "decoding equals the full pass" vacuous.
The scoring logic is also driven by hand-built step functions whose
probabilities make the right answer obvious.
"""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer_jax.decoding import beam_search as beam_lib
from transformer_jax.decoding import decoder as decoder_lib
from transformer_jax.decoding import greedy as greedy_lib
from transformer_jax.decoding.methods import DecodeResult, register_method
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.model import Transformer

PAD, A, BOS, EOS, B = 0, 1, 2, 3, 4  # token ids; A and B are ordinary words


@functools.cache
def _model(vocab_size=16, seed=1) -> Transformer:
  cfg = TransformerConfig(vocab_size=vocab_size, d_model=32, num_heads=4, d_ff=64,
                          num_encoder_layers=1, num_decoder_layers=2, dropout_rate=0.0,
                          pre_ln=True)
  model = Transformer(cfg, rngs=nnx.Rngs(seed))
  for path, p in nnx.iter_graph(model):
    if isinstance(p, nnx.Param) and p[...].ndim >= 2 and path[-1] != 'embedding_VD':
      p[...] = p[...] * 6.0
  # A longer eos embedding (tied to the output layer) makes some rows, not all, stop early.
  model.embedding_VD[...] = model.embedding_VD[...].at[EOS].multiply(3.0)
  return model


@functools.cache
def _decoder(method, vocab_size=16, **kwargs):
  graphdef, state = nnx.split(_model(vocab_size))
  decode = decoder_lib.make_decoder(graphdef, method=method, **kwargs)
  return lambda inputs_BS: _unpack(method, decode(state, inputs_BS))


def _unpack(method, result: DecodeResult):
  """Greedy: the tokens; beam search: (tokens, scores) — what these tests compare."""
  assert isinstance(result, DecodeResult)
  return result.tokens_BL if method == 'greedy' else (result.tokens_BL, result.scores_B)


@functools.cache
def _full_pass_log_probs(vocab_size=16):
  """log P(y_t | y_<t, x) [B, T, V] from the jitted teacher-forced pass.

  Every decoder input is a real token (the decoder may emit id 0), hence the
  explicit all-ones target segmentation.
  """
  graphdef, state = nnx.split(_model(vocab_size))

  @jax.jit
  def log_probs(inputs_BS, decoder_inputs_BT):
    logits = nnx.merge(graphdef, state)(inputs_BS, decoder_inputs_BT,
                                        targets_segmentation=jnp.ones_like(decoder_inputs_BT))
    return jax.nn.log_softmax(logits)

  return log_probs


# Rows are `tokens + [eos]` padded with 0, of different lengths.
SRC_BS = jnp.array([[5, 9, 12, 7, 3, 0], [11, 3, 0, 0, 0, 0], [4, 8, 15, 6, 13, 3],
                    [14, 6, 3, 0, 0, 0], [7, 7, 10, 3, 0, 0]], jnp.int32)


def _naive_greedy(inputs_BS, max_length):
  """Greedy decoding that re-runs the full pass on the whole prefix at every step.

  The decoder input has a fixed length (one compilation); causality makes the
  filler after the prefix irrelevant to position t.
  """
  dec_in_BL = np.full((inputs_BS.shape[0], max_length), A)
  dec_in_BL[:, 0] = BOS
  out_BL = np.zeros_like(dec_in_BL)
  for t in range(max_length):
    out_BL[:, t] = np.argmax(_full_pass_log_probs()(inputs_BS, dec_in_BL)[:, t], -1)
    if t + 1 < max_length:
      dec_in_BL[:, t + 1] = out_BL[:, t]
  after_eos = np.cumsum(out_BL == EOS, axis=1) - (out_BL == EOS) > 0
  return np.where(after_eos, PAD, out_BL)


def _assert_zero_after_eos(tokens_BL):
  tokens_BL = np.asarray(tokens_BL)
  for row in tokens_BL:
    hits = np.flatnonzero(row == EOS)
    if hits.size:
      assert not row[hits[0] + 1:].any(), row


def test_cached_greedy_equals_full_pass():
  tokens = _decoder('greedy', max_length=8)(SRC_BS)
  np.testing.assert_array_equal(tokens, _naive_greedy(SRC_BS, 8))
  assert len({tuple(r) for r in np.asarray(tokens).tolist()}) > 1, 'degenerate test model'
  assert (np.asarray(tokens) == EOS).any(axis=1).sum() >= 2, 'no row stops: the test is weak'
  _assert_zero_after_eos(tokens)


def test_beam_size_1_with_alpha_0_is_greedy():
  # With α = 0 nothing that extends the live beam can beat the eos that greedy
  # picks, so the search stops there (α > 0 may keep searching past it).
  tokens, scores = _decoder('beam_search', beam_size=1, max_length=8, alpha=0.0)(SRC_BS)
  np.testing.assert_array_equal(tokens, _decoder('greedy', max_length=8)(SRC_BS))
  assert np.all(np.asarray(scores) < 0)


@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_large_beam_finds_best_penalised_sequence(alpha):
  """Vocabulary 5, length 3: every finished hypothesis scored by the full pass."""
  vocab, max_length = 5, 3
  inputs_BS = jnp.array([[A, B, B, EOS], [B, EOS, 0, 0]], jnp.int32)
  # 80 beams keep all 4^2 live prefixes and rank all 16·5 last-step candidates in
  # the top 80, where an eos counts: the search is exhaustive.
  tokens, scores = _decoder('beam_search', vocab, beam_size=80, max_length=max_length,
                            alpha=alpha)(inputs_BS)
  words = [t for t in range(vocab) if t not in (EOS, PAD)]  # padding is never generated
  hyps = [list(w) + [EOS] for n in range(max_length) for w in itertools.product(words, repeat=n)]
  dec_in_HT = jnp.array([[BOS] + (h[:-1] + [A] * max_length)[:max_length - 1] for h in hyps])
  for row in range(inputs_BS.shape[0]):
    lp_HTV = _full_pass_log_probs(vocab)(jnp.repeat(inputs_BS[row:row + 1], len(hyps), 0),
                                         dec_in_HT)
    brute = [sum(float(lp_HTV[i, t, tok]) for t, tok in enumerate(h))
             / ((5 + len(h)) / 6) ** alpha for i, h in enumerate(hyps)]
    best = int(np.argmax(brute))
    np.testing.assert_array_equal(tokens[row], (hyps[best] + [PAD] * max_length)[:max_length])
    np.testing.assert_allclose(scores[row], brute[best], rtol=1e-5)


def test_rows_are_independent_and_source_padding_has_no_effect():
  greedy = _decoder('greedy', max_length=8)
  beam = _decoder('beam_search', beam_size=3, max_length=8)
  g_batch, (b_batch, s_batch) = greedy(SRC_BS), beam(SRC_BS)
  for row in range(SRC_BS.shape[0]):
    alone = jnp.pad(SRC_BS[row:row + 1], ((0, 0), (0, 3)))  # one row, three more pad columns
    np.testing.assert_array_equal(greedy(alone)[0], g_batch[row])
    tokens, scores = beam(alone)
    np.testing.assert_array_equal(tokens[0], b_batch[row])
    np.testing.assert_allclose(scores[0], s_batch[row], rtol=1e-5)
  _assert_zero_after_eos(b_batch)


def test_a_registered_method_is_found_by_name_and_compiles_once_per_shape():
  traces = []

  @register_method('counting_greedy')
  def counting_greedy(model, inputs_BS, **kwargs):
    traces.append(inputs_BS.shape)
    return greedy_lib.greedy_decode(model, inputs_BS, **kwargs)

  graphdef, state = nnx.split(_model(), nnx.Param)  # params only, as a checkpoint holds them
  decode = decoder_lib.make_decoder(graphdef, method='counting_greedy', max_length=8)
  first = decode(state, SRC_BS).tokens_BL
  np.testing.assert_array_equal(decode(state, SRC_BS[::-1]).tokens_BL[::-1], first)
  decode(state, SRC_BS[:2])
  assert traces == [SRC_BS.shape, SRC_BS[:2].shape]
  np.testing.assert_array_equal(first, _decoder('greedy', max_length=8)(SRC_BS))
  with pytest.raises(ValueError, match="unknown decoding method 'nope'.*counting_greedy"):
    decoder_lib.make_decoder(graphdef, method='nope', max_length=8)


def test_every_method_returns_one_result_type_with_lengths_and_scores():
  """Greedy and beam search give a DecodeResult; lengths count up to eos; greedy's score is
  log P(Y | X) of its tokens under the full pass, beam-1 α-0 search equals greedy in all four."""
  graphdef, state = nnx.split(_model())
  greedy = decoder_lib.make_decoder(graphdef, max_length=8)(state, SRC_BS)
  beam1 = decoder_lib.make_decoder(graphdef, beam_size=1, alpha=0.0, max_length=8,
                                   method='beam_search')(state, SRC_BS)
  for result in (greedy, beam1):
    assert isinstance(result, DecodeResult)
    tokens = np.asarray(result.tokens_BL)
    for row, length in zip(tokens, np.asarray(result.lengths_B)):
      eos = np.flatnonzero(row == EOS)
      assert length == (eos[0] + 1 if eos.size else len(row))
  np.testing.assert_array_equal(greedy.tokens_BL, beam1.tokens_BL)
  np.testing.assert_array_equal(greedy.lengths_B, beam1.lengths_B)
  np.testing.assert_allclose(greedy.scores_B, beam1.scores_B, rtol=1e-5)
  tokens = np.asarray(greedy.tokens_BL)
  decoder_inputs = np.concatenate([np.full((len(tokens), 1), BOS), tokens[:, :-1]], axis=1)
  log_probs = np.asarray(_full_pass_log_probs()(SRC_BS, decoder_inputs))
  token_logp = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  counted = np.arange(tokens.shape[1])[None] < np.asarray(greedy.lengths_B)[:, None]
  np.testing.assert_allclose(greedy.scores_B, (token_logp * counted).sum(1), rtol=1e-4)
  assert decoder_lib.choose_method(1) == 'greedy' and decoder_lib.choose_method(4) == 'beam_search'


# -- hand-built step functions -------------------------------------------------

def _table_step_fn(table):
  """A stateless step function: log P(next | last token, step) from table[step][last]."""
  rows = np.full((len(table), 5, 5), -np.inf, np.float32)
  for step, by_last in enumerate(table):
    for last, probs in by_last.items():
      for token, p in probs.items():
        rows[step, last, token] = math.log(p)
  table_LVV = jnp.asarray(rows)
  return lambda tokens_N, step, state: (table_LVV[step, tokens_N], state)


# Step 0 offers a short hypothesis [eos] (p = 0.6) or a long one [a a a a a eos] (p = 0.4).
SHORT_OR_LONG = _table_step_fn([{BOS: {EOS: 0.6, A: 0.4}}] + [{A: {A: 1.0}}] * 4
                               + [{A: {EOS: 1.0}}])


def _beam(step_fn, **kwargs):
  kwargs = {'batch_size': 1, 'beam_size': 1, 'max_length': 6, **kwargs}
  return beam_lib.beam_search_from_step_fn(step_fn, (), **kwargs)


@pytest.mark.parametrize('stop_early', [True, False])
def test_length_penalty_decides_between_short_and_long(stop_early):
  short = _beam(SHORT_OR_LONG, alpha=0.0, stop_early=stop_early)
  np.testing.assert_array_equal(short.tokens_BL, [[EOS, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(short.scores_B, [math.log(0.6)], rtol=1e-6)
  # α = 1: log 0.4 / ((5 + 6) / 6) = -0.4998 beats log 0.6 / 1 = -0.5108. Keeping 2k
  # candidates is what lets the one beam go on after [eos] took the first place.
  long = _beam(SHORT_OR_LONG, alpha=1.0, stop_early=stop_early)
  np.testing.assert_array_equal(long.tokens_BL, [[A, A, A, A, A, EOS]])
  np.testing.assert_allclose(long.scores_B, [math.log(0.4) / (11 / 6)], rtol=1e-6)
  assert long.num_steps == 6


def test_beam_search_stops_early_only_when_no_live_beam_can_win():
  # α = 0: after step 0, log P(a) = log 0.4 cannot beat the finished log 0.6.
  assert _beam(SHORT_OR_LONG, alpha=0.0).num_steps == 1
  assert _beam(SHORT_OR_LONG, alpha=0.0, stop_early=False).num_steps == 6
  # α = 1: log 0.4 / lp(max_length) = -0.4998 might still win, so the search goes on.
  assert _beam(SHORT_OR_LONG, alpha=1.0).num_steps == 6
  # Two beams: the finished set is not full (one hypothesis) until the long one ends.
  assert _beam(SHORT_OR_LONG, alpha=0.0, beam_size=2).num_steps == 6


def test_beam_search_returns_best_live_hypothesis_when_none_finishes():
  never_ends = _table_step_fn([{BOS: {A: 0.7, B: 0.3}}]
                              + [{A: {B: 0.9, A: 0.1}, B: {A: 0.6, B: 0.4}}] * 3)
  result = _beam(never_ends, beam_size=2, max_length=4, alpha=0.6)
  np.testing.assert_array_equal(result.tokens_BL, [[A, B, A, B]])
  expected = math.log(0.7 * 0.9 * 0.6 * 0.9) / ((5 + 4) / 6) ** 0.6
  np.testing.assert_allclose(result.scores_B, [expected], rtol=1e-6)


def test_greedy_pads_after_eos_and_stops_when_every_row_has_ended():
  eos_step_B = jnp.array([1, 3])  # row 0 ends at step 1, row 1 at step 3

  def step_fn(tokens_B, step, eos_step_B):
    next_B = jnp.where(step == eos_step_B, EOS, A)
    return jax.nn.one_hot(next_B, 5), eos_step_B  # rows keep being fed after their eos

  for stop_early, steps in [(True, 4), (False, 6)]:
    result = greedy_lib.greedy_from_step_fn(step_fn, eos_step_B, batch_size=2, max_length=6,
                                          stop_early=stop_early)
    np.testing.assert_array_equal(result.tokens_BL, [[A, EOS, 0, 0, 0, 0], [A, A, A, EOS, 0, 0]])
    assert result.num_steps == steps


def test_two_stage_candidates_equal_one_top_k_over_all_extensions_ties_included():
  _check_two_stage(batch=5, beams=3, vocab=50, n_cand=6)
  _check_two_stage(batch=2, beams=4, vocab=3, n_cand=8)  # fewer tokens than candidates


def _check_two_stage(batch, beams, vocab, n_cand):
  from transformer_jax.decoding.beam_search import _top_candidates
  # Small integers: many exact ties, which both forms must order by beam, then token.
  logp_BKV = -jax.random.randint(jax.random.key(0), (batch, beams, vocab), 0, 4).astype(
      jnp.float32)
  logp_BKV = logp_BKV.at[1].set(-jnp.inf).at[1, 2, vocab - 1].set(-1.0)  # one finite option
  expected_logp, flat = jax.lax.top_k(logp_BKV.reshape(batch, beams * vocab), n_cand)
  logp, parent, token = _top_candidates(logp_BKV, n_cand)
  np.testing.assert_array_equal(logp, expected_logp)
  np.testing.assert_array_equal(parent, flat // vocab)
  np.testing.assert_array_equal(token, flat % vocab)


# -- the n-best list and a traced α (what the server relies on) ----------------

def test_nbest_is_every_finished_hypothesis_ranked_when_the_search_is_exhaustive():
  """The exhaustive search above: its 80-slot n-best starts with all 13 finished sequences (no padding)
  in the order of the brute-force scores, the best being tokens_BL / scores_B."""
  vocab, max_length, alpha = 5, 3, 0.8
  inputs_BS = jnp.array([[A, B, B, EOS]], jnp.int32)
  graphdef, state = nnx.split(_model(vocab))
  result = decoder_lib.make_decoder(graphdef, beam_size=80, max_length=max_length,
                                    alpha=alpha)(state, inputs_BS)
  words = [t for t in range(vocab) if t not in (EOS, PAD)]  # padding is never generated
  hyps = [list(w) + [EOS] for n in range(max_length) for w in itertools.product(words, repeat=n)]
  dec_in_HT = jnp.array([[BOS] + (h[:-1] + [A] * max_length)[:max_length - 1] for h in hyps])
  lp_HTV = _full_pass_log_probs(vocab)(jnp.repeat(inputs_BS, len(hyps), 0), dec_in_HT)
  brute = [sum(float(lp_HTV[i, t, tok]) for t, tok in enumerate(h)) / ((5 + len(h)) / 6) ** alpha
           for i, h in enumerate(hyps)]
  order = np.argsort(brute)[::-1]
  nbest_tokens, nbest_scores = np.asarray(result.nbest_tokens_BWL[0]), result.nbest_scores_BW[0]
  for rank, i in enumerate(order):
    np.testing.assert_array_equal(nbest_tokens[rank], (hyps[i] + [PAD] * max_length)[:max_length])
    np.testing.assert_allclose(nbest_scores[rank], brute[i], rtol=1e-5)
  np.testing.assert_array_equal(nbest_tokens[0], result.tokens_BL[0])
  assert nbest_scores[0] == result.scores_B[0]


@pytest.mark.parametrize('alpha,first', [(0.0, 'short'), (1.0, 'long')])
def test_nbest_ranks_by_the_penalised_score(alpha, first):
  result = _beam(SHORT_OR_LONG, alpha=alpha, beam_size=2)
  short, long = [EOS, 0, 0, 0, 0, 0], [A, A, A, A, A, EOS]
  scores = {'short': math.log(0.6), 'long': math.log(0.4) / (11 / 6) ** alpha}
  ranked = ['short', 'long'] if first == 'short' else ['long', 'short']
  np.testing.assert_array_equal(result.nbest_tokens_BWL[0],
                                [short if r == 'short' else long for r in ranked])
  np.testing.assert_allclose(result.nbest_scores_BW[0], [scores[r] for r in ranked], rtol=1e-6)


def test_nbest_falls_back_to_live_hypotheses_scored_at_the_max_length():
  never_ends = _table_step_fn([{BOS: {A: 0.7, B: 0.3}}]
                              + [{A: {B: 0.9, A: 0.1}, B: {A: 0.6, B: 0.4}}] * 3)
  result = _beam(never_ends, beam_size=2, max_length=4, alpha=0.6)
  lp = ((5 + 4) / 6) ** 0.6
  # The two beams after step 3 are a b a (.378) and a b b (.252); their best extensions are
  # a b a b (.3402) and a b b a (.1512), ahead of a b b b (.1008) and a b a a (.0378).
  np.testing.assert_array_equal(result.nbest_tokens_BWL[0], [[A, B, A, B], [A, B, B, A]])
  np.testing.assert_allclose(result.nbest_scores_BW[0],
                             [math.log(.7 * .9 * .6 * .9) / lp, math.log(.7 * .9 * .4 * .6) / lp],
                             rtol=1e-6)


def test_alpha_may_be_a_traced_argument():
  """One compilation for every α (the server's): same result as α baked in as a constant."""
  search = jax.jit(lambda alpha: _beam(SHORT_OR_LONG, alpha=alpha, beam_size=2))
  for alpha in (0.0, 1.0):
    traced, constant = search(jnp.float32(alpha)), _beam(SHORT_OR_LONG, alpha=alpha, beam_size=2)
    np.testing.assert_array_equal(traced.tokens_BL, constant.tokens_BL)
    np.testing.assert_allclose(traced.scores_B, constant.scores_B, rtol=1e-6)
  assert search._cache_size() == 1
