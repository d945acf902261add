"""The prepared format of parallel_text, and reading it back (the writer is builder.py).

Under `<prepared_dir>/parallel_text/<VERSION>/`, TFDS ArrayRecord splits: `train_000`,
`train_001`, … (parts of the training corpus, in file order) whose records hold the token ids of
both languages (`ids_<lang>`, int32 bytes; `text_<lang>` empty), and `validation`, with text and
ids. `TokenIdPairs` reads the train parts as one sequence, `TextPairs` the validation text.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

BUILDER_NAME = 'parallel_text'
VERSION = '1.0.0'
TRAIN_PART_PREFIX = 'train_'


def ids_feature(lang: str) -> str:
  return f'ids_{lang}'


def text_feature(lang: str) -> str:
  return f'text_{lang}'


def version_dir(prepared_dir) -> Path:
  return Path(prepared_dir) / BUILDER_NAME / VERSION


def data_source(prepared_dir: str | os.PathLike, split: str):
  """TFDS's random-access source of a prepared split, read from its files alone (no plan)."""
  return tfds.builder_from_directory(os.fspath(version_dir(prepared_dir))).as_data_source(
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
      info = tfds.builder_from_directory(os.fspath(version_dir(self.prepared_dir))).info
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
