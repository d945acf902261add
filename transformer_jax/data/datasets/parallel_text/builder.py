"""Preparing parallel text into ArrayRecord files of token ids (TFDS, no TensorFlow); the
format and its readers are prepared.py.

    plan = preparation_plan(data_config)   # parallel_text/__init__.py: files resolved, checked
    prepare(plan, prepared_dir)            # once; later calls find it complete and return

Preparation streams the corpus twice and never holds it whole:
  1. scan (scan.py): reads every pair (UTF-8 and equal line counts checked before anything is written),
     draws a seeded uniform sample for SentencePiece (`input_sentence_size` sentences) and,
     without validation files, the `validation_size` pairs carved out for validation;
  2. the vocabulary is trained on the sample (`<prepared_dir>/spm.model`);
  3. write: TFDS writes the train split as token ids of both languages, after the filters
     (filters.py, counted and logged), and the validation split as text and ids.
TFDS writes into an `incomplete.*` directory renamed on success: an interrupted preparation is
never read as complete; its leftovers are removed when it is redone. A full disk stops it with
an error naming the directory, and the partial output is removed.
"""
from __future__ import annotations

from collections.abc import Iterator
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from transformer_jax.data.datasets.parallel_text.corpus_files import ParallelTextError
from transformer_jax.data.datasets.parallel_text.filters import PairFilter
from transformer_jax.data.datasets.parallel_text.prepared import (
    BUILDER_NAME, TRAIN_PART_PREFIX, VERSION as FORMAT_VERSION, ids_feature, text_feature)
from transformer_jax.data.datasets.parallel_text.scan import (PreparationPlan, ScanResult,
                                                             scan, train_pairs)
from transformer_jax.data.vocab import Vocab, train_vocab
from transformer_jax.text_files import write_text_atomically

VOCAB_FILENAME = 'spm.model'
STATS_FILENAME = 'preparation.json'
ENCODE_CHUNK = 8192  # pairs tokenised per SentencePiece call


class ParallelText(tfds.core.GeneratorBasedBuilder):
  """Parallel text of two languages as token ids (train) and text + ids (validation)."""

  VERSION = tfds.core.Version(FORMAT_VERSION)
  RELEASE_NOTES = {FORMAT_VERSION: 'Token ids of a joint SentencePiece model, filtered train.'}

  def __init__(self, *, plan: PreparationPlan, vocab: Vocab | None = None,
               scan_result: ScanResult | None = None, **kwargs):
    self._plan, self._vocab, self._scan = plan, vocab, scan_result
    self.filter_stats: dict = {}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    ids = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32,
                                       encoding=tfds.features.Encoding.BYTES)
    features = {}
    for lang in sorted(self._plan.languages):
      features[ids_feature(lang)] = ids()
      features[text_feature(lang)] = tfds.features.Text()  # '' in train: it holds ids only
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        # File order: validation rows line up with their references; train is shuffled later.
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    # The train split is written as parts of TRAIN_PART_LINES lines each: TFDS holds a split's
    # records in memory up to 1 GB, and past that spills them through tf.io.gfile (TensorFlow).
    # A part stays well below it; TokenIdPairs reads the parts as one split.
    parts = train_part_names(self._scan.num_pairs)
    self._stream = _PartedStream(self._train_examples())
    return {**{name: self._generate_examples(name) for name in parts},
            'validation': self._generate_examples('validation')}

  def _generate_examples(self, split: str):
    if split == 'validation':
      return self._validation_examples()
    # Parts are written one after the other, in order, from one pass over the files.
    part = int(split.removeprefix(TRAIN_PART_PREFIX))
    return self._stream.take_until((part + 1) * TRAIN_PART_LINES)

  def _record(self, source: str, target: str, source_ids, target_ids, *, text: bool) -> dict:
    src, tgt = self._plan.languages
    return {ids_feature(src): np.asarray(source_ids, np.int32),
            ids_feature(tgt): np.asarray(target_ids, np.int32),
            text_feature(src): source if text else '', text_feature(tgt): target if text else ''}

  def _train_examples(self):
    plan, carved = self._plan, {index for index, _ in self._scan.carved}
    pair_filter = PairFilter(plan.max_length, plan.max_length_ratio, plan.drop_duplicates)
    for source, target in self._scan.validation:  # no training copy of a validation pair
      pair_filter.forbid(source, target)
    chunk: list[tuple[int, str, str]] = []

    def flush():
      sources = self._vocab.encode_batch([s for _, s, _ in chunk])
      targets = self._vocab.encode_batch([t for _, _, t in chunk])
      for (index, source, target), source_ids, target_ids in zip(chunk, sources, targets):
        if pair_filter.reason(source, target, source_ids, target_ids) is None:
          yield index, self._record(source, target, source_ids, target_ids, text=False)
      chunk.clear()

    for index, (source, target) in enumerate(train_pairs(plan)):
      if index in carved:
        continue
      chunk.append((index, source, target))
      if len(chunk) == ENCODE_CHUNK:
        yield from flush()
    yield from flush()
    self.filter_stats['train'] = pair_filter.summary()
    dropped = pair_filter.dropped
    logging.info('parallel_text train: kept %d of %d pairs; dropped %d empty, %d longer than '
                 'max_length=%d, %d with a length ratio above %s, %d duplicates (%d carved for '
                 'validation)', pair_filter.kept, self._scan.num_pairs, dropped['empty'],
                 dropped['too_long'], plan.max_length, dropped['length_ratio'],
                 plan.max_length_ratio or 'off', dropped['duplicate'], len(carved))

  def _validation_examples(self):
    kept = empty = 0
    for index, (source, target) in enumerate(self._scan.validation):
      if not source.strip() or not target.strip():
        empty += 1
        continue
      kept += 1
      yield index, self._record(source, target, self._vocab.encode(source),
                                self._vocab.encode(target), text=True)
    self.filter_stats['validation'] = {'kept': kept, 'dropped': {'empty': empty}}
    logging.info('parallel_text validation: %d pairs (%d with an empty side skipped)', kept,
                 empty)


TRAIN_PART_LINES = 500_000  # lines of the raw corpus per part: < 0.5 GB of records


def train_part_names(num_lines: int) -> list[str]:
  return [f'{TRAIN_PART_PREFIX}{k:03d}' for k in range(max(1, -(-num_lines // TRAIN_PART_LINES)))]


class _PartedStream:
  """One ordered stream of (line index, record), handed out as consecutive parts."""

  def __init__(self, stream: Iterator[tuple[int, dict]]):
    self._stream, self._held = stream, None

  def take_until(self, end: int) -> Iterator[tuple[int, dict]]:
    taken = 0
    while True:
      if self._held is None:
        self._held = next(self._stream, None)
      if self._held is None or self._held[0] >= end:
        break
      item, self._held = self._held, None
      taken += 1
      yield item
    if not taken:  # TFDS cannot write an empty split
      raise ParallelTextError(
          f'lines {end - TRAIN_PART_LINES + 1}–{end} of the training corpus kept no pair after '
          'the filters (see the counts logged above): check those lines of the files, or '
          'loosen `data.max_length` / `data.max_length_ratio`')


def _builder(plan: PreparationPlan, prepared_dir: Path, **kwargs) -> ParallelText:
  return ParallelText(plan=plan, data_dir=os.fspath(prepared_dir), file_format='array_record',
                      **kwargs)


def _remove_leftovers(prepared_dir: Path) -> None:
  """An interrupted preparation's `incomplete.*` directories (never read, redone now)."""
  dataset_dir = prepared_dir / BUILDER_NAME
  if dataset_dir.is_dir():
    for leftover in dataset_dir.glob('incomplete.*'):
      logging.warning('Removing %s, left by an interrupted preparation', leftover)
      shutil.rmtree(leftover, ignore_errors=True)


def prepare(plan: PreparationPlan, prepared_dir: str | os.PathLike) -> ParallelText:
  """Prepares `plan` into `prepared_dir` unless a complete preparation is there already."""
  prepared_dir = Path(prepared_dir)
  builder = _builder(plan, prepared_dir)
  if builder.is_prepared():
    return builder
  _remove_leftovers(prepared_dir)
  prepared_dir.mkdir(parents=True, exist_ok=True)
  logging.info('Preparing parallel text into %s (pass 1: checking and sampling)', prepared_dir)
  scan_result = scan(plan)
  vocab_path = prepared_dir / VOCAB_FILENAME
  try:
    if vocab_path.exists():
      vocab = Vocab(vocab_path)
    else:
      logging.info('Training the vocabulary on %d sampled pairs', scan_result.vocab_sample_pairs)
      vocab = train_vocab(scan_result.vocab_sample, vocab_path, vocab_size=plan.vocab_size,
                          languages=plan.languages, max_sentences=plan.input_sentence_size)
    scan_result.vocab_sample = []  # up to input_sentence_size sentences: free them before writing
    builder = _builder(plan, prepared_dir, vocab=vocab, scan_result=scan_result)
    with tempfile.TemporaryDirectory(dir=prepared_dir, prefix='.downloads-') as download_dir:
      builder.download_and_prepare(file_format='array_record', download_dir=download_dir)
  except OSError as e:
    if not _disk_full(e):
      raise
    _remove_leftovers(prepared_dir)
    raise ParallelTextError(
        f'the disk filled while preparing {prepared_dir} ({e.strerror}); the partial output '
        'was removed: free space there, or point config key `data.data_dir` at a larger '
        'disk, and run again') from None
  _write_stats(prepared_dir, scan_result, builder.filter_stats)
  return builder


def _disk_full(error: BaseException | None) -> bool:
  """Whether `error` or what caused it is ENOSPC / EDQUOT (TFDS re-raises without the errno)."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    error = error.__cause__ or error.__context__
  return False


def _write_stats(prepared_dir: Path, scan_result: ScanResult, filter_stats: dict) -> None:
  stats = {'train_lines': scan_result.num_pairs,
           'vocab_sample_pairs': scan_result.vocab_sample_pairs,
           'carved_for_validation': len(scan_result.carved),
           **filter_stats}
  write_text_atomically(os.fspath(prepared_dir / STATS_FILENAME),
                        json.dumps(stats, indent=2) + '\n')


def preparation_stats(prepared_dir: str | os.PathLike) -> dict:
  """What the preparation counted (lines, sample, kept and dropped per filter), as written."""
  return json.loads((Path(prepared_dir) / STATS_FILENAME).read_text())
