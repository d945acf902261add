"""Train a Transformer: python train.py [--config multi30k] [--workdir runs/multi30k_en_de].

The same as the installed `transformer-jax-train`; see transformer_jax/cli/train.py.
"""
from transformer_jax.cli.train import run

if __name__ == '__main__':
  run()
