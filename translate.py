"""Translate with a trained work directory: python translate.py --workdir runs/X --input F.

The same as the installed `transformer-jax-translate`; see transformer_jax/cli/translate.py.
"""
from transformer_jax.cli.translate import run

if __name__ == '__main__':
  run()
