"""Serve a trained work directory over HTTP: python serve.py --workdir runs/X [--port 8000].

The same as the installed `transformer-jax-serve`; see transformer_jax/cli/serve.py.
"""
from transformer_jax.cli.serve import run

if __name__ == '__main__':
  run()
