"""`python train.py` / `transformer-jax-train`: train a Transformer.

    transformer-jax-train [--config multi30k | --config path/to/config.py] [--workdir runs/X]

Any config key can be overridden: --config.num_train_steps=1000 --config.model.pre_ln=True.
All logic lives in transformer_jax.training so notebooks can call it too.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from transformer_jax import configs

_CONFIG = config_flags.DEFINE_config_file(
    'config', configs.path_of(configs.DEFAULT),
    f'Training configuration: a packaged config by name ({", ".join(configs.names())}) or the '
    'path of a .py file with get_config().', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Run directory: checkpoints, vocabulary, metrics. Reused to resume. '
                               'Default: runs/<dataset>_<source>_<target>.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Start jax.distributed from the cluster '
                               'environment (TPU pod, SLURM, ...) before training.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index, 0-based.')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache_dir', os.path.join(os.path.expanduser('~'), '.cache', 'transformer_jax',
                                          'xla'),
    'Persistent XLA compilation cache: a resumed, restarted or repeated run of the same shapes '
    'loads its train step and decoders instead of compiling them. "" turns it off; '
    '$JAX_COMPILATION_CACHE_DIR, when set, wins.')


def default_workdir(config) -> str:
  data = config.data
  return os.path.join('runs', f'{data.dataset}_{data.source_lang}_{data.target_lang}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax
  from transformer_jax.cli.logs import quiet_libraries
  from transformer_jax.sharding import maybe_initialize_distributed
  from transformer_jax.training.loop import train_and_evaluate
  quiet_libraries()
  if _COMPILATION_CACHE.value and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', _COMPILATION_CACHE.value)
  if _MULTIHOST.value and not _COORDINATOR.value:
    jax.distributed.initialize()
  else:
    maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train_and_evaluate(_CONFIG.value, _WORKDIR.value or default_workdir(_CONFIG.value))


def resolve_config_argv(argv: list[str]) -> list[str]:
  """argv with a --config NAME (or --config=NAME) replaced by the packaged config's path."""
  out, i = list(argv), 0
  while i < len(out):
    arg = out[i]
    if arg in ('--config', '-config') and i + 1 < len(out):
      out[i + 1] = configs.resolve(out[i + 1])
      i += 1
    elif arg.startswith(('--config=', '-config=')):
      flag, value = arg.split('=', 1)
      out[i] = f'{flag}={configs.resolve(value)}'
    i += 1
  return out


def run() -> None:
  """The console entry point."""
  sys.argv = resolve_config_argv(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
