"""What a preparation is asked for (`PreparationPlan`), and its first pass over the corpus
(`scan`): every training line read and checked before anything is written, and the seeded
uniform samples — the sentences SentencePiece learns from, and the pairs carved out for
validation when no validation files are given.
"""
from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import heapq

import numpy as np

from transformer_jax.data.datasets.parallel_text.corpus_files import (CorpusFile,
                                                                     ParallelTextError)


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


def train_pairs(plan: PreparationPlan) -> Iterator[tuple[str, str]]:
  """Every (source, target) line of the training files, in order."""
  for corpus_file in plan.train:
    yield from corpus_file.pairs(plan.source_lang, plan.target_lang)


@dataclasses.dataclass
class ScanResult:
  num_pairs: int                      # lines of the training files
  vocab_sample: list[dict[str, str]]  # freed once the vocabulary is trained
  vocab_sample_pairs: int
  carved: list[tuple[int, tuple[str, str]]]  # (train line index, pair) carved for validation
  validation: list[tuple[str, str]]   # the validation pairs: the files' (read whole) or carved


def scan(plan: PreparationPlan) -> ScanResult:
  """Pass 1: checks every training pair and draws the samples (see the module docstring)."""
  sample = _Reservoir(plan.input_sentence_size // 2, plan.sample_seed)
  carve = _Reservoir(0 if plan.validation else plan.validation_size, plan.sample_seed + 1)
  count = non_empty = 0
  for index, (source, target) in enumerate(train_pairs(plan)):
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
  carved = carve.items()
  # Validation sets are small: read whole here, so their errors come before anything is written.
  validation = ([p for f in plan.validation for p in f.pairs(plan.source_lang, plan.target_lang)]
                if plan.validation else [pair for _, pair in carved])
  return ScanResult(count, vocab_sample, len(vocab_sample), carved, validation)
