"""Reading and writing the text files the command-line tools take and make."""
from __future__ import annotations

import os
import sys


def read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 file without their newlines; '-' reads stdin.

  Raises FileNotFoundError or ValueError with a message that names the file.
  """
  if path == '-':
    return [line.rstrip('\n') for line in sys.stdin]
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: file not found')
  try:
    with open(path, encoding='utf-8') as f:
      return [line.rstrip('\n') for line in f]
  except UnicodeDecodeError as e:
    raise ValueError(f'{path}: not valid UTF-8 ({e})') from None


def write_text_atomically(path: str, text: str) -> None:
  """Writes to a temporary file beside `path`, then renames it over `path`.

  An interrupted writer leaves the old file (or none), never a half-written one.
  """
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
