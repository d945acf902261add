"""Run a Python script with freed host memory kept in the process (transformer_jax/host_memory.py):

    python benchmarks/with_reused_host_memory.py SCRIPT [ARGS...]

For measuring another program (the Flax examples/wmt reference, in its own venv) with the
allocator setting this project's train CLI uses: host_memory.py is loaded by path, so nothing
else of transformer_jax (nor its dependencies) need be installed in that venv.
"""
import os
import runpy
import sys

HOST_MEMORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'transformer_jax',
                           'host_memory.py')


def main():
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  reused = runpy.run_path(HOST_MEMORY)['reuse_freed_host_memory']()
  print(f'with_reused_host_memory: applied={reused}', file=sys.stderr)
  script = sys.argv[1]
  sys.argv = sys.argv[1:]
  sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
  runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
  main()
