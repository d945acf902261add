"""The fixture corpora of the tests: a word-aligned toy lexicon, or the first real pairs.

Line i of *.de translates line i of *.en word for word, so a model that learns the lexicon
translates it perfectly and a pipeline that shuffles one side against the other is caught.
`write_train_val` copies the first real pairs instead when $MULTI30K_DIR holds the Multi30k
files. Light to import (numpy only): subprocess scripts of the tests import it too.
"""
import functools
import os
from pathlib import Path

import numpy as np

EN = 'a dog cat man woman child runs jumps sits on the in red blue green park street ball'
DE = ('ein Hund Katze Mann Frau Kind läuft springt sitzt auf dem im rot blau grün Park Straße '
      'Ball')
MANUAL_DIR_ENV = 'MULTI30K_DIR'  # = transformer_jax.data.datasets.multi30k.MANUAL_DIR_ENV
REAL_FILES = ('train.en', 'train.de', 'val.en', 'val.de')


def toy_pairs(count, seed, *, min_words, max_words, numbered=False):
  """`count` (en, de) pairs of min_words..max_words-1 random lexicon words.

  Each sentence ends in ' .', or in ' {i}.' when `numbered`: numbering makes every pair distinct,
  which tests that match pairs across files rely on.
  """
  rng = np.random.default_rng(seed)
  en_words, de_words = EN.split(), DE.split()
  pairs = []
  for i in range(count):
    idx = rng.integers(0, len(en_words), size=rng.integers(min_words, max_words))
    end = f' {i}.' if numbered else ' .'
    pairs.append((' '.join(en_words[j] for j in idx) + end,
                  ' '.join(de_words[j] for j in idx) + end))
  return pairs


def write_split(directory, stem, pairs):
  """Writes `pairs` as the Multi30k text files `directory/{stem}.en` and `.de`."""
  for k, lang in enumerate(('en', 'de')):
    Path(directory, f'{stem}.{lang}').write_text(
        ''.join(p[k] + '\n' for p in pairs), encoding='utf-8')


def real_multi30k_dir():
  """$MULTI30K_DIR as a Path when it holds the train and val files, else None."""
  real = os.environ.get(MANUAL_DIR_ENV)
  if real and all(Path(real, name).is_file() for name in REAL_FILES):
    return Path(real)
  return None


def real_pairs(stem, count, *, max_words=None):
  """The first `count` pairs of the real split `stem`; with `max_words`, the first `count`
  with at most that many words on both sides."""
  directory = real_multi30k_dir()
  en = (directory / f'{stem}.en').read_text(encoding='utf-8').splitlines()
  de = (directory / f'{stem}.de').read_text(encoding='utf-8').splitlines()
  pairs = list(zip(en, de))
  if max_words is not None:
    pairs = [(e, d) for e, d in pairs
             if len(e.split()) <= max_words and len(d.split()) <= max_words]
  return pairs[:count]


def write_train_val(directory, num_train, num_val, *, real_max_words=None):
  """A manual directory of `num_train` train and `num_val` val pairs; returns its Path.

  The first real pairs (`real_pairs`, at most `real_max_words` words a side if given) when
  $MULTI30K_DIR is set, else toy pairs of 3-8 words (train seed 0, val seed 1).
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  if real_multi30k_dir():
    splits = {stem: real_pairs(stem, n, max_words=real_max_words)
              for stem, n in (('train', num_train), ('val', num_val))}
  else:
    splits = {'train': toy_pairs(num_train, 0, min_words=3, max_words=9),
              'val': toy_pairs(num_val, 1, min_words=3, max_words=9)}
  for stem, pairs in splits.items():
    write_split(directory, stem, pairs)
  return directory


def write_small_corpus(directory, *, test2016=False):
  """The data tests' manual directory: 40 train and 12 validation numbered toy pairs of 2-6
  words (and 5 test2016 ones); returns {file stem: pairs}. Never the real data."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  pairs = functools.partial(toy_pairs, min_words=2, max_words=7, numbered=True)
  splits = {'train': pairs(40, 0), 'val': pairs(12, 1)}
  if test2016:
    splits['test_2016_flickr'] = pairs(5, 2)
  for stem, split in splits.items():
    write_split(directory, stem, split)
  return splits
