"""Grain input pipelines: packed training batches and ordered evaluation batches.

Training batches (`make_train_iterator`; evaluation batches are eval_batches.py), per process:

    source[shard_index::shard_count] -> shuffle (new permutation each epoch)
    -> repeat -> tokenise (map) -> drop pairs longer than max_length (counted)
    -> first-fit pack several pairs per row -> batch B rows

or, for a source of prepared token ids (one with `read(indices)`, e.g. parallel_text's):

    shuffled index blocks of the shard -> one ArrayRecord read per block
    -> first-fit pack into B rows (id_packing.py: no tokenising, ~8x cheaper a pair)

either optionally in `num_workers` grain worker processes.

Every batch is a dict of int32 arrays of shape [B, L], L = max_length and
B = batch_tokens // max_length:

    inputs                source ids + EOS of the packed pairs; 0 = padding
    inputs_segmentation   1..k for the k pairs packed in the row; 0 on padding
    inputs_position       position within its own sentence; 0 on padding
    decoder_inputs        BOS + target ids (teacher forcing)
    targets               target ids + EOS: targets[b, t] is the label for decoder_inputs[b, t]
    targets_segmentation  the same segment number as the pair's source tokens
    targets_position      position within its own sentence

Pair i's source and target sit in the same row under the same segment number, so
the model masks attention with `segmentation_q == segmentation_k` (self- and
cross-attention alike) and restarts positional encodings at each segment.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import os

from absl import logging
import grain
import numpy as np

from transformer_jax.data import id_packing
from transformer_jax.data.vocab import Vocab
from transformer_jax.errors import DataError

SEQUENCE_KEYS = ('inputs', 'decoder_inputs', 'targets')
# More bins than rows, so one long pair rarely closes a batch with half-empty rows:
# on Multi30k (L=64, B=64) target padding is 6.0 % with B bins, 5.6 % with 2B.
PACKING_BINS_PER_ROW = 2


def check_languages(source: Sequence[Mapping[str, str]], source_lang: str,
                    target_lang: str) -> tuple[str, str]:
  """Returns (source_lang, target_lang) if the source's examples hold both languages.

  Raises:
    ValueError: naming the languages the examples do hold.
  """
  if source_lang == target_lang:
    raise ValueError(f'source and target language are both {source_lang!r}.')
  if hasattr(source, 'languages'):  # prepared token ids of one direction
    if tuple(source.languages) != (source_lang, target_lang):
      raise ValueError(f'The prepared pairs are {"→".join(source.languages)}, not '
                       f'{source_lang}→{target_lang}.')
    return source_lang, target_lang
  if len(source):
    have = sorted(source[0])
    missing = [lang for lang in (source_lang, target_lang) if lang not in have]
    if missing:
      raise ValueError(f'The examples have no {missing[0]!r} side: they hold {have}; choose '
                       f'data.source_lang / data.target_lang among them.')
  return source_lang, target_lang


def tokenize_pair(pair: Mapping[str, str], vocab: Vocab, source_lang: str,
                  target_lang: str) -> dict[str, np.ndarray]:
  """int32 `inputs` [S+1], `decoder_inputs` [T+1], `targets` [T+1] of one pair."""
  source_ids = vocab.encode(pair[source_lang])
  target_ids = vocab.encode_target(pair[target_lang])
  return {
      'inputs': np.asarray(source_ids + [vocab.eos_id], np.int32),
      'decoder_inputs': np.asarray([vocab.bos_id] + target_ids, np.int32),
      'targets': np.asarray(target_ids + [vocab.eos_id], np.int32),
  }


class _TokenizeWithPass(grain.transforms.MapWithIndex):
  """`tokenize_pair` plus `pass_index`: which pass over the shard (epoch) it is from."""

  def __init__(self, vocab: Vocab, source_lang: str, target_lang: str, shard_size: int):
    self._vocab, self._source_lang, self._target_lang = vocab, source_lang, target_lang
    self._shard_size = shard_size

  def map_with_index(self, index: int, pair: Mapping[str, str]) -> dict:
    example = tokenize_pair(pair, self._vocab, self._source_lang, self._target_lang)
    example['pass_index'] = index // self._shard_size
    return example


def tokenized_pairs(source: Sequence[Mapping[str, str]], vocab: Vocab, *, source_lang: str,
                    target_lang: str, seed: int, shard_index: int = 0, shard_count: int = 1,
                    num_epochs: int | None = None) -> grain.MapDataset:
  """This process's shard, shuffled anew each epoch and tokenised: the packer's input."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index={shard_index} is not in [0, shard_count={shard_count}).')
  shard = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(shard) == 0:
    raise ValueError(f'Shard {shard_index} of {shard_count} over {len(source)} pairs is empty.')
  # Shuffle before repeat: grain folds the epoch into the shuffle seed, so each
  # epoch is its own permutation of the whole shard.
  return (shard.shuffle(seed=seed)
          .repeat(num_epochs)
          .map_with_index(_TokenizeWithPass(vocab, source_lang, target_lang, len(shard))))


def resolve_num_workers(num_workers: int) -> int:
  """`data.num_workers`: -1 = one worker process per core beyond two (kept for the training
  step and the main thread), at most 8; none on a 2-core machine."""
  if num_workers >= 0:
    return num_workers
  return max(0, min(8, (os.cpu_count() or 1) - 2))


class NothingFitsError(DataError):
  """A whole pass over the training shard had no pair within data.max_length."""


@dataclasses.dataclass
class LengthFilterStats:
  """Pairs dropped for length, per completed pass over this process's shard."""
  max_length: int
  dropped_per_pass: dict[int, int] = dataclasses.field(default_factory=dict)


class _DropLongPairsIterator(grain.DatasetIterator):
  """Drops pairs with a side longer than max_length and logs the count once per pass.

  It runs in the consuming thread after grain's reader, so passes arrive in order
  and the running count is part of the checkpointed state.
  """

  def __init__(self, parent: grain.DatasetIterator, stats: LengthFilterStats):
    super().__init__(parent)
    self._length_stats = stats  # `_stats` is taken by grain.DatasetIterator.
    self._pass_index, self._dropped, self._kept = 0, 0, 0

  def _finish_pass(self) -> None:
    if self._pass_index in self._length_stats.dropped_per_pass:
      return  # Already logged (next() called again after the end).
    self._length_stats.dropped_per_pass[self._pass_index] = self._dropped
    log = logging.warning if self._dropped else logging.info
    log('Training pass %d: dropped %d pairs longer than max_length=%d tokens.',
        self._pass_index, self._dropped, self._length_stats.max_length)
    if self._kept == 0 and self._dropped:  # every pair dropped: it would loop forever
      raise NothingFitsError(
          f'training pass {self._pass_index}: all {self._dropped} pairs of this shard are longer '
          f'than data.max_length={self._length_stats.max_length} tokens (a side, with its '
          'bos/eos), so there is nothing to train on: raise config key `data.max_length`')

  def __next__(self) -> dict[str, np.ndarray]:
    while True:
      try:
        example = next(self._parent)
      except StopIteration:
        self._finish_pass()
        raise
      pass_index = int(example.pop('pass_index'))
      if pass_index != self._pass_index:
        self._finish_pass()
        self._pass_index, self._dropped, self._kept = pass_index, 0, 0
      if max(len(example[key]) for key in SEQUENCE_KEYS) > self._length_stats.max_length:
        self._dropped += 1
        continue
      self._kept += 1
      return example

  def get_state(self) -> dict:
    return {'parent': self._parent.get_state(), 'pass_index': self._pass_index,
            'dropped': self._dropped, 'kept': self._kept}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._pass_index, self._dropped = state['pass_index'], state['dropped']
    self._kept = state.get('kept', 1)  # states saved before 'kept' existed: a pass that yielded


class _DropLongPairs(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, stats: LengthFilterStats):
    super().__init__(parent)
    self._length_stats = stats

  def __iter__(self) -> _DropLongPairsIterator:
    return _DropLongPairsIterator(self._parent.__iter__(), self._length_stats)


def _rename_packed(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's `<key>_segment_ids` / `<key>_positions` -> `<key>_segmentation` / `_position`.

  decoder_inputs has the same segments and positions as targets, so only one is kept.
  """
  batch = {key: rows[key] for key in SEQUENCE_KEYS}
  for key in ('inputs', 'targets'):
    batch[f'{key}_segmentation'] = rows[f'{key}_segment_ids']
    batch[f'{key}_position'] = rows[f'{key}_positions']
  return batch


def make_train_iterator(
    source: Sequence[Mapping[str, str]],
    vocab: Vocab,
    *,
    source_lang: str,
    target_lang: str,
    batch_tokens: int,
    max_length: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    num_read_threads: int = 0,
    num_workers: int = 0,
) -> grain.DatasetIterator:
  """An endless (or `num_epochs`-long) iterator of packed [B, max_length] batches.

  Args:
    source: random-access pairs `{language: text}`, e.g. a split of `registry.load_splits`.
    batch_tokens: token slots per batch and side; B = batch_tokens // max_length rows.
    seed: fixes the shuffle (a different permutation each epoch) and the row order.
    shard_index, shard_count: this process reads `source[shard_index::shard_count]`.
    num_epochs: None repeats forever; otherwise the last incomplete batch is dropped.
    num_read_threads: grain reader threads; 0 (read in the consuming thread) is
      fastest for an in-memory source, since tokenising holds the GIL.
    num_workers: > 0: that many worker processes read, pack and batch (prepared id sources,
      where there are cores to spare); a state restores only with the same number.

  Returns:
    A grain iterator of batches described in the module docstring. `get_state()`
    is a nested dict of ints (JSON-serialisable); `set_state(state)` on a fresh
    iterator built with the same arguments resumes exactly there.
    `iterator.length_filter` is a `LengthFilterStats` of pairs dropped per pass.
  """
  check_languages(source, source_lang, target_lang)
  rows_per_batch = batch_tokens // max_length
  if rows_per_batch < 1:
    raise ValueError(f'batch_tokens={batch_tokens} is smaller than max_length={max_length}.')
  read_options = grain.ReadOptions(num_threads=num_read_threads, prefetch_buffer_size=256)
  if hasattr(source, 'read'):  # prepared token ids: no tokenising, a packer of its own
    dataset = id_packing.packed_id_batches(
        source, rows=rows_per_batch, max_length=max_length, bos_id=vocab.bos_id,
        eos_id=vocab.eos_id, seed=seed, shard_index=shard_index, shard_count=shard_count,
        num_epochs=num_epochs, read_options=read_options)
    return _iterate(dataset, num_workers, LengthFilterStats(max_length=max_length))
  dataset = tokenized_pairs(
      source, vocab, source_lang=source_lang, target_lang=target_lang, seed=seed,
      shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs)
  dataset = dataset.to_iter_dataset(read_options)
  stats = LengthFilterStats(max_length=max_length)
  dataset = _DropLongPairs(dataset, stats)
  dataset = grain.experimental.FirstFitPackIterDataset(
      dataset, length_struct={key: max_length for key in SEQUENCE_KEYS},
      num_packing_bins=PACKING_BINS_PER_ROW * rows_per_batch, seed=seed, shuffle_bins=True)
  dataset = dataset.batch(rows_per_batch, drop_remainder=True).map(_rename_packed)
  return _iterate(dataset, num_workers, stats)


def _iterate(dataset: grain.IterDataset, num_workers: int,
             stats: LengthFilterStats) -> grain.DatasetIterator:
  if num_workers:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (library use, tests)
      flags.FLAGS(['transformer_jax'], known_only=True)
    # Each worker process reads, packs and batches its own slice of the shuffled stream;
    # batches come round-robin. The order depends on num_workers, not on timing.
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  iterator = iter(dataset)
  iterator.length_filter = stats
  return iterator
