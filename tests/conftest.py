"""Fixtures shared across test files, session-scoped so that each pytest-xdist worker builds
each once for every file that asks: a toy corpus prepared as TFDS data, the persistent
compilation cache, a straight tiny run (the training-loop tests) and a tiny run with two
checkpoints (the fault tests)."""
import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from run_helpers import train
from toy_corpus import toy_pairs, write_split
from transformer_jax.configs import tiny
from transformer_jax.data.datasets.multi30k import MANUAL_DIR_ENV
from transformer_jax.data.datasets.multi30k.builder import prepare_multi30k
from transformer_jax.training import loop

STEPS = 8  # checkpoints at 4 and 8
FAULT_OVERRIDES = {'num_train_steps': STEPS, 'log_every_steps': 1, 'checkpoint_every_steps': 4,
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
              **FAULT_OVERRIDES, **overrides}
  for key, value in settings.items():
    section, _, field = key.rpartition('.')
    (config[section] if section else config)[field] = value
  return config


@pytest.fixture(scope='session')
def trained(data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  loop.train_and_evaluate(make_fault_config(data), str(workdir))
  return workdir



# --- the training-loop tests: one corpus, one compilation cache, one straight run ----------


def _real_pairs(stem, count, max_words=9):
  """The first `count` short pairs of the real split (short: they fit max_length=32)."""
  directory = Path(os.environ[MANUAL_DIR_ENV])
  en = (directory / f'{stem}.en').read_text(encoding='utf-8').splitlines()
  de = (directory / f'{stem}.de').read_text(encoding='utf-8').splitlines()
  short = [(e, d) for e, d in zip(en, de)
           if len(e.split()) <= max_words and len(d.split()) <= max_words]
  return short[:count]


@pytest.fixture(scope='session')
def corpus(tmp_path_factory):
  """{'raw': manual dir with train/val files, 'data': prepared TFDS dir}, made once."""
  raw = tmp_path_factory.mktemp('raw')
  real = os.environ.get(MANUAL_DIR_ENV)
  if real and Path(real, 'train.en').is_file():
    splits = {'train': _real_pairs('train', 300), 'val': _real_pairs('val', 40)}
  else:
    splits = {'train': toy_pairs(300, 0, min_words=3, max_words=9),
              'val': toy_pairs(40, 1, min_words=3, max_words=9)}
  for stem, pairs in splits.items():
    write_split(raw, stem, pairs)
  data = tmp_path_factory.mktemp('tfds')
  prepare_multi30k(data, raw)
  return {'raw': raw, 'data': data}


@pytest.fixture(scope='session')
def compile_cache(tmp_path_factory):
  """Turns on JAX's persistent compilation cache for this module; returns its directory."""
  path = str(tmp_path_factory.mktemp('jax_compilation_cache'))
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  before = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, (path, 0.0, -1)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()  # the cache is set up at the first compile: redo it
  yield path
  for name, value in before.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


@pytest.fixture(scope='session')
def straight_run(corpus, compile_cache, tmp_path_factory):
  """2N steps in one go: the reference for the resume tests. Returns (workdir, summary)."""
  workdir = tmp_path_factory.mktemp('straight') / 'run'
  return workdir, train(corpus, workdir)


@pytest.fixture
def processes():
  """Collects TrainProcesses; SIGKILLs whatever still runs when the test ends."""
  started = []
  yield started
  for p in started:
    p.kill()
