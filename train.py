"""Train a Transformer: python train.py [--config configs/multi30k.py] [--workdir runs/m30k].

Any config key can be overridden: --config.num_train_steps=1000 --config.model.pre_ln=True.
All logic lives in transformer_jax.trainer so notebooks can call it too.
"""
from absl import app, flags
from ml_collections import config_flags

from transformer_jax.trainer import quiet_libraries, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/multi30k.py',
                                          'Training configuration file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/multi30k_en_de',
                               'Run directory: checkpoints, vocabulary, metrics. Reused to resume.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_libraries()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
