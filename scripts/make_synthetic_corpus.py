"""A synthetic parallel corpus of any size from Multi30k: for the input-pipeline benchmark.

    python scripts/make_synthetic_corpus.py --multi30k_dir ../shared/data/multi30k \
        --out /tmp/synthetic_wmt --pairs 4500000

Each synthetic pair joins 2 (3/4 of pairs) or 3 random Multi30k pairs (the source sides in
order, their translations in the same order), so pairs stay translations of each other, their
lengths spread like WMT14's (~30 subword tokens a side on average, a tail to ~100), and
exact duplicates are rare (single Multi30k pairs would repeat: 1.5M draws of 29k pairs). Written as
train.en / train.de (plain UTF-8, one sentence per line) plus val.en / val.de (3,000 pairs);
seeded, so the same arguments write the same files. Nothing is downloaded.
"""
import argparse
import os
import sys

import numpy as np


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--multi30k_dir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--pairs', type=int, default=4_500_000)
  parser.add_argument('--validation_pairs', type=int, default=3000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  with open(os.path.join(args.multi30k_dir, 'train.en'), encoding='utf-8') as f:
    english = f.read().split('\n')[:-1]
  with open(os.path.join(args.multi30k_dir, 'train.de'), encoding='utf-8') as f:
    german = f.read().split('\n')[:-1]
  if len(english) != len(german):
    sys.exit(f'{args.multi30k_dir}: train.en has {len(english)} lines, train.de {len(german)}')
  os.makedirs(args.out, exist_ok=True)
  rng = np.random.default_rng(args.seed)
  for stem, count in (('train', args.pairs), ('val', args.validation_pairs)):
    with open(os.path.join(args.out, f'{stem}.en'), 'w', encoding='utf-8') as en_file, \
         open(os.path.join(args.out, f'{stem}.de'), 'w', encoding='utf-8') as de_file:
      for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        parts = 2 + (rng.random(n) < 0.25)
        picks = rng.integers(0, len(english), int(parts.sum()))
        offsets = np.concatenate([[0], np.cumsum(parts)])
        en_lines, de_lines = [], []
        for i in range(n):
          chosen = picks[offsets[i]:offsets[i + 1]]
          en_lines.append(' '.join(english[j] for j in chosen))
          de_lines.append(' '.join(german[j] for j in chosen))
        en_file.write('\n'.join(en_lines) + '\n')
        de_file.write('\n'.join(de_lines) + '\n')
    print(f'wrote {count} pairs: {args.out}/{stem}.en, {stem}.de', flush=True)


if __name__ == '__main__':
  main()
