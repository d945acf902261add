"""Train a Transformer: python train.py [--config configs/multi30k.py] [--workdir runs/m30k].

Any config key can be overridden: --config.num_train_steps=1000 --config.model.pre_ln=True.
All logic lives in transformer_jax.trainer so notebooks can call it too.
"""
import os

from absl import app, flags
import jax
from ml_collections import config_flags

from transformer_jax.sharding import maybe_initialize_distributed
from transformer_jax.trainer import quiet_libraries, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/multi30k.py',
                                          'Training configuration file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/multi30k_en_de',
                               'Run directory: checkpoints, vocabulary, metrics. Reused to resume.')
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_libraries()
  if _COMPILATION_CACHE.value and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', _COMPILATION_CACHE.value)
  if _MULTIHOST.value and not _COORDINATOR.value:
    jax.distributed.initialize()
  else:
    maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
