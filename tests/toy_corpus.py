"""A word-aligned toy corpus for the data and training tests.

Line i of *.de translates line i of *.en word for word, so a model that learns the lexicon
translates it perfectly and a pipeline that shuffles one side against the other is caught.
"""
from pathlib import Path

import numpy as np

EN = 'a dog cat man woman child runs jumps sits on the in red blue green park street ball'
DE = ('ein Hund Katze Mann Frau Kind läuft springt sitzt auf dem im rot blau grün Park Straße '
      'Ball')


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
