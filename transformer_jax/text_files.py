"""Reading and writing the text files the command-line tools take and make."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
import os
import sys


def iter_lines(raw_lines: Iterable[bytes], name: str) -> Iterator[str]:
  """The text of each raw line (its '\n', if any, included or not): the one way every reader
  here decodes lines, whole files (`split_lines`) and streamed corpora alike.

  A byte-order mark at the start of the first line and one '\r' at the end of each line
  (Windows files) are removed; a bare '\r', U+2028 or a form feed inside a line stays in it,
  so line i of a source file still aligns with line i of its translation (`str.splitlines`
  would split there).

  Raises ValueError naming `name` and the 1-based line of invalid UTF-8.
  """
  for number, raw in enumerate(raw_lines, start=1):
    if number == 1 and raw.startswith(b'\xef\xbb\xbf'):
      raw = raw[3:]
    try:
      line = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      raise ValueError(f'{name}: line {number} is not valid UTF-8 ({e.reason} at byte '
                       f'{e.start}); re-encode it as UTF-8') from None
    line = line[:-1] if line.endswith('\n') else line
    yield line[:-1] if line.endswith('\r') else line


def split_lines(data: bytes, name: str) -> list[str]:
  """The lines of UTF-8 `data`, split on '\n' only (`iter_lines`); a final newline does not
  start another line.

  Raises ValueError naming `name` and the 1-based line of invalid UTF-8.
  """
  raw_lines = data.split(b'\n')
  if raw_lines and raw_lines[-1] == b'':
    raw_lines.pop()
  return list(iter_lines(raw_lines, name))


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
