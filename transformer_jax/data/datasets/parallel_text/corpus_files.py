"""Reading parallel text as it comes: file pairs or TSV, plain, gzip or xz, streamed.

A corpus is a list of `CorpusFile`s; each yields (source, target) text pairs with the file and
1-based line they came from, so that every error can name them. Nothing here holds a file
whole: WMT14's 4.5M pairs stream through in constant memory.
"""
from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from transformer_jax.errors import DataError
from transformer_jax.text_files import iter_lines

# File name suffix -> opener. Anything else ending like a compression suffix is refused.
_OPENERS = {'.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}
_UNSUPPORTED_COMPRESSIONS = ('.zst', '.zstd', '.lz4', '.zip', '.7z', '.tgz', '.tar', '.br', '.lzma')
_LANGUAGE_SUFFIX = re.compile(r'^[a-z]{2,3}$')


class ParallelTextError(DataError):
  """Parallel text that cannot be read as sentence pairs; the message names file and line."""


class ParallelTextFileNotFoundError(ParallelTextError, FileNotFoundError):
  """A corpus file that does not exist where the config points."""


def _compression(path: Path) -> str:
  suffix = path.suffix.lower()
  if suffix in _UNSUPPORTED_COMPRESSIONS:
    raise ParallelTextError(
        f'{path}: compression {suffix!r} is not supported; decompress it or recompress it as '
        f'gzip (.gz) or xz (.xz)')
  return suffix if suffix in _OPENERS else ''


def open_text(path: str | os.PathLike):
  """A binary file object over the decompressed bytes of `path` (.gz, .xz, .bz2 or plain)."""
  path = Path(path)
  opener = _OPENERS.get(_compression(path), open)
  return opener(path, 'rb')


def language_of(path: str | os.PathLike) -> str | None:
  """The language code a file's name ends in (`train.fr.gz` -> 'fr'), or None if it has none."""
  path = Path(path)
  name = path.name
  if _compression(path):
    name = name[:-len(path.suffix)]
  last = name.rsplit('.', 1)[-1].lower() if '.' in name else ''
  return last if _LANGUAGE_SUFFIX.match(last) else None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
  """(1-based line number, text) of a UTF-8 file, decoded as every reader here decodes
  (`text_files.iter_lines`), streamed."""
  try:
    with open_text(path) as f:
      yield from enumerate(iter_lines(f, str(path)), start=1)
  except ValueError as e:  # bad UTF-8, named by file and line
    raise ParallelTextError(str(e)) from None
  except (OSError, EOFError, lzma.LZMAError) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise ParallelTextError(f'{path}: cannot be read as {_compression(path) or "plain text"} '
                            f'({e}); is the file complete?') from None


@dataclasses.dataclass(frozen=True)
class CorpusFile:
  """One source of pairs: a (source, target) file pair, or one TSV file of both columns.

  A TSV's first line may be a header naming the two language codes (`fr<TAB>cs`), which then
  says which column is which; without one the columns are (source, target).
  """
  source_path: Path
  target_path: Path | None = None  # None: source_path is a TSV

  @property
  def paths(self) -> tuple[Path, ...]:
    return (self.source_path,) if self.target_path is None else (self.source_path,
                                                                 self.target_path)

  def __str__(self) -> str:
    return ' / '.join(map(str, self.paths))

  def check(self, source_lang: str, target_lang: str) -> None:
    """Every file exists and no file name contradicts the language it is read as.

    Raises:
      ParallelTextFileNotFoundError: naming the missing file and the directory looked in.
      ParallelTextError: a file named for another language (`train.de` read as 'en').
    """
    for path in self.paths:
      if not path.is_file():
        where = path.parent if path.parent.is_dir() else f'{path.parent} (which does not exist)'
        raise ParallelTextFileNotFoundError(
            f'corpus file {path.name} not found: looked for it in {where}')
      _compression(path)
    if self.target_path is None:
      return
    for path, lang, other in ((self.source_path, source_lang, target_lang),
                              (self.target_path, target_lang, source_lang)):
      named = language_of(path)
      if named is not None and named != lang:
        hint = (' (source and target swapped?)' if named == other else '')
        raise ParallelTextError(
            f'{path}: its name says language {named!r}, but it is read as the '
            f'{"source" if lang == source_lang else "target"} side, {lang!r}{hint}; fix '
            '`data.source_lang` / `data.target_lang` or the order of the file pair')

  def pairs(self, source_lang: str, target_lang: str) -> Iterator[tuple[str, str]]:
    """(source, target) text of every line, in file order; raises on unequal line counts."""
    if self.target_path is None:
      yield from self._tsv_pairs(source_lang, target_lang)
      return
    source_lines, target_lines = _lines(self.source_path), _lines(self.target_path)
    for (number, source), target_line in zip(source_lines, target_lines):
      yield source, target_line[1]
    # zip stopped at the shorter file: the other must be exhausted too.
    rest_source = sum(1 for _ in source_lines)
    rest_target = sum(1 for _ in target_lines)
    if rest_source or rest_target:
      counts = self.line_counts()
      raise ParallelTextError(
          f'line counts differ: {self.source_path} has {counts[0]} lines but {self.target_path} '
          f'has {counts[1]}; line i of one must translate line i of the other')

  def line_counts(self) -> tuple[int, ...]:
    counts = []
    for path in self.paths:
      with open_text(path) as f:
        counts.append(sum(1 for _ in f))
    return tuple(counts)

  def _tsv_pairs(self, source_lang: str, target_lang: str) -> Iterator[tuple[str, str]]:
    columns = (0, 1)
    for number, line in _lines(self.source_path):
      fields = line.split('\t')
      if number == 1 and len(fields) == 2:
        names = [f.strip() for f in fields]
        if set(names) == {source_lang, target_lang}:  # a header naming the columns
          columns = names.index(source_lang), names.index(target_lang)
          continue
        if all(_LANGUAGE_SUFFIX.match(name) for name in names):
          raise ParallelTextError(
              f'{self.source_path}: line 1 is a header naming languages {fields}, but the '
              f'config asks for {source_lang!r} → {target_lang!r}; fix `data.source_lang` / '
              '`data.target_lang` or the header')
      if len(fields) != 2:
        raise ParallelTextError(
            f'{self.source_path}: line {number} has {len(fields)} tab-separated fields, expected '
            '2 (source<TAB>target); a tab inside a sentence must be replaced')
      yield fields[columns[0]], fields[columns[1]]


def corpus_files(value, key: str) -> list[CorpusFile]:
  """The CorpusFiles of a config value: a `.tsv` path, or a list of (source, target) pairs.

  `key` is the config key it came from, named in the errors.
  """
  if isinstance(value, (str, os.PathLike)):
    if not str(value):
      return []
    path = Path(value).expanduser()
    name = path.name.lower()
    for suffix in _OPENERS:
      name = name.removesuffix(suffix)
    if not name.endswith('.tsv'):
      raise ParallelTextError(
          f'config key `{key}` = {str(value)!r}: a single path must be a .tsv file (optionally '
          '.gz/.xz); give file pairs as a list of (source_path, target_path)')
    return [CorpusFile(path)]
  if not isinstance(value, Sequence):
    raise ParallelTextError(f'config key `{key}` = {value!r}: expected a .tsv path or a list of '
                            '(source_path, target_path) pairs')
  files = []
  for index, item in enumerate(value):
    if isinstance(item, (str, os.PathLike)):
      files.extend(corpus_files(item, f'{key}[{index}]'))
      continue
    if not isinstance(item, Sequence) or len(item) != 2 or not all(
        isinstance(p, (str, os.PathLike)) and str(p) for p in item):
      raise ParallelTextError(f'config key `{key}[{index}]` = {item!r}: expected a pair '
                              '(source_path, target_path) or a .tsv path')
    files.append(CorpusFile(Path(item[0]).expanduser(), Path(item[1]).expanduser()))
  return files
