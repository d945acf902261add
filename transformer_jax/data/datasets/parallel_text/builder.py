"""Preparing parallel text into ArrayRecord files of token ids (TFDS, no TensorFlow), and
reading them back.

    plan = PreparationPlan.from_config(data_config)
    prepare(plan, prepared_dir)  # once; later calls find it complete and return at once

Preparation streams the corpus twice and never holds it whole:
  1. scan: reads every pair (UTF-8 and equal line counts checked before anything is written),
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

import dataclasses
import errno
import heapq
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from transformer_jax.data.datasets.parallel_text.corpus_files import (CorpusFile,
                                                                     ParallelTextError)
from transformer_jax.data.datasets.parallel_text.filters import PairFilter
from transformer_jax.data.vocab import Vocab, train_vocab

BUILDER_NAME = 'parallel_text'
VOCAB_FILENAME = 'spm.model'
STATS_FILENAME = 'preparation.json'
ENCODE_CHUNK = 8192  # pairs tokenised per SentencePiece call


@dataclasses.dataclass(frozen=True)
class PreparationPlan:
  """What to prepare: the files, the vocabulary's sample, the filters (all of the key)."""
  source_lang: str
  target_lang: str
  train: tuple[CorpusFile, ...]
  validation: tuple[CorpusFile, ...]
  validation_size: int
  vocab_size: int
  input_sentence_size: int
  sample_seed: int
  max_length: int
  max_length_ratio: float
  drop_duplicates: bool

  @property
  def languages(self) -> tuple[str, str]:
    return self.source_lang, self.target_lang


def ids_feature(lang: str) -> str:
  return f'ids_{lang}'


def text_feature(lang: str) -> str:
  return f'text_{lang}'


class _Reservoir:
  """A seeded uniform sample of `size` items from a stream of unknown length (algorithm R,
  with random keys: the kept items are those with the `size` largest keys)."""

  def __init__(self, size: int, seed: int):
    self._size, self._rng, self._heap = size, np.random.default_rng(seed), []
    self._keys = self._rng.random(1 << 16)
    self._next_key = 0

  def offer(self, index: int, item) -> None:
    if self._size <= 0:
      return
    if self._next_key == len(self._keys):
      self._keys, self._next_key = self._rng.random(1 << 16), 0
    key = float(self._keys[self._next_key])
    self._next_key += 1
    if len(self._heap) < self._size:
      heapq.heappush(self._heap, (key, index, item))
    elif key > self._heap[0][0]:
      heapq.heapreplace(self._heap, (key, index, item))

  def items(self) -> list[tuple[int, object]]:
    """(stream index, item) of the sample, in stream order."""
    return sorted((index, item) for _, index, item in self._heap)


def _train_pairs(plan: PreparationPlan) -> Iterator[tuple[str, str]]:
  for corpus_file in plan.train:
    yield from corpus_file.pairs(plan.source_lang, plan.target_lang)


@dataclasses.dataclass
class ScanResult:
  num_pairs: int
  vocab_sample: list[dict[str, str]]
  carved: list[tuple[int, tuple[str, str]]]  # (train stream index, (source, target))
  vocab_sample_pairs: int = 0


def scan(plan: PreparationPlan) -> ScanResult:
  """Pass 1: checks every training pair and draws the samples (see the module docstring)."""
  sample = _Reservoir(plan.input_sentence_size // 2, plan.sample_seed)
  carve = _Reservoir(0 if plan.validation else plan.validation_size, plan.sample_seed + 1)
  count = non_empty = 0
  for index, (source, target) in enumerate(_train_pairs(plan)):
    count += 1
    if source.strip() and target.strip():
      non_empty += 1
      carve.offer(index, (source, target))
      sample.offer(index, (source, target))
  if not plan.validation and count and plan.validation_size >= non_empty:
    raise ParallelTextError(
        f'config key `data.validation_size` = {plan.validation_size} is not less than the '
        f'{non_empty} training pairs of {", ".join(map(str, plan.train))}; give validation '
        'files (`data.validation_files`) or carve fewer')
  if not count:
    raise ParallelTextError(f'no training pairs in {", ".join(map(str, plan.train))}')
  vocab_sample = [dict(zip(plan.languages, pair)) for _, pair in sample.items()]
  return ScanResult(count, vocab_sample, carve.items())


class ParallelText(tfds.core.GeneratorBasedBuilder):
  """Parallel text of two languages as token ids (train) and text + ids (validation)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Token ids of a joint SentencePiece model; filtered train split.'}

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
    for _, (source, target) in self._scan.carved:
      pair_filter.forbid(source, target)
    for corpus_file in plan.validation:  # no training copy of a validation pair
      for source, target in corpus_file.pairs(plan.source_lang, plan.target_lang):
        pair_filter.forbid(source, target)
    chunk: list[tuple[int, str, str]] = []

    def flush():
      sources = self._vocab.encode_batch([s for _, s, _ in chunk])
      targets = self._vocab.encode_batch([t for _, _, t in chunk])
      for (index, source, target), source_ids, target_ids in zip(chunk, sources, targets):
        if pair_filter.reason(source, target, source_ids, target_ids) is None:
          yield index, self._record(source, target, source_ids, target_ids, text=False)
      chunk.clear()

    for index, (source, target) in enumerate(_train_pairs(plan)):
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
    plan = self._plan
    if plan.validation:
      pairs = (p for f in plan.validation for p in f.pairs(plan.source_lang, plan.target_lang))
    else:
      pairs = (pair for _, pair in self._scan.carved)
    kept = empty = 0
    for index, (source, target) in enumerate(pairs):
      if not source.strip() or not target.strip():
        empty += 1
        continue
      kept += 1
      yield index, self._record(source, target, self._vocab.encode(source),
                                self._vocab.encode(target), text=True)
    self.filter_stats['validation'] = {'kept': kept, 'dropped': {'empty': empty}}
    logging.info('parallel_text validation: %d pairs (%d with an empty side skipped)', kept,
                 empty)


TRAIN_PART_PREFIX = 'train_'
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
  for corpus_file in (*plan.train, *plan.validation):
    corpus_file.check(plan.source_lang, plan.target_lang)
  _remove_leftovers(prepared_dir)
  prepared_dir.mkdir(parents=True, exist_ok=True)
  logging.info('Preparing parallel text into %s (pass 1: checking and sampling)', prepared_dir)
  scan_result = scan(plan)
  if plan.validation:  # read whole (validation sets are small): errors before anything is written
    for corpus_file in plan.validation:
      sum(1 for _ in corpus_file.pairs(plan.source_lang, plan.target_lang))
  vocab_path = prepared_dir / VOCAB_FILENAME
  try:
    if vocab_path.exists():
      vocab = Vocab(vocab_path)
    else:
      logging.info('Training the vocabulary on %d sampled pairs', len(scan_result.vocab_sample))
      vocab = train_vocab(scan_result.vocab_sample, vocab_path, vocab_size=plan.vocab_size,
                          languages=plan.languages, max_sentences=plan.input_sentence_size)
    scan_result.vocab_sample_pairs = len(scan_result.vocab_sample)
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
  tmp = prepared_dir / f'.{STATS_FILENAME}.tmp'
  tmp.write_text(json.dumps(stats, indent=2) + '\n')
  os.replace(tmp, prepared_dir / STATS_FILENAME)


def preparation_stats(prepared_dir: str | os.PathLike) -> dict:
  """What the preparation counted (lines, sample, kept and dropped per filter), as written."""
  return json.loads((Path(prepared_dir) / STATS_FILENAME).read_text())


def _version_dir(prepared_dir) -> Path:
  return Path(prepared_dir) / BUILDER_NAME / str(ParallelText.VERSION)


def data_source(prepared_dir: str | os.PathLike, split: str):
  """TFDS's random-access source of a prepared split, read from its files alone (no plan)."""
  return tfds.builder_from_directory(os.fspath(_version_dir(prepared_dir))).as_data_source(
      split=split)


def _parse_ids(record: bytes, keys: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
  """The two id arrays of one serialized record, without TFDS's generic decoder (~10x faster:
  this is the training pipeline's per-pair cost)."""
  feature = tf_example_pb2.Example.FromString(record).features.feature
  return tuple(np.frombuffer(feature[key].bytes_list.value[0], np.int32) for key in keys)


class TokenIdPairs(Sequence):
  """Random access to `{'source_ids': int32 [S], 'target_ids': int32 [T]}` (no BOS/EOS) of
  the prepared train parts, as one sequence in file order.

  `read(indices)` reads many records in one parallel ArrayRecord call: a single record read
  costs ~1 ms (a whole chunk is read), one of 1,024 random records ~10 µs a record.
  """

  def __init__(self, prepared_dir: str | os.PathLike, split: str, source_lang: str,
               target_lang: str):
    self.prepared_dir, self.split = os.fspath(prepared_dir), split
    self.languages = (source_lang, target_lang)
    self._keys = (ids_feature(source_lang), ids_feature(target_lang))
    self._records = None
    self._length = len(self._open())

  def _open(self):
    """One ArrayRecord source over every shard of every part, in file order: a block of
    random reads then runs in one parallel call (per part, ~113 of 1,024 records each, the
    reads cost 4–5x more)."""
    if self._records is None:
      from array_record.python.array_record_data_source import ArrayRecordDataSource
      info = tfds.builder_from_directory(os.fspath(_version_dir(self.prepared_dir))).info
      names = sorted(n for n in info.splits if n.startswith(TRAIN_PART_PREFIX))
      paths = [os.fspath(p) for n in names for p in info.splits[n].filepaths]
      self._records = ArrayRecordDataSource(paths)
    return self._records

  def __len__(self) -> int:
    return self._length

  def read(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    records = self._open().__getitems__([int(i) for i in np.asarray(indices).reshape(-1)])
    return [dict(zip(('source_ids', 'target_ids'), _parse_ids(r, self._keys))) for r in records]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} pairs')
    return self.read([index % len(self)])[0]

  # Worker processes reopen the files.
  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != '_records'} | {'_records': None}

  def __repr__(self) -> str:
    return f'TokenIdPairs({self.split}, {len(self)} pairs, {"→".join(self.languages)})'


class TextPairs(Sequence):
  """The evaluation split in file order, `{source_lang: text, target_lang: text}`, in memory."""

  def __init__(self, prepared_dir: str | os.PathLike, split: str, source_lang: str,
               target_lang: str):
    source = data_source(prepared_dir, split)
    keys = {lang: text_feature(lang) for lang in (source_lang, target_lang)}
    self._pairs = []
    for start in range(0, len(source), 1024):
      for record in source.__getitems__(range(start, min(start + 1024, len(source)))):
        self._pairs.append({lang: record[key].decode('utf-8') for lang, key in keys.items()})

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, index: int) -> Mapping[str, str]:
    return self._pairs[index]
