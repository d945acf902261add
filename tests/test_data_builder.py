"""The Multi30k TFDS builder: the manual files in order, prepared once and reused, the splits
there are, the download, and bad raw files named.

Most tests use the small toy corpus of toy_corpus.write_small_corpus (fixture `toy`); the
`real_multi30k` ones read the real data from $MULTI30K_DIR.
"""
import logging
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest
import tensorflow_datasets as tfds

from toy_corpus import real_multi30k_dir, write_small_corpus, write_split
from transformer_jax.data.datasets.multi30k import (MANUAL_DIR_ENV, Multi30kDataError,
                                                    Multi30kFileNotFoundError)
from transformer_jax.data.datasets.multi30k.builder import load_multi30k
from transformer_jax.data.datasets.multi30k import builder as multi30k_lib

real_multi30k = pytest.mark.skipif(
    real_multi30k_dir() is None,
    reason=f'{MANUAL_DIR_ENV} does not point at the Multi30k text files')


def _files_under(directory):
  return sorted(p.relative_to(directory) for p in Path(directory).rglob('*') if p.is_file())


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
      from toy_corpus import write_small_corpus
      from transformer_jax.data import load_or_train_vocab, make_eval_batches, make_train_iterator
      from transformer_jax.data.datasets.multi30k.builder import load_multi30k
      write_small_corpus(Path({str(tmp_path / 'raw')!r}))
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
  pairs = write_small_corpus(tmp_path / 'raw', test2016=True)
  test = load_multi30k('test2016', tmp_path / 'tfds', tmp_path / 'raw')
  assert [(p['en'], p['de']) for p in test] == pairs['test_2016_flickr']


def test_unknown_split_lists_the_valid_ones(toy):
  with pytest.raises(Multi30kDataError, match=r"'test'.*'train'.*'validation'"):
    load_multi30k('test', toy[2])


def test_download_fetches_the_official_gz_files(tmp_path, monkeypatch):
  pairs = write_small_corpus(tmp_path / 'raw')
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
  write_small_corpus(tmp_path / 'raw')
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
  write_small_corpus(tmp_path / 'raw')
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
  pairs = write_small_corpus(tmp_path / 'raw')
  lines = (tmp_path / 'raw' / 'train.en').read_text(encoding='utf-8').split('\n')
  lines[4] = '   '
  (tmp_path / 'raw' / 'train.en').write_text('\n'.join(lines), encoding='utf-8')
  with caplog.at_level(logging.WARNING):
    train = load_multi30k('train', tmp_path / 'tfds', tmp_path / 'raw')
  assert len(train) == 39 and pairs['train'][4][1] not in {p['de'] for p in train}
  assert any('Skipped 1 pairs with an empty line' in r.getMessage() for r in caplog.records)


# --- Real Multi30k (only where $MULTI30K_DIR is set) --------------------------------------


@real_multi30k
def test_real_multi30k_has_29000_train_and_1014_validation_pairs(real_data_dir):
  train = load_multi30k('train', real_data_dir)
  validation = load_multi30k('validation', real_data_dir)
  assert (len(train), len(validation)) == (29_000, 1_014)
  first_en = Path(real_multi30k_dir(), 'val.en').read_text(encoding='utf-8').split('\n')[0]
  assert validation[0]['en'] == first_en
