"""Raw data a translator meets: nothing that fits max_length, no data and no network, a
manual dir given through TFDS itself, edited files, bare carriage returns."""
import time

import ml_collections
import pytest
import tensorflow_datasets as tfds

from toy_corpus import toy_pairs, write_split
from transformer_jax.data import registry
from transformer_jax.data.datasets import multi30k
from transformer_jax.data.datasets.multi30k import builder
from transformer_jax.data.pipeline import NothingFitsError, make_train_iterator
from transformer_jax.data.vocab import train_vocab


@pytest.fixture(scope='module')
def pairs_and_vocab(tmp_path_factory):
  source = [{'en': e, 'de': d} for e, d in toy_pairs(60, 0, min_words=3, max_words=8)]
  vocab = train_vocab(source, tmp_path_factory.mktemp('vocab') / 'spm.model', vocab_size=80,
                      languages=('en', 'de'))
  return source, vocab


def _iterator(source, vocab, max_length, **kwargs):
  return make_train_iterator(source, vocab, source_lang='en', target_lang='de', batch_tokens=64,
                             max_length=max_length, seed=0, **kwargs)


def test_a_pass_with_no_pair_within_max_length_stops_with_an_error_not_a_spin(pairs_and_vocab):
  source, vocab = pairs_and_vocab
  start = time.monotonic()
  with pytest.raises(NothingFitsError, match=r'all 60 pairs .* longer than data.max_length=3 '
                     r'.*raise config key `data.max_length`'):
    next(_iterator(source, vocab, max_length=3))
  assert time.monotonic() - start < 10
  lengths = sorted(1 + max(len(vocab.encode(p['en'])), len(vocab.encode(p['de']))) for p in source)
  iterator = _iterator(source, vocab, max_length=lengths[len(lengths) // 2])  # half fit
  for _ in range(30):  # several passes
    next(iterator)
  assert sum(iterator.length_filter.dropped_per_pass.values()) > 0


def test_an_iterator_state_saved_before_the_kept_count_still_resumes(pairs_and_vocab):
  source, vocab = pairs_and_vocab
  iterator = _iterator(source, vocab, max_length=32)
  next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  old_style = _strip_key(state, 'kept')
  again = _iterator(source, vocab, max_length=32)
  again.set_state(old_style)
  for key, value in next(again).items():
    assert (value == expected[key]).all(), key


def _strip_key(state, key):
  if isinstance(state, dict):
    return {k: _strip_key(v, key) for k, v in state.items() if k != key}
  if isinstance(state, list):
    return [_strip_key(v, key) for v in state]
  return state


def test_no_data_and_no_network_fails_in_seconds_naming_both_settings(tmp_path, monkeypatch):
  monkeypatch.delenv(multi30k.MANUAL_DIR_ENV, raising=False)

  def unreachable(*args, **kwargs):
    raise OSError('Network is unreachable')

  monkeypatch.setattr(builder.socket, 'create_connection', unreachable)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      lambda *a, **k: pytest.fail('a download was attempted'))
  start = time.monotonic()
  with pytest.raises(multi30k.Multi30kFileNotFoundError,
                     match=r'`data.manual_dir` nor \$MULTI30K_DIR .* raw.githubusercontent.com'):
    builder.load_multi30k('train', tmp_path / 'tfds')
  assert time.monotonic() - start < 10
  assert not list((tmp_path / 'tfds').rglob('*.array_record*'))


def test_tfds_own_manual_dir_is_used_and_missing_test_splits_are_absent(tmp_path, monkeypatch):
  raw = tmp_path / 'raw'
  raw.mkdir()
  write_split(raw, 'train', toy_pairs(20, 0, min_words=3, max_words=6))
  write_split(raw, 'val', toy_pairs(5, 1, min_words=3, max_words=6))
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      lambda *a, **k: pytest.fail('a download was attempted'))
  prepared = builder.Multi30k(data_dir=str(tmp_path / 'tfds'), file_format='array_record')
  prepared.download_and_prepare(file_format='array_record',
                                download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
  assert sorted(prepared.info.splits.keys()) == ['train', 'validation']
  assert prepared.info.splits['train'].num_examples == 20


def _data_config(raw):
  return ml_collections.ConfigDict({'dataset': 'multi30k', 'manual_dir': str(raw),
                                    'data_dir': ''})


def test_the_fingerprint_follows_content_not_place_and_keys_the_prepared_data(
    tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  a, b = tmp_path / 'a', tmp_path / 'b'
  for raw in (a, b):
    raw.mkdir()
    write_split(raw, 'train', toy_pairs(20, 0, min_words=3, max_words=6))
    write_split(raw, 'val', toy_pairs(5, 1, min_words=3, max_words=6))
  assert registry.fingerprint(_data_config(a)) == registry.fingerprint(_data_config(b))
  spec = registry.get_dataset('multi30k')
  assert spec.prepared_dir(_data_config(a)) == spec.prepared_dir(_data_config(b))
  before = registry.load_splits(_data_config(b), ('train',))['train'][0]['en']
  text = (b / 'train.en').read_text(encoding='utf-8')
  edited = text.replace(text[0], 'X' if text[0] != 'X' else 'Y', 1)  # same size, other content
  assert len(edited.encode()) == len(text.encode())
  (b / 'train.en').write_text(edited, encoding='utf-8')
  assert registry.fingerprint(_data_config(a)) != registry.fingerprint(_data_config(b))
  assert spec.prepared_dir(_data_config(a)) != spec.prepared_dir(_data_config(b))
  after = registry.load_splits(_data_config(b), ('train',))['train'][0]['en']
  assert after != before and after == edited.split('\n')[0]


def test_large_files_are_fingerprinted_by_size_and_three_blocks(tmp_path, monkeypatch):
  from transformer_jax.data import file_identity
  monkeypatch.setattr(file_identity, 'FULL_HASH_BYTES', 10)
  monkeypatch.setattr(file_identity, '_BLOCK', 4)
  path = tmp_path / 'train.en'
  path.write_bytes(b'0123456789abcdefghij')
  first = multi30k.file_digest(path)
  path.write_bytes(b'01x3456789abcdefghij')  # inside the first block
  assert multi30k.file_digest(path) != first
  path.write_bytes(b'0123456x89abcdefghij')  # between the blocks: not seen (documented)
  assert multi30k.file_digest(path) == first


def test_raw_files_split_on_newlines_only(tmp_path):
  raw = tmp_path / 'raw'
  raw.mkdir()
  pairs = toy_pairs(6, 0, min_words=3, max_words=6)
  pairs[2] = ('a dog\rruns .', 'ein Hund\rläuft .')  # bare CRs inside a line
  write_split(raw, 'train', pairs)
  (raw / 'train.en').write_bytes(b'\xef\xbb\xbf' + (raw / 'train.en').read_bytes())  # a BOM
  read = builder.read_parallel_files({'en': raw / 'train.en', 'de': raw / 'train.de'})
  assert [(p['en'], p['de']) for p in read] == pairs
