"""The filters MT users expect of a training corpus, each counting what it drops.

Applied to token ids at preparation, in this order (a pair is counted by the first that drops
it): an empty side, a side longer than max_length (with its EOS / BOS), a length ratio above
max_length_ratio, an exact duplicate of an earlier pair (or of a validation pair).
"""
from __future__ import annotations

import dataclasses
import hashlib

REASONS = ('empty', 'too_long', 'length_ratio', 'duplicate')


def pair_digest(source: str, target: str) -> int:
  """A 64-bit identity of a text pair (exact duplicates have equal digests)."""
  digest = hashlib.blake2b(source.encode() + b'\x00' + target.encode(), digest_size=8).digest()
  return int.from_bytes(digest, 'little')


@dataclasses.dataclass
class PairFilter:
  """Decides which training pairs are kept; `dropped` counts each reason, `kept` the rest.

  max_length: tokens per side including EOS (source) / BOS (target): a pair fits a packed row.
  max_length_ratio: longer side / shorter side in tokens; 0 disables it.
  drop_duplicates: exact duplicates (same source and target text) are kept once.
  """
  max_length: int
  max_length_ratio: float = 0.0
  drop_duplicates: bool = True
  kept: int = 0
  dropped: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(REASONS, 0))
  _seen: set = dataclasses.field(default_factory=set, repr=False)

  def forbid(self, source: str, target: str) -> None:
    """Drops later copies of this pair (a validation pair must not be trained on)."""
    self._seen.add(pair_digest(source, target))

  def reason(self, source: str, target: str, source_ids, target_ids) -> str | None:
    """Why the pair is dropped (a REASONS entry), or None to keep it; counts either way."""
    reason = self._reason(source, target, len(source_ids), len(target_ids))
    if reason is None:
      self.kept += 1
    else:
      self.dropped[reason] += 1
    return reason

  def _reason(self, source, target, source_len, target_len) -> str | None:
    if not source.strip() or not target.strip() or not source_len or not target_len:
      return 'empty'
    if max(source_len, target_len) + 1 > self.max_length:
      return 'too_long'
    if self.max_length_ratio and (max(source_len, target_len) >
                                  self.max_length_ratio * min(source_len, target_len)):
      return 'length_ratio'
    if self.drop_duplicates:
      digest = pair_digest(source, target)
      if digest in self._seen:
        return 'duplicate'
      self._seen.add(digest)
    return None

  def summary(self) -> dict:
    return {'kept': self.kept, 'dropped': dict(self.dropped)}
