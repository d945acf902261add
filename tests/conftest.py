"""Fixtures shared across test files: one tiny trained run (and its data) for the fault tests.

Session-scoped, so each pytest-xdist worker trains it once for every file that asks.
"""
import pytest

from toy_corpus import toy_pairs, write_split
from transformer_jax.configs import tiny
from transformer_jax.data.datasets.multi30k.builder import prepare_multi30k
from transformer_jax.training import loop

STEPS = 8  # checkpoints at 4 and 8
OVERRIDES = {'num_train_steps': STEPS, 'log_every_steps': 1, 'checkpoint_every_steps': 4,
             'eval_every_steps': 1000, 'optimizer.schedule': 'rsqrt', 'optimizer.cooldown_steps': 0,
             'eval.batch_size': 8, 'eval.num_bleu_sentences': 8, 'eval.max_decode_length': 12,
             'keep_checkpoints': 10}


@pytest.fixture(scope='session')
def data(tmp_path_factory):
  raw = tmp_path_factory.mktemp('raw')
  write_split(raw, 'train', toy_pairs(200, 0, min_words=3, max_words=8))
  write_split(raw, 'val', toy_pairs(16, 1, min_words=3, max_words=8))
  prepared = tmp_path_factory.mktemp('tfds')
  prepare_multi30k(prepared, raw)
  return {'raw': raw, 'data': prepared}


def make_fault_config(data, **overrides):
  config = tiny.get_config()
  settings = {'data.data_dir': str(data['data']), 'data.manual_dir': str(data['raw']),
              **OVERRIDES, **overrides}
  for key, value in settings.items():
    section, _, field = key.rpartition('.')
    (config[section] if section else config)[field] = value
  return config


@pytest.fixture(scope='session')
def trained(data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  loop.train_and_evaluate(make_fault_config(data), str(workdir))
  return workdir
