"""Properties of the Multi30k data path: TFDS builder, vocabulary, grain pipelines.

Most tests use a tiny synthetic corpus written into a temporary manual directory;
the ones marked `multi30k` read the real data from `$MULTI30K_DIR`.
"""
import functools
import json
import logging
import os
from pathlib import Path
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from toy_corpus import toy_pairs, write_split
from transformer_jax.data import (check_languages, load_or_train_vocab, make_eval_batches,
                                  make_train_iterator, tokenize_pair, tokenized_pairs)
from transformer_jax.data.datasets.multi30k import (MANUAL_DIR_ENV, Multi30kDataError,
                                                    Multi30kFileNotFoundError)
from transformer_jax.data.datasets.multi30k.builder import load_multi30k
from transformer_jax.data.datasets.multi30k import builder as multi30k_lib
from transformer_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, train_vocab

REAL_DIR = os.environ.get(MANUAL_DIR_ENV)
multi30k = pytest.mark.skipif(
    not (REAL_DIR and Path(REAL_DIR, 'train.en').is_file()),
    reason=f'{MANUAL_DIR_ENV} does not point at the Multi30k text files')

L, BATCH_TOKENS = 32, 128  # 4 rows of 32 tokens per training batch.


def _write_corpus(directory, *, test2016=False):
  """A manual directory of 40 train and 12 validation pairs; returns the pairs."""
  directory.mkdir(parents=True, exist_ok=True)
  pairs = functools.partial(toy_pairs, min_words=2, max_words=7, numbered=True)
  splits = {'train': pairs(40, 0), 'val': pairs(12, 1)}
  if test2016:
    splits['test_2016_flickr'] = pairs(5, 2)
  for stem, pairs in splits.items():
    write_split(directory, stem, pairs)
  return splits


def _files_under(directory):
  return sorted(p.relative_to(directory) for p in Path(directory).rglob('*') if p.is_file())


@pytest.fixture(scope='session')
def toy(tmp_path_factory):
  """(raw_dir, pairs, data_dir) with the toy corpus prepared once per session."""
  raw_dir = tmp_path_factory.mktemp('raw')
  pairs = _write_corpus(raw_dir)
  data_dir = tmp_path_factory.mktemp('tfds')
  multi30k_lib.prepare_multi30k(data_dir, raw_dir)
  return raw_dir, pairs, data_dir


@pytest.fixture(scope='session')
def toy_train(toy):
  return load_multi30k('train', toy[2])


@pytest.fixture(scope='session')
def toy_vocab(toy_train, tmp_path_factory):
  return load_or_train_vocab(toy_train, tmp_path_factory.mktemp('vocab'), vocab_size=120,
                             languages=('en', 'de'))


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


# --- TFDS builder -------------------------------------------------------------------------


def test_builder_yields_the_manual_files_in_order(toy):
  _, pairs, data_dir = toy
  for split, stem in (('train', 'train'), ('validation', 'val')):
    source = load_multi30k(split, data_dir)
    assert [(source[i]['en'], source[i]['de']) for i in range(len(source))] == pairs[stem]
  lazy = load_multi30k('validation', data_dir, in_memory=False)
  assert lazy[-1] == {'en': pairs['val'][-1][0], 'de': pairs['val'][-1][1]}


def test_prepared_data_is_reused_without_the_raw_files(toy, monkeypatch):
  _, pairs, data_dir = toy
  before = {p: (data_dir / p).stat().st_mtime_ns for p in _files_under(data_dir)}
  monkeypatch.delenv(MANUAL_DIR_ENV, raising=False)
  assert len(load_multi30k('train', data_dir, manual_dir=None)) == len(pairs['train'])
  assert {p: (data_dir / p).stat().st_mtime_ns for p in _files_under(data_dir)} == before


def test_reading_never_imports_tensorflow(tmp_path):
  script = textwrap.dedent(f"""
      import sys
      from pathlib import Path
      sys.path.insert(0, {str(Path(__file__).parent)!r})
      from test_data import _write_corpus
      from transformer_jax.data import load_or_train_vocab, make_eval_batches, make_train_iterator
      from transformer_jax.data.datasets.multi30k.builder import load_multi30k
      _write_corpus(Path({str(tmp_path / 'raw')!r}))
      train = load_multi30k('train', {str(tmp_path / 'tfds')!r}, {str(tmp_path / 'raw')!r})
      vocab = load_or_train_vocab(train, {str(tmp_path / 'vocab')!r}, vocab_size=100, languages=('en', 'de'))
      next(make_train_iterator(train, vocab, source_lang='de', target_lang='en',
                               batch_tokens=64, max_length=32, seed=0))
      make_eval_batches(train, vocab, source_lang='de', target_lang='en', batch_size=8,
                        max_length=32)
      print('tensorflow' in sys.modules, sorted(m for m in sys.modules if 'tensorflow.' in m
                                                 and not m.startswith('tensorflow_datasets')))
  """)
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])},
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == 'False []'


def test_test_split_appears_only_when_its_files_exist(toy, tmp_path):
  with pytest.raises(Multi30kDataError, match=r"'test2016'.*available: \['train', 'validation'\]"):
    load_multi30k('test2016', toy[2])
  pairs = _write_corpus(tmp_path / 'raw', test2016=True)
  test = load_multi30k('test2016', tmp_path / 'tfds', tmp_path / 'raw')
  assert [(p['en'], p['de']) for p in test] == pairs['test_2016_flickr']


def test_unknown_split_lists_the_valid_ones(toy):
  with pytest.raises(Multi30kDataError, match=r"'test'.*'train'.*'validation'"):
    load_multi30k('test', toy[2])


def test_download_fetches_the_official_gz_files(tmp_path, monkeypatch):
  pairs = _write_corpus(tmp_path / 'raw')
  for split in multi30k_lib.DOWNLOADED_SPLITS[2:]:
    write_split(tmp_path / 'raw', multi30k_lib.SPLIT_FILE_STEMS[split], pairs['val'][:3])
  requested = []

  def fake_download_and_extract(self, urls):
    def local(url):
      requested.append(url)
      return tmp_path / 'raw' / url.rsplit('/', 1)[1].removesuffix('.gz')
    return {split: {lang: local(url) for lang, url in by_lang.items()}
            for split, by_lang in urls.items()}

  monkeypatch.delenv(MANUAL_DIR_ENV, raising=False)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      fake_download_and_extract)
  monkeypatch.setattr(multi30k_lib, 'check_download_host_reachable', lambda: None)  # offline CI
  train = load_multi30k('train', tmp_path / 'tfds')
  assert len(train) == len(pairs['train'])
  assert all(u.startswith(multi30k_lib.DOWNLOAD_URL) and u.endswith('.gz') for u in requested)
  assert {u.rsplit('/', 1)[1] for u in requested} >= {'train.en.gz', 'train.de.gz',
                                                       'val.en.gz', 'val.de.gz'}


def test_manual_dir_comes_from_the_environment(tmp_path, monkeypatch):
  _write_corpus(tmp_path / 'raw')
  monkeypatch.setenv(MANUAL_DIR_ENV, str(tmp_path / 'raw'))
  assert len(load_multi30k('validation', tmp_path / 'tfds')) == 12


def _corrupt_missing_dir(raw):
  return raw / 'does_not_exist', [r'does_not_exist']


def _corrupt_missing_file(raw):
  (raw / 'val.de').unlink()
  return raw, [r'val\.de']


def _corrupt_line_counts(raw):
  with open(raw / 'train.de', 'a', encoding='utf-8') as f:
    f.write('Ein Satz zu viel.\n')
  return raw, [r'train\.en has 40 lines', r'train\.de has 41']


def _corrupt_utf8(raw):
  lines = (raw / 'val.de').read_bytes().splitlines(keepends=True)
  lines[2] = b'Ein kaputtes \xff\xfe Zeichen.\n'
  (raw / 'val.de').write_bytes(b''.join(lines))
  return raw, [r'val\.de: line 3 is not valid UTF-8']


@pytest.mark.parametrize('corrupt', [_corrupt_missing_dir, _corrupt_missing_file,
                                     _corrupt_line_counts, _corrupt_utf8])
def test_bad_input_raises_naming_the_file_and_leaves_nothing_behind(corrupt, tmp_path,
                                                                    monkeypatch):
  monkeypatch.delenv(MANUAL_DIR_ENV, raising=False)
  _write_corpus(tmp_path / 'raw')
  manual_dir, patterns = corrupt(tmp_path / 'raw')
  data_dir = tmp_path / 'tfds'
  with pytest.raises(Multi30kDataError) as error:
    load_multi30k('train', data_dir, manual_dir)
  for pattern in patterns:
    assert error.match(pattern)
  if corrupt in (_corrupt_missing_dir, _corrupt_missing_file):
    assert isinstance(error.value, Multi30kFileNotFoundError)  # also a FileNotFoundError
    assert error.match('data.manual_dir') and error.match(MANUAL_DIR_ENV)
  if data_dir.exists():  # TFDS may leave empty folders, never a file or a partial dataset.
    assert _files_under(data_dir) == [] and not list(data_dir.rglob('*incomplete*'))


def test_empty_lines_are_skipped_with_a_warning(tmp_path, caplog):
  pairs = _write_corpus(tmp_path / 'raw')
  lines = (tmp_path / 'raw' / 'train.en').read_text(encoding='utf-8').split('\n')
  lines[4] = '   '
  (tmp_path / 'raw' / 'train.en').write_text('\n'.join(lines), encoding='utf-8')
  with caplog.at_level(logging.WARNING):
    train = load_multi30k('train', tmp_path / 'tfds', tmp_path / 'raw')
  assert len(train) == 39 and pairs['train'][4][1] not in {p['de'] for p in train}
  assert any('Skipped 1 pairs with an empty line' in r.getMessage() for r in caplog.records)


# --- Vocabulary ---------------------------------------------------------------------------


def test_special_ids_are_fixed_and_distinct(toy_vocab):
  ids = (toy_vocab.pad_id, toy_vocab.unk_id, toy_vocab.bos_id, toy_vocab.eos_id)
  assert ids == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
  assert toy_vocab.encode('\u4e00').count(UNK_ID) == 1  # unseen character -> unk, not pad
  assert 4 < toy_vocab.size <= 120


def test_decode_inverts_encode_up_to_normalisation(toy, toy_vocab):
  for en, de in toy[1]['train'] + toy[1]['val']:
    for text in (en, de):
      assert toy_vocab.decode(toy_vocab.encode(text)) == toy_vocab.normalize(text) == text
  assert toy_vocab.normalize('ein  Hund\u00a012') == 'ein Hund 12'
  ids = toy_vocab.encode('ein Hund 3.')
  assert toy_vocab.decode([BOS_ID, *ids, EOS_ID, *ids, PAD_ID]) == 'ein Hund 3.'


def test_vocab_is_reused_written_atomically_and_picklable(toy_train, toy_vocab):
  mtime = toy_vocab.path.stat().st_mtime_ns
  again = load_or_train_vocab(toy_train, toy_vocab.path.parent, vocab_size=120,
                             languages=('en', 'de'))
  assert again.path.stat().st_mtime_ns == mtime
  assert sorted(p.name for p in toy_vocab.path.parent.iterdir()) == ['spm.model']
  assert pickle.loads(pickle.dumps(toy_vocab)).encode('ein Hund') == toy_vocab.encode('ein Hund')


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


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('multi30k_tfds')
  multi30k_lib.prepare_multi30k(data_dir, REAL_DIR)
  return data_dir


@multi30k
def test_real_multi30k_has_29000_train_and_1014_validation_pairs(real_data_dir):
  train = load_multi30k('train', real_data_dir)
  validation = load_multi30k('validation', real_data_dir)
  assert (len(train), len(validation)) == (29_000, 1_014)
  first_en = Path(REAL_DIR, 'val.en').read_text(encoding='utf-8').split('\n')[0]
  assert validation[0]['en'] == first_en


@multi30k
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
