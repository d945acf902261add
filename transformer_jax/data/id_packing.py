"""Packed training batches straight from prepared token ids: read a block at a time, first-fit
decreasing.

For a source with `read(indices)` (parallel_text's TokenIdPairs) this replaces tokenising and
grain's general packer in `pipeline.make_train_iterator`, which cost ~120 µs a pair in Python
(the packer's tree maps over every bin); here a pair costs one slot of a batched ArrayRecord
read, a vectorised fit test over the batch's rows and seven slice copies.

Per batch: the pairs carried over from the last batch are placed first (so none waits more than
a batch or two), then new pairs in shuffled order are drawn until their tokens would fill the
batch's slots FILL times over; those are placed longest first, each in the first row with room
on both sides (first-fit decreasing: on WMT-like lengths 6.4 % padding with plain first fit,
see docs/PERFORMANCE.md). What fits nowhere is carried to the next batch. The state is plain
ints: the index stream's state before the current block, the position in it, and the carried
pairs' indices — so a restored iterator continues exactly.
"""
from __future__ import annotations

from absl import logging
import grain
import numpy as np

# Pairs read per ArrayRecord call. A single record costs ~1 ms (its chunk is read); random reads
# over WMT14's 18 files cost 40 / 15 / 10 µs a record in blocks of 1,024 / 4,096 / 16,384
# (each file's reader pays a fixed cost per call).
READ_BLOCK = 16384
FILL = 1.05  # draw new pairs until their tokens (and the carried ones') fill the slots this many times
BATCH_KEYS = ('inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs', 'targets',
              'targets_segmentation', 'targets_position')


class _Batch:
  """One [rows, length] batch being filled."""

  def __init__(self, rows: int, length: int):
    self.arrays = {key: np.zeros((rows, length), np.int32) for key in BATCH_KEYS}
    self.source_used = np.zeros(rows, np.int64)
    self.target_used = np.zeros(rows, np.int64)
    self.segments = np.zeros(rows, np.int64)
    self.length, self.pairs = length, 0
    self.positions = np.arange(length, dtype=np.int32)

  def add(self, source_ids: np.ndarray, target_ids: np.ndarray, bos: int, eos: int) -> bool:
    """Places the pair (+EOS / BOS) in the first row with room; False if none has."""
    source_len, target_len = len(source_ids) + 1, len(target_ids) + 1
    room = ((self.source_used <= self.length - source_len)
            & (self.target_used <= self.length - target_len))
    row = int(room.argmax())  # the first row with room, if any
    if not room[row]:
      return False
    s, t = int(self.source_used[row]), int(self.target_used[row])
    segment = int(self.segments[row]) + 1
    a = self.arrays
    a['inputs'][row, s:s + source_len - 1] = source_ids
    a['inputs'][row, s + source_len - 1] = eos
    a['inputs_segmentation'][row, s:s + source_len] = segment
    a['inputs_position'][row, s:s + source_len] = self.positions[:source_len]
    a['decoder_inputs'][row, t] = bos
    a['decoder_inputs'][row, t + 1:t + target_len] = target_ids
    a['targets'][row, t:t + target_len - 1] = target_ids
    a['targets'][row, t + target_len - 1] = eos
    a['targets_segmentation'][row, t:t + target_len] = segment
    a['targets_position'][row, t:t + target_len] = self.positions[:target_len]
    self.source_used[row] += source_len
    self.target_used[row] += target_len
    self.segments[row] = segment
    self.pairs += 1
    return True


def _tokens(source_ids, target_ids) -> int:
  """Slots a pair takes on its longer side (with EOS / BOS)."""
  return max(len(source_ids), len(target_ids)) + 1


def _longest_first(item) -> tuple[int, int]:
  index, pair = item
  return -_tokens(pair['source_ids'], pair['target_ids']), index  # ties: stream order


class PackIdsIterator(grain.DatasetIterator):
  """Index blocks (arrays of source indices) -> packed batches of `source.read` pairs."""

  def __init__(self, parent: grain.DatasetIterator, source, *, rows: int, max_length: int,
               bos_id: int, eos_id: int):
    super().__init__(parent)
    self._source, self._rows, self._max_length = source, rows, max_length
    self._bos, self._eos = bos_id, eos_id
    self._state_before_block = parent.get_state()
    self._block: list = []  # (index, source_ids, target_ids) of the current block
    self._position = 0
    self._carry: list[tuple[int, dict]] = []  # (index, pair) that fit no row of the last batch
    self._dropped = 0
    self._ended = False

  def _next_pair(self):
    while self._position >= len(self._block):
      self._state_before_block = self._parent.get_state()
      self._load(next(self._parent))  # StopIteration: the stream ended
    self._position += 1
    return self._block[self._position - 1]

  def _load(self, indices) -> None:
    indices = [int(i) for i in np.asarray(indices).ravel()]
    pairs = self._source.read(indices)
    self._block = [(i, p['source_ids'], p['target_ids']) for i, p in zip(indices, pairs)]
    self._position = 0

  def _fits_at_all(self, source_ids, target_ids) -> bool:
    if max(len(source_ids), len(target_ids)) + 1 <= self._max_length:
      return True
    self._dropped += 1
    if self._dropped == 1:
      logging.warning('Dropping pairs longer than max_length=%d tokens (the data were prepared '
                      'for a longer max_length); counted in the iterator state',
                      self._max_length)
    return False

  def __next__(self) -> dict[str, np.ndarray]:
    if self._ended and not self._carry:
      raise StopIteration
    batch, carry = _Batch(self._rows, self._max_length), []
    wanted = FILL * self._rows * self._max_length  # token slots a side
    drawn = 0
    for index, pair in sorted(self._carry, key=_longest_first):  # held in memory
      drawn += _tokens(pair['source_ids'], pair['target_ids'])
      if not batch.add(pair['source_ids'], pair['target_ids'], self._bos, self._eos):
        carry.append((index, pair))
    new = []
    while drawn < wanted and not self._ended:
      try:
        index, source_ids, target_ids = self._next_pair()
      except StopIteration:
        self._ended = True
        break
      if self._fits_at_all(source_ids, target_ids):
        new.append((index, {'source_ids': source_ids, 'target_ids': target_ids}))
        drawn += _tokens(source_ids, target_ids)
    for index, pair in sorted(new, key=_longest_first):
      if not batch.add(pair['source_ids'], pair['target_ids'], self._bos, self._eos):
        carry.append((index, pair))
    self._carry = carry
    if batch.pairs == 0:
      raise StopIteration
    return batch.arrays

  def get_state(self) -> dict:
    return {'parent': self._state_before_block, 'position': self._position,
            'carry': [index for index, _ in self._carry], 'dropped': self._dropped,
            'ended': self._ended}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._state_before_block = state['parent']
    self._block, self._position = [], 0
    if state['position']:
      self._load(next(self._parent))
      self._position = state['position']
    carry = [int(i) for i in state['carry']]  # re-read: the state holds indices only
    self._carry = list(zip(carry, self._source.read(carry))) if carry else []
    self._dropped = state['dropped']
    self._ended = state['ended']


class PackIds(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, source, **kwargs):
    super().__init__(parent)
    self._source, self._kwargs = source, kwargs

  def __iter__(self) -> PackIdsIterator:
    return PackIdsIterator(self._parent.__iter__(), self._source, **self._kwargs)


class _ShuffledBlock(grain.transforms.MapWithIndex):
  """Block k of the repeated shard -> its source indices. Each epoch is its own permutation
  of the shard (seeded by (seed, epoch), computed once per epoch in numpy: grain's per-element
  index shuffle cost ~40 µs a pair here)."""

  def __init__(self, shard_size: int, shard_index: int, shard_count: int, seed: int,
               block: int):
    self._shard_size, self._shard_index, self._shard_count = shard_size, shard_index, shard_count
    self._seed, self._block = seed, block
    self._blocks_per_epoch = -(-shard_size // block)
    self._epoch, self._permutation = None, None

  def map_with_index(self, index: int, _) -> np.ndarray:
    epoch, within = divmod(index, self._blocks_per_epoch)
    if epoch != self._epoch:
      rng = np.random.default_rng((self._seed, epoch))
      self._epoch, self._permutation = epoch, rng.permutation(self._shard_size)
    positions = self._permutation[within * self._block:(within + 1) * self._block]
    return self._shard_index + positions * self._shard_count  # shard position -> source index


def packed_id_batches(source, *, rows: int, max_length: int, bos_id: int, eos_id: int,
                      seed: int, shard_index: int, shard_count: int, num_epochs: int | None,
                      read_options, read_block: int = READ_BLOCK) -> grain.IterDataset:
  """Batches of this process's shard (`source[shard_index::shard_count]`), shuffled anew each
  epoch; with num_epochs, the stream ends after that many passes (its last batches partial)."""
  shard_size = len(range(shard_index, len(source), shard_count))
  if shard_size == 0:
    raise ValueError(f'Shard {shard_index} of {shard_count} over {len(source)} pairs is empty.')
  blocks_per_epoch = -(-shard_size // read_block)
  blocks = (grain.MapDataset.range(blocks_per_epoch).repeat(num_epochs)
            .map_with_index(_ShuffledBlock(shard_size, shard_index, shard_count, seed,
                                           read_block)))
  return PackIds(blocks.to_iter_dataset(read_options), source, rows=rows,
                 max_length=max_length, bos_id=bos_id, eos_id=eos_id)
