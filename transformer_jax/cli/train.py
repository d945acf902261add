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
from transformer_jax.cli.errors import config_override_errors, report_user_errors
from transformer_jax.host_memory import reuse_freed_host_memory

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined when the tool runs, not on import: the config flag reads sys.argv when defined."""
  config_flags.DEFINE_config_file(
      'config', configs.path_of(configs.DEFAULT),
      f'Training configuration: a packaged config by name ({", ".join(configs.names())}) or '
      'the path of a .py file with get_config().', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, vocabulary, metrics. Reused '
                      'to resume. Default: runs/<dataset>_<source>_<target>.')
  flags.DEFINE_bool('multihost', False, 'Start jax.distributed from the cluster environment '
                    '(TPU pod, SLURM, ...) before training.')
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for multi-process runs.')
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process\'s index, 0-based.')
  flags.DEFINE_string(
      'compilation_cache_dir',
      os.path.join(os.path.expanduser('~'), '.cache', 'transformer_jax', 'xla'),
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
  config = FLAGS.config
  if FLAGS.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', FLAGS.compilation_cache_dir)
  if FLAGS.multihost and not FLAGS.coordinator_address:
    jax.distributed.initialize()
  else:
    maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id)
  train_and_evaluate(config, FLAGS.workdir or default_workdir(config))


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
  # Before anything starts jax's backend: freed step buffers stay mapped (host_memory.py).
  reuse_freed_host_memory()
  sys.argv = resolve_config_argv(sys.argv)
  # A --config.* override of a key the config lacks fails while the flag is defined or
  # parsed (ml_collections raises KeyError/AttributeError): one line naming it, exit 2.
  with config_override_errors():
    _define_flags()
  app.run(report_user_errors(main), flags_parser=_parse_flags)


def _parse_flags(argv):
  with config_override_errors():
    return FLAGS(argv)


if __name__ == '__main__':
  run()
