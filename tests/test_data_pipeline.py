"""The grain pipelines: packed training batches keep pairs whole; seeds, epochs, shards and a
saved state give the batches they should; long pairs are dropped and counted; evaluation
batches hold every example once, in order.

The toy corpus and its vocabulary are session fixtures (conftest.py); the `real_multi30k`
test packs the real data from $MULTI30K_DIR.
"""
import json
import logging

import numpy as np
import pytest

from toy_corpus import real_multi30k_dir
from transformer_jax.data import (check_languages, make_eval_batches, make_train_iterator,
                                  tokenize_pair, tokenized_pairs)
from transformer_jax.data.datasets.multi30k import MANUAL_DIR_ENV
from transformer_jax.data.datasets.multi30k.builder import load_multi30k
from transformer_jax.data.vocab import BOS_ID, EOS_ID, train_vocab

real_multi30k = pytest.mark.skipif(
    real_multi30k_dir() is None,
    reason=f'{MANUAL_DIR_ENV} does not point at the Multi30k text files')

L, BATCH_TOKENS = 32, 128  # 4 rows of 32 tokens per training batch.


def _train_iterator(source, vocab, **kwargs):
  kwargs = {'source_lang': 'en', 'target_lang': 'de', 'batch_tokens': BATCH_TOKENS,
            'max_length': L, 'seed': 0, **kwargs}
  return make_train_iterator(source, vocab, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# --- Training pipeline --------------------------------------------------------------------


def _check_packed_batch(batch, target_of_source):
  """Shapes, segment/position consistency and pair integrity of one packed batch."""
  rows = BATCH_TOKENS // L
  assert set(batch) == {'inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs',
                        'targets', 'targets_segmentation', 'targets_position'}
  for value in batch.values():
    assert value.shape == (rows, L) and value.dtype == np.int32
  for r in range(rows):
    segments = {}
    for side in ('inputs', 'targets'):
      seg, pos = batch[f'{side}_segmentation'][r], batch[f'{side}_position'][r]
      used = int((seg > 0).sum())
      assert (seg[used:] == 0).all() and (pos[used:] == 0).all()  # padding only at the end
      assert (batch[side][r, used:] == 0).all()
      ids = seg[:used]
      assert ids[0] == 1 and set(np.diff(ids)) <= {0, 1}  # segments 1..k, contiguous
      for s in np.unique(ids):
        np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))
      segments[side] = set(ids.tolist())
    assert segments['inputs'] == segments['targets']
    seg_in, seg_out = batch['inputs_segmentation'][r], batch['targets_segmentation'][r]
    for s in segments['inputs']:
      source = batch['inputs'][r][seg_in == s]
      decoder_in = batch['decoder_inputs'][r][seg_out == s]
      target = batch['targets'][r][seg_out == s]
      assert source[-1] == EOS_ID and decoder_in[0] == BOS_ID and target[-1] == EOS_ID
      np.testing.assert_array_equal(decoder_in[1:], target[:-1])  # shifted by one
      # The whole pair sits in this row and segment: its source maps to this target.
      assert target_of_source[tuple(source[:-1])] == tuple(target[:-1])
  return float((batch['targets_segmentation'] == 0).mean())


def test_packed_batches_keep_pairs_whole_and_consistent(toy_train, toy_vocab):
  target_of_source = {}
  for pair in toy_train:
    tokens = tokenize_pair(pair, toy_vocab, 'en', 'de')
    target_of_source[tuple(tokens['inputs'][:-1])] = tuple(tokens['targets'][:-1])
  iterator = _train_iterator(toy_train, toy_vocab)
  padding = [_check_packed_batch(b, target_of_source) for b in _take(iterator, 12)]
  # Toy pairs are 3-7 words (~8-30 tokens), so a row of 32 holds one to three.
  assert 0 <= np.mean(padding) < 0.5


def test_same_seed_same_batches_other_seed_other_order(toy_train, toy_vocab):
  first = _take(_train_iterator(toy_train, toy_vocab, seed=3), 6)
  _assert_batches_equal(first, _take(_train_iterator(toy_train, toy_vocab, seed=3), 6))
  other = _take(_train_iterator(toy_train, toy_vocab, seed=4), 6)
  assert any(not np.array_equal(a['inputs'], b['inputs']) for a, b in zip(first, other))


def test_each_epoch_is_a_new_permutation_of_the_shard(toy_train, toy_vocab):
  dataset = tokenized_pairs(toy_train, toy_vocab, source_lang='en', target_lang='de', seed=0,
                            num_epochs=2)
  n = len(toy_train)
  epochs = [[tuple(dataset[i]['inputs']) for i in range(e * n, (e + 1) * n)] for e in (0, 1)]
  assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(epochs[0])) == n
  assert epochs[0] != epochs[1]
  assert {dataset[i]['pass_index'] for i in range(n, 2 * n)} == {1}


def test_shards_are_disjoint_and_cover_the_source(toy_train, toy_vocab):
  def shard(index):
    dataset = tokenized_pairs(toy_train, toy_vocab, source_lang='de', target_lang='en', seed=0,
                              shard_index=index, shard_count=3, num_epochs=1)
    return {tuple(dataset[i]['inputs']) for i in range(len(dataset))}
  shards = [shard(i) for i in range(3)]
  assert sum(map(len, shards)) == len(set.union(*shards)) == len(toy_train)


def test_resuming_from_saved_state_gives_the_next_batches(toy_train, toy_vocab):
  iterator = _train_iterator(toy_train, toy_vocab, seed=5)
  _take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))  # must survive JSON
  expected = _take(iterator, 3)  # crosses into the second epoch of 40 pairs
  resumed = _train_iterator(toy_train, toy_vocab, seed=5)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 3), expected)


def test_long_pairs_are_dropped_and_counted_once_per_pass(toy_train, toy_vocab, caplog):
  max_length = 16
  lengths = [max(len(toy_vocab.encode(p['en'])), len(toy_vocab.encode(p['de']))) + 1
             for p in toy_train]
  too_long = sum(n > max_length for n in lengths)
  assert 0 < too_long < len(toy_train)
  iterator = _train_iterator(toy_train, toy_vocab, max_length=max_length,
                             batch_tokens=2 * max_length, num_epochs=2)
  with caplog.at_level(logging.INFO):
    batches = list(iterator)
  assert all((b['inputs_segmentation'] > 0).any() for b in batches)
  assert iterator.length_filter.dropped_per_pass == {0: too_long, 1: too_long}
  logged = [r.getMessage() for r in caplog.records if 'longer than max_length' in r.getMessage()]
  assert len(logged) == 2 and all(f'dropped {too_long} pairs' in m for m in logged)


def test_languages_must_be_two_sides_the_examples_hold(toy_train, toy_vocab):
  assert check_languages(toy_train, 'de', 'en') == ('de', 'en')
  with pytest.raises(ValueError, match=r"no 'fr' side: they hold \['de', 'en'\]"):
    _train_iterator(toy_train, toy_vocab, source_lang='en', target_lang='fr')
  with pytest.raises(ValueError, match="both 'en'"):
    _train_iterator(toy_train, toy_vocab, source_lang='en', target_lang='en')


# --- Evaluation batches -------------------------------------------------------------------


def test_eval_batches_hold_every_example_once_in_order(toy, toy_vocab):
  validation = load_multi30k('validation', toy[2])
  evaluation = make_eval_batches(validation, toy_vocab, source_lang='de', target_lang='en',
                                 batch_size=5, max_length=L)
  assert evaluation.sources == [de for _, de in toy[1]['val']]
  assert evaluation.references == [en for en, _ in toy[1]['val']]
  assert len(evaluation.batches) == 3 and evaluation.num_truncated == 0
  index = np.concatenate([b['example_index'] for b in evaluation.batches])
  np.testing.assert_array_equal(index, list(range(12)) + [-1] * 3)
  mask = np.concatenate([b['example_mask'] for b in evaluation.batches])
  np.testing.assert_array_equal(mask, index >= 0)
  for batch in evaluation.batches:
    assert all(v.shape[0] == 5 and v.dtype == np.int32 for v in batch.values())
    for row, i in enumerate(batch['example_index']):
      if i < 0:
        assert not batch['inputs'][row].any() and not batch['targets_segmentation'][row].any()
        continue
      assert toy_vocab.decode(batch['inputs'][row]) == evaluation.sources[i]
      assert toy_vocab.decode(batch['targets'][row]) == evaluation.references[i]
      np.testing.assert_array_equal(batch['decoder_inputs'][row, 1:],
                                    batch['targets'][row, :-1] * (batch['targets'][row, :-1]
                                                                  != EOS_ID))
      length = int(batch['targets_segmentation'][row].sum())
      np.testing.assert_array_equal(batch['targets_position'][row, :length], np.arange(length))


def test_eval_batches_truncate_long_sentences_and_count_them(toy, toy_vocab, caplog):
  validation = load_multi30k('validation', toy[2])
  max_length = 6
  with caplog.at_level(logging.WARNING):
    evaluation = make_eval_batches(validation, toy_vocab, source_lang='en', target_lang='de',
                                   batch_size=4, max_length=max_length)
  expected = sum(max(len(toy_vocab.encode(p['en'])), len(toy_vocab.encode(p['de'])))
                 > max_length - 1 for p in validation)
  assert evaluation.num_truncated == expected > 0
  assert any(f'Truncated {expected} of 12' in r.getMessage() for r in caplog.records)
  for batch in evaluation.batches:
    real = batch['example_mask'] == 1
    lengths = batch['inputs_segmentation'][real].sum(axis=1)
    assert (batch['inputs'][real, lengths - 1] == EOS_ID).all()


# --- Real Multi30k (only where $MULTI30K_DIR is set) --------------------------------------


@real_multi30k
def test_real_multi30k_packs_with_under_10_percent_padding(real_data_dir, tmp_path):
  train = load_multi30k('train', real_data_dir)
  # A vocabulary from a 10k-sentence sample trains in ~1 s and tokenises alike.
  vocab = train_vocab(train, tmp_path / 'spm.model', vocab_size=8000, max_sentences=10_000,
                      languages=('en', 'de'))
  iterator = make_train_iterator(train, vocab, source_lang='en', target_lang='de',
                                 batch_tokens=4096, max_length=64, seed=0)
  batches = _take(iterator, 20)
  assert batches[0]['targets'].shape == (64, 64)
  padding = np.mean([(b['targets_segmentation'] == 0).mean() for b in batches])
  assert padding < 0.10
