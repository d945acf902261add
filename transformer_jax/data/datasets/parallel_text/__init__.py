"""Any parallel corpus: your own file pairs or TSV files, any two languages, any size.

    config.data.dataset = 'parallel_text'
    config.data.source_lang, config.data.target_lang = 'fr', 'cs'
    config.data.train_files = [('corpus.fr.gz', 'corpus.cs.gz')]   # or 'train.tsv'
    config.data.validation_files = [('dev.fr', 'dev.cs')]          # or carve data.validation_size

Prepared once (scan.py, builder.py: streamed, a sampled SentencePiece model, token ids in ArrayRecord
through TFDS) into a directory keyed by the raw files' identity and every option that changes
the records, so changed files are prepared anew, never mixed with old records. The vocabulary
is the prepared data's (its ids are in the records): a run copies it into its work directory.
Light to import: the builder (TFDS) loads on first use.
"""
from __future__ import annotations

import hashlib
import os

from transformer_jax.data.datasets.parallel_text.corpus_files import (ParallelTextError,
                                                                     corpus_files)
from transformer_jax.data.file_identity import file_digest
from transformer_jax.data.registry import DatasetSpec, register_dataset

NAME = 'parallel_text'
# Config keys (with the defaults of transformer_jax/configs/multi30k.py) this dataset reads.
OPTION_DEFAULTS = {'train_files': (), 'validation_files': (), 'validation_size': 0,
                   'input_sentence_size': 500_000, 'sample_seed': 0, 'max_length_ratio': 3.0,
                   'drop_duplicates': True}


def _option(data_config, key: str):
  return data_config.get(key, OPTION_DEFAULTS[key])


def preparation_plan(data_config):
  """The PreparationPlan of a config (files resolved and checked for existence and names).

  Raises:
    ParallelTextError (a ConfigError's sibling): naming the config key or the file.
  """
  from transformer_jax.data.datasets.parallel_text.scan import PreparationPlan
  src, tgt = data_config.source_lang, data_config.target_lang
  train = corpus_files(_option(data_config, 'train_files'), 'data.train_files')
  validation = corpus_files(_option(data_config, 'validation_files'), 'data.validation_files')
  validation_size = _option(data_config, 'validation_size')
  if not train:
    raise ParallelTextError('config key `data.train_files` is empty: give a list of '
                            '(source_path, target_path) pairs or a .tsv path')
  if not isinstance(validation_size, int) or validation_size < 0:
    raise ParallelTextError(f'config key `data.validation_size` = {validation_size!r}: must be '
                            'an integer >= 0')
  if validation and validation_size:
    raise ParallelTextError(
        f'config keys `data.validation_files` and `data.validation_size` = {validation_size} '
        'are both set: give validation files, or carve that many pairs from train, not both')
  if not validation and not validation_size:
    raise ParallelTextError('no validation data: set config key `data.validation_files`, or '
                            '`data.validation_size` to carve that many pairs from train')
  input_sentence_size = _option(data_config, 'input_sentence_size')
  ratio = _option(data_config, 'max_length_ratio')
  if not isinstance(input_sentence_size, int) or input_sentence_size < 2:
    raise ParallelTextError(f'config key `data.input_sentence_size` = {input_sentence_size!r}: '
                            'must be an integer >= 2 (sentences sampled for the vocabulary)')
  if not isinstance(ratio, (int, float)) or (ratio and ratio < 1):
    raise ParallelTextError(f'config key `data.max_length_ratio` = {ratio!r}: must be 0 (off) '
                            'or a number >= 1')
  for corpus_file in (*train, *validation):
    corpus_file.check(src, tgt)
  return PreparationPlan(
      source_lang=src, target_lang=tgt, train=tuple(train), validation=tuple(validation),
      validation_size=validation_size, vocab_size=data_config.vocab_size,
      input_sentence_size=input_sentence_size, sample_seed=_option(data_config, 'sample_seed'),
      max_length=data_config.max_length, max_length_ratio=float(ratio),
      drop_duplicates=bool(_option(data_config, 'drop_duplicates')))


def fingerprint(data_config) -> dict[str, str]:
  """{'<split>[i]:<side>': '<file name> <digest>'} of every corpus file: a resumed run refuses
  other data."""
  return _fingerprint(preparation_plan(data_config))


def _fingerprint(plan) -> dict[str, str]:
  prints = {}
  for split, files in (('train', plan.train), ('validation', plan.validation)):
    for i, corpus_file in enumerate(files):
      for side, path in zip(('source', 'target') if corpus_file.target_path else ('tsv',),
                            corpus_file.paths):
        prints[f'{split}[{i}]:{side}'] = f'{path.name} {file_digest(path)}'
  return prints


def prepared_dir(data_config) -> str:
  """`<base>/parallel_text_<key>`, base = `data.data_dir` or $TFDS_DATA_DIR or
  ~/tensorflow_datasets; the key is the raw files' identity and the preparation options."""
  return _prepared_dir(data_config, preparation_plan(data_config))


def _prepared_dir(data_config, plan) -> str:
  options = {k: getattr(plan, k) for k in ('validation_size', 'vocab_size',
                                            'input_sentence_size', 'sample_seed', 'max_length',
                                            'max_length_ratio', 'drop_duplicates')}
  key = repr((plan.languages, sorted(_fingerprint(plan).items()), sorted(options.items())))
  base = (data_config.data_dir or os.environ.get('TFDS_DATA_DIR')
          or os.path.expanduser('~/tensorflow_datasets'))
  return os.path.join(base, f'{NAME}_{hashlib.sha1(key.encode()).hexdigest()[:12]}')


def vocab_path(data_config) -> str:
  """The SentencePiece model the prepared ids were made with (the run's vocabulary)."""
  from transformer_jax.data.datasets.parallel_text.builder import VOCAB_FILENAME
  return os.path.join(prepared_dir(data_config), VOCAB_FILENAME)


def load_splits(data_config, splits) -> dict:
  """'train': TokenIdPairs (ids of the config's direction); 'validation': TextPairs."""
  from transformer_jax.data.datasets.parallel_text import builder, prepared
  plan = preparation_plan(data_config)
  directory = _prepared_dir(data_config, plan)
  builder.prepare(plan, directory)
  src, tgt = data_config.source_lang, data_config.target_lang
  loaded = {}
  for split in splits:
    if split == 'train':
      loaded[split] = prepared.TokenIdPairs(directory, split, src, tgt)
    elif split == 'validation':
      loaded[split] = prepared.TextPairs(directory, split, src, tgt)
    else:
      raise ParallelTextError(f'parallel_text has the splits train and validation, not '
                              f'{split!r}; score a test set with translate.py --input/--reference')
  return loaded


DATASET = register_dataset(DatasetSpec(
    name=NAME, load_splits=load_splits, language_pairs=None, prepared_dir=prepared_dir,
    fingerprint=fingerprint, vocab_path=vocab_path, description=__doc__.splitlines()[0]))
