"""What identifies a raw data file: its size and content digest (no path, no mtime), so that a
copy elsewhere is the same data and an edit — even one that keeps the size — is other data.

Light: the dataset registry entries import it to key their prepared directories.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

# Files up to this size are hashed whole; larger ones by their size and three 1 MiB blocks.
FULL_HASH_BYTES = 64 << 20
_BLOCK = 1 << 20


def file_digest(path: Path) -> str:
  """'<size>:<sha256>' of the content (no mtime: a copy elsewhere has the same digest).

  A file over FULL_HASH_BYTES is hashed by its first, middle and last MiB: a same-size edit
  between those blocks of a huge corpus goes unnoticed.
  """
  size = path.stat().st_size
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    if size <= FULL_HASH_BYTES:
      while chunk := f.read(_BLOCK):
        digest.update(chunk)
    else:
      for offset in (0, size // 2, size - _BLOCK):
        f.seek(offset)
        digest.update(f.read(_BLOCK))
  return f'{size}:{digest.hexdigest()}'
