"""The parallel_text dataset: preparation of plain / gz / xz / TSV files of any language pair
into token ids, its determinism, its filters, its keying, and its training pipeline."""
import errno
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import parallel_text_fixture as ptf
from transformer_jax.data import pipeline, registry
from transformer_jax.data.datasets import parallel_text
from transformer_jax.data.datasets.parallel_text import builder
from transformer_jax.data.datasets.parallel_text import prepared as prepared_format
from transformer_jax.data.vocab import Vocab

PAIRS = ptf.pairs(400)
VALIDATION = ptf.pairs(30, seed=1)


def _load(config):
  splits = registry.load_splits(config.data)
  return splits, registry.get_dataset('parallel_text').prepared_dir(config.data)


def _train_texts(splits, vocab):
  """The prepared train split decoded back to text, in record order."""
  train = splits['train']
  return [(vocab.decode(r['source_ids']), vocab.decode(r['target_ids']))
          for r in train.read(range(len(train)))]


@pytest.fixture(scope='module')
def plain(tmp_path_factory):
  """(config, splits, prepared_dir) of the plain file pair with validation files."""
  root = tmp_path_factory.mktemp('plain')
  config = ptf.config(root / 'tfds', [ptf.write_pair(root, 'train', PAIRS)],
                      validation_files=[ptf.write_pair(root, 'dev', VALIDATION)])
  splits, prepared = _load(config)
  return config, splits, prepared


def test_plain_gzip_xz_and_tsv_prepare_the_same_records(plain, tmp_path):
  _, splits, prepared = plain
  vocab = Vocab(Path(prepared, builder.VOCAB_FILENAME))
  expected = _train_texts(splits, vocab)
  half = len(PAIRS) // 2
  variants = {
      # two files of one corpus: the first gzip / xz, the second bzip2 / plain
      'compressed': [ptf.write_pair(tmp_path / 'c', 'part1', PAIRS[:half], ('.gz', '.xz')),
                     ptf.write_pair(tmp_path / 'c', 'part2', PAIRS[half:], ('.bz2', ''))],
      # a TSV whose header puts the target language first
      'tsv': ptf.write_tsv(tmp_path / 'train.tsv', PAIRS, header=(ptf.TGT, ptf.SRC),
                           compression='.gz'),
  }
  for name, files in variants.items():
    config = ptf.config(tmp_path / f'tfds_{name}', files,
                        validation_files=ptf.write_tsv(tmp_path / f'dev_{name}.tsv', VALIDATION,
                                                       header=None))
    other_splits, other_dir = _load(config)
    assert Path(other_dir, 'spm.model').read_bytes() == Path(prepared, 'spm.model').read_bytes(), (
        f'{name}: the vocabulary of the same pairs (same sample seed) is the same model')
    assert _train_texts(other_splits, vocab) == expected, name
    assert list(other_splits['validation']) == list(splits['validation']), name


def test_records_hold_ids_that_decode_to_the_normalised_text_in_file_order(plain):
  _, splits, prepared = plain
  vocab = Vocab(Path(prepared, builder.VOCAB_FILENAME))
  texts = _train_texts(splits, vocab)
  normalised = [(vocab.normalize(s), vocab.normalize(t)) for s, t in PAIRS]
  kept = [p for p in normalised if p in set(texts)]
  assert texts == kept, 'in file order'
  assert len(texts) == builder.preparation_stats(prepared)['train']['kept'] > 350
  # what was left out is what the length filter counted (the pairs are distinct)
  too_long = [p for p in PAIRS if max(len(vocab.encode(x)) for x in p) + 1 > 64]
  assert len(PAIRS) - len(texts) == len(too_long) == builder.preparation_stats(
      prepared)['train']['dropped']['too_long']
  record = splits['train'].read([0])[0]
  assert set(record) == {'source_ids', 'target_ids'} and record['source_ids'].dtype == np.int32
  # the train records carry no text; the validation split is text, in file order
  raw = prepared_format.data_source(prepared, 'train_000')[0]
  assert raw['text_fr'] == b'' and raw['text_cs'] == b''
  assert [(p['fr'], p['cs']) for p in splits['validation']] == VALIDATION
  assert splits['train'].languages == ('fr', 'cs')


def test_a_corpus_written_in_parts_reads_as_one_split(plain, tmp_path, monkeypatch):
  """TFDS keeps a split's records in memory up to 1 GB (beyond, it needs TensorFlow): the
  train split is written in parts of TRAIN_PART_LINES lines, read back as one sequence."""
  config, splits, prepared = plain
  monkeypatch.setattr(builder, 'TRAIN_PART_LINES', 150)
  parted_config = ptf.config(tmp_path / 'tfds', config.data.train_files,
                             validation_files=config.data.validation_files)
  parted, parted_dir = _load(parted_config)
  info_splits = sorted(os.listdir(Path(parted_dir, 'parallel_text', '1.0.0')))
  assert sum('train_00' in name for name in info_splits) >= 3, info_splits
  assert len(parted['train']) == len(splits['train'])
  order = np.random.default_rng(0).permutation(len(splits['train']))
  for a, b in zip(parted['train'].read(order), splits['train'].read(order)):
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_vocabulary_sample_is_seeded(tmp_path):
  files = [ptf.write_pair(tmp_path, 'train', PAIRS)]
  models = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    # a 200-sentence sample of the 800 sentences: which ones depends on the seed alone
    config = ptf.config(tmp_path / name, files, validation_size=20, input_sentence_size=200,
                        sample_seed=seed)
    _, prepared = _load(config)
    models[name] = Path(prepared, 'spm.model').read_bytes()
    stats = builder.preparation_stats(prepared)
    assert stats['vocab_sample_pairs'] == 100
  assert models['a'] == models['b']
  assert models['a'] != models['c']


def test_filters_count_what_they_drop(tmp_path):
  good = ptf.pairs(100)
  corpus = (good[:50] + [('', 'prázdný'), ('vide', '   '), ('', '')]
            + [(' '.join(['chien'] * 80), 'pes .'), ('a b c', ' '.join(['dlouhý'] * 80))]
            + [('a', ' '.join(['slovo'] * 12))]
            + good[:4] + [VALIDATION[0]] + good[50:])
  config = ptf.config(tmp_path / 'tfds', [ptf.write_pair(tmp_path, 'train', corpus)],
                      validation_files=[ptf.write_pair(tmp_path, 'dev', VALIDATION)],
                      max_length=64, max_length_ratio=4.0)
  splits, prepared = _load(config)
  stats = builder.preparation_stats(prepared)
  assert stats['train_lines'] == len(corpus)
  assert stats['train']['dropped'] == {'empty': 3, 'too_long': 2, 'length_ratio': 1,
                                       'duplicate': 5}
  assert stats['train']['kept'] == len(splits['train']) == 100
  vocab = Vocab(Path(prepared, 'spm.model'))
  assert len(set(_train_texts(splits, vocab))) == 100


def test_carved_validation_is_disjoint_from_train_and_seeded(tmp_path):
  files = [ptf.write_pair(tmp_path, 'train', PAIRS)]
  config = ptf.config(tmp_path / 'tfds', files, validation_size=40)
  splits, prepared = _load(config)
  validation = [(p['fr'], p['cs']) for p in splits['validation']]
  assert len(validation) == 40 and set(validation) <= set(PAIRS)
  vocab = Vocab(Path(prepared, 'spm.model'))
  train = set(_train_texts(splits, vocab))
  assert not train & {(vocab.normalize(s), vocab.normalize(t)) for s, t in validation}
  dropped = builder.preparation_stats(prepared)['train']['dropped']
  assert len(train) == len(PAIRS) - 40 - sum(dropped.values())
  again, _ = _load(ptf.config(tmp_path / 'tfds2', files, validation_size=40))
  assert list(again['validation']) == list(splits['validation'])


def test_a_changed_file_is_prepared_anew_and_the_old_records_are_kept(tmp_path):
  source, target = ptf.write_pair(tmp_path, 'train', PAIRS)
  config = ptf.config(tmp_path / 'tfds', [(source, target)], validation_size=20)
  splits, first = _load(config)
  text = Path(target).read_text(encoding='utf-8')
  assert 'Hund' in text
  Path(target).write_text(text.replace('Hund', 'Hunt', 1), encoding='utf-8')  # same size
  assert Path(target).stat().st_size == len(text.encode())
  _, second = _load(config)
  assert first != second
  assert builder.preparation_stats(first)['train']['kept'] == len(splits['train'])


def test_an_interrupted_preparation_is_redone_not_read(tmp_path):
  """SIGKILL after the first part of the records is written, then prepare again: the same
  records as a clean run, and nothing of the killed one left."""
  many = ptf.pairs(6000)
  files = [ptf.write_pair(tmp_path, 'train', many)]
  config = ptf.config(tmp_path / 'tfds', files, validation_size=50)
  prepared = Path(registry.get_dataset('parallel_text').prepared_dir(config.data))
  script = (f'import sys; sys.path[:0] = {sys.path!r}\n'
            'import parallel_text_fixture as ptf\n'
            'from transformer_jax.data import registry\n'
            'from transformer_jax.data.datasets.parallel_text import builder\n'
            'builder.TRAIN_PART_LINES = 1000  # parts are written early, the rest later\n'
            f'c = ptf.config({str(tmp_path / "tfds")!r}, {files!r}, validation_size=50)\n'
            'registry.load_splits(c.data)\n')
  child = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while not list((prepared / 'parallel_text').glob('incomplete.*/*train_000*')):
    assert time.time() < deadline and child.poll() is None, 'the child wrote no records'
    time.sleep(0.02)
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert not (prepared / 'parallel_text' / '1.0.0').exists()
  splits, _ = _load(config)
  assert not list((prepared / 'parallel_text').glob('incomplete.*'))
  clean, _ = _load(ptf.config(tmp_path / 'clean', files, validation_size=50))
  assert len(splits['train']) == len(clean['train']) > 5000
  every = range(len(clean['train']))
  for a, b in zip(splits['train'].read(every), clean['train'].read(every)):
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
  from tensorflow_datasets.core import file_adapters
  written = []
  original = file_adapters.ArrayRecordFileAdapter.write_examples

  def fill_up(cls, path, iterator):
    def examples():
      for example in iterator:
        if len(written) == 100:
          raise OSError(errno.ENOSPC, 'No space left on device')
        written.append(1)
        yield example
    return original.__func__(cls, path, examples())

  monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, 'write_examples',
                      classmethod(fill_up))
  config = ptf.config(tmp_path / 'tfds', [ptf.write_pair(tmp_path, 'train', PAIRS)],
                      validation_size=20)
  with pytest.raises(parallel_text.ParallelTextError, match='disk filled while preparing'):
    _load(config)
  prepared = Path(registry.get_dataset('parallel_text').prepared_dir(config.data))
  assert not list((prepared / 'parallel_text').glob('*')), 'no partial records remain'


# --- bad input: each a clear error naming the file (and line), nothing written ------------


def _expect_error(tmp_path, files, match, **kwargs):
  config = ptf.config(tmp_path / 'tfds', files, **({'validation_size': 10} | kwargs))
  with pytest.raises(parallel_text.ParallelTextError, match=match):
    _load(config)
  assert not (tmp_path / 'tfds').exists() or not list((tmp_path / 'tfds').rglob('*.array_record*'))


def test_unequal_line_counts_name_both_files_and_counts(tmp_path):
  source, _ = ptf.write_pair(tmp_path, 'train', PAIRS)
  _, target = ptf.write_pair(tmp_path / 'short', 'train', PAIRS[:-3])
  _expect_error(tmp_path, [(source, target)],
                rf'{source} has 400 lines but {target} has 397')


def test_missing_file_names_it_and_where_it_was_looked_for(tmp_path):
  source, _ = ptf.write_pair(tmp_path, 'train', PAIRS)
  _expect_error(tmp_path, [(source, str(tmp_path / 'nowhere' / 'train.cs'))],
                r'train\.cs not found: looked for it in .*nowhere \(which does not exist\)')


def test_bad_utf8_names_file_and_line(tmp_path):
  source, target = ptf.write_pair(tmp_path, 'train', PAIRS)
  lines = Path(target).read_bytes().split(b'\n')
  lines[6] = b'\xff\xfe broken'
  Path(target).write_bytes(b'\n'.join(lines))
  _expect_error(tmp_path, [(source, target)], rf'{target}: line 7 is not valid UTF-8')


def test_unknown_compression_is_named(tmp_path):
  source, target = ptf.write_pair(tmp_path, 'train', PAIRS)
  shutil.copy(target, target + '.zst')
  _expect_error(tmp_path, [(source, target + '.zst')], r"compression '\.zst' is not supported")


def test_a_corrupt_gzip_file_is_named(tmp_path):
  source, target = ptf.write_pair(tmp_path, 'train', PAIRS, ('.gz', ''))
  data = Path(source).read_bytes()
  Path(source).write_bytes(data[:len(data) // 2])
  _expect_error(tmp_path, [(source, target)], rf'{source}: cannot be read as \.gz')


def test_a_language_code_the_files_do_not_match(tmp_path):
  source, target = ptf.write_pair(tmp_path, 'train', PAIRS)
  _expect_error(tmp_path, [(target, source)], r'source and target swapped')
  german = tmp_path / 'train.de'
  shutil.copy(target, german)
  _expect_error(tmp_path, [(source, str(german))], r"its name says language 'de'.*'cs'")
  tsv = ptf.write_tsv(tmp_path / 'train.tsv', PAIRS, header=('en', 'de'))
  _expect_error(tmp_path, tsv, r"header naming languages \['en', 'de'\]")


def test_a_tsv_line_without_two_fields_is_named(tmp_path):
  tsv = Path(ptf.write_tsv(tmp_path / 'train.tsv', PAIRS))
  lines = tsv.read_text(encoding='utf-8').split('\n')
  lines[9] = lines[9].replace('\t', ' ')
  tsv.write_text('\n'.join(lines), encoding='utf-8')
  _expect_error(tmp_path, str(tsv), r'train\.tsv: line 10 has 1 tab-separated fields')


@pytest.mark.parametrize('kwargs, match', [
    ({'validation_size': 0}, r'no validation data'),
    ({'validation_size': 5, 'validation_files': 'dev.tsv'}, r'are both set'),
    ({'validation_size': 400}, r'`data.validation_size` = 400 is not less than the 400'),
])
def test_validation_settings_are_checked(tmp_path, kwargs, match):
  _expect_error(tmp_path, [ptf.write_pair(tmp_path, 'train', PAIRS)], match, **kwargs)


def test_config_values_of_the_wrong_form_name_the_key(tmp_path):
  _expect_error(tmp_path, str(tmp_path / 'train.en'), r'`data.train_files` = .* a single path '
                'must be a .tsv file')
  _expect_error(tmp_path, [('only-one.fr',)], r'`data.train_files\[0\]`')


# --- the training pipeline over prepared ids -------------------------------------------------


def _iterator(splits, prepared, **kwargs):
  vocab = Vocab(Path(prepared, 'spm.model'))
  return pipeline.make_train_iterator(
      splits['train'], vocab, source_lang='fr', target_lang='cs',
      **({'batch_tokens': 8 * 64, 'max_length': 64, 'seed': 3} | kwargs))


def _pairs_of(batch):
  """(source ids, target ids) of every packed pair of a batch."""
  found = []
  for row in range(batch['inputs'].shape[0]):
    for segment in range(1, batch['inputs_segmentation'][row].max() + 1):
      source = batch['inputs'][row][batch['inputs_segmentation'][row] == segment]
      target = batch['targets'][row][batch['targets_segmentation'][row] == segment]
      found.append((tuple(source[:-1]), tuple(target[:-1])))
  return found


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('workers', [0, 2])
def test_resume_mid_epoch_gives_exactly_the_next_batches(plain, workers):
  _, splits, prepared = plain
  reference = _iterator(splits, prepared, num_workers=workers)
  for _ in range(7):  # ~400 pairs are ~20 batches of 8 rows: the 45 after span 2 epochs
    next(reference)
  state = json.loads(json.dumps(reference.get_state()))  # as a checkpoint holds it
  expected = [next(reference) for _ in range(45)]
  resumed = _iterator(splits, prepared, num_workers=workers)
  resumed.set_state(state)
  got = [next(resumed) for _ in range(45)]
  assert all(_equal(a, b) for a, b in zip(expected, got))
  for iterator in (reference, resumed):
    if workers:
      iterator.close()


def test_batches_are_packed_rows_of_whole_pairs(plain):
  _, splits, prepared = plain
  batch = next(_iterator(splits, prepared))
  vocab = Vocab(Path(prepared, 'spm.model'))
  known = {(tuple(r['source_ids']), tuple(r['target_ids']))
           for r in splits['train'].read(range(len(splits['train'])))}
  assert set(_pairs_of(batch)) <= known
  for key in ('inputs', 'targets'):
    seg, pos = batch[f'{key}_segmentation'], batch[f'{key}_position']
    starts = np.diff(seg, axis=1, prepend=0) != 0
    assert np.all(pos[starts & (seg > 0)] == 0), 'positions restart at each pair'
  real = batch['decoder_inputs'][batch['targets_segmentation'] > 0]
  assert np.sum(real == vocab.bos_id) == len(_pairs_of(batch))
  assert np.array_equal(batch['decoder_inputs'][:, 1:][batch['targets_segmentation'][:, 1:] ==
                                                       batch['targets_segmentation'][:, :-1]],
                        batch['targets'][:, :-1][batch['targets_segmentation'][:, 1:] ==
                                                 batch['targets_segmentation'][:, :-1]])


@pytest.mark.parametrize('shard_count', [2, 3])
def test_process_shards_partition_the_pairs(plain, shard_count):
  _, splits, prepared = plain
  seen = []
  for shard_index in range(shard_count):
    for batch in _iterator(splits, prepared, shard_index=shard_index, shard_count=shard_count,
                           num_epochs=1):
      seen.extend(_pairs_of(batch))
  every = [(tuple(r['source_ids']), tuple(r['target_ids']))
           for r in splits['train'].read(range(len(splits['train'])))]
  assert sorted(seen) == sorted(every), 'each pair exactly once over the shards'
