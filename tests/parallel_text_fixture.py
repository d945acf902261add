"""Parallel-text fixture files for the parallel_text tests: a toy fr→cs corpus (numbered, so
every pair is distinct), written plain, gzip, xz or as TSV, and configs that point at them."""
import bz2
import gzip
import lzma
from pathlib import Path

from toy_corpus import toy_pairs
from transformer_jax.configs import tiny

SRC, TGT = 'fr', 'cs'
OPENERS = {'': open, '.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}


def pairs(count=400, seed=0):
  """Distinct (fr, cs) pairs: the toy lexicon, each line numbered."""
  return toy_pairs(count, seed, min_words=3, max_words=9, numbered=True)


def write_lines(path, lines, compression=''):
  path = Path(f'{path}{compression}')
  with OPENERS[compression](path, 'wt', encoding='utf-8') as f:
    f.write(''.join(line + '\n' for line in lines))
  return path


def write_pair(directory, stem, pair_list, compression=('', '')):
  """`<stem>.fr[comp]` and `<stem>.cs[comp]`; returns (source_path, target_path)."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  return tuple(str(write_lines(directory / f'{stem}.{lang}', [p[k] for p in pair_list], comp))
               for k, (lang, comp) in enumerate(zip((SRC, TGT), compression)))


def write_tsv(path, pair_list, *, header=(SRC, TGT), compression=''):
  """A TSV with an optional header row of language codes, columns in the header's order."""
  columns = [0, 1] if header is None or tuple(header) == (SRC, TGT) else [1, 0]
  lines = ([] if header is None else ['\t'.join(header)]) + [
      f'{p[columns[0]]}\t{p[columns[1]]}' for p in pair_list]
  return str(write_lines(path, lines, compression))


def config(data_dir, train_files, *, validation_files=(), validation_size=0, **data):
  """The tiny config on dataset parallel_text fr→cs, preparing into `data_dir`."""
  c = tiny.get_config()
  c.data.dataset = 'parallel_text'
  c.data.source_lang, c.data.target_lang = SRC, TGT
  c.data.train_files, c.data.validation_files = train_files, validation_files
  c.data.validation_size = validation_size
  c.data.vocab_size = 100
  c.data.max_length = 64  # the toy pairs fit (a 100-piece vocabulary splits words into letters)
  c.data.data_dir = str(data_dir)
  for key, value in data.items():
    c.data[key] = value
  return c
