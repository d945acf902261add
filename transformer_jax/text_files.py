"""Reading and writing the text files the command-line tools take and make."""
from __future__ import annotations

import os
import sys


def split_lines(data: bytes, name: str) -> list[str]:
  """The lines of UTF-8 `data`, split on '\n' only — the one way every reader here splits.

  A byte-order mark at the start and one '\r' at the end of each line (Windows files) are
  removed; a bare '\r', U+2028 or a form feed inside a line stays in it, so line i of a
  source file still aligns with line i of its translation (`str.splitlines` would split
  there). A final newline does not start another line.

  Raises ValueError naming `name` and the 1-based line of invalid UTF-8.
  """
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  raw_lines = data.split(b'\n')
  if raw_lines and raw_lines[-1] == b'':
    raw_lines.pop()
  lines = []
  for number, raw in enumerate(raw_lines, start=1):
    try:
      line = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      raise ValueError(f'{name}: line {number} is not valid UTF-8 ({e.reason} at byte '
                       f'{e.start}); re-encode it as UTF-8') from None
    lines.append(line[:-1] if line.endswith('\r') else line)
  return lines


def read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 file (`split_lines`); '-' reads stdin (as bytes, checked alike).

  Raises FileNotFoundError or ValueError with a message that names the file.
  """
  if path == '-':
    return split_lines(sys.stdin.buffer.read(), '<stdin>')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: file not found')
  with open(path, 'rb') as f:
    return split_lines(f.read(), path)


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
