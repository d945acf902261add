#!/usr/bin/env python
"""Export a run to Hugging Face Marian (and optionally CTranslate2).

    python scripts/export_marian.py --workdir runs/multi30k_en_de --out exports/m30k-marian \
        [--checkpoint best] [--ctranslate2 exports/m30k-ct2 [--quantization int8]]

The Marian directory loads with transformers' MarianMTModel / MarianTokenizer
.from_pretrained; --ctranslate2 also converts it (docs/INTEROP.md). Needs the `interop`
extra: pip install -e '.[interop]'.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformer_jax.errors import UserError  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a run directory written by train.py')
  parser.add_argument('--out', required=True, help='the Marian directory to write')
  parser.add_argument('--checkpoint', default='best',
                      help="'best', 'latest', a step, or 'average:N' (as translate.py)")
  parser.add_argument('--no_ema', action='store_true', help='export the raw, not the EMA, params')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  parser.add_argument('--ctranslate2', help='also convert to a CTranslate2 model here')
  parser.add_argument('--quantization', default=None,
                      help='CTranslate2 weight type, e.g. int8 (default: float32)')
  args = parser.parse_args(argv)
  try:
    from transformer_jax.decoding.translator import Translator
    from transformer_jax.interop.marian_export import export_translator
    translator = Translator(args.workdir, args.checkpoint, ema=not args.no_ema)
    out = export_translator(translator, args.out, overwrite=args.overwrite)
    print(f'wrote {out} ({translator.checkpoint_description})')
    if args.ctranslate2:
      from transformer_jax.interop import ctranslate2
      converted = ctranslate2.convert(out, args.ctranslate2, quantization=args.quantization,
                                      force=args.overwrite)
      print(f'wrote {converted}')
  except (UserError, FileNotFoundError, ValueError) as e:
    print(f'export_marian.py: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
