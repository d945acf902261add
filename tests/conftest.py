"""Fixtures shared across test files, session-scoped: a toy corpus prepared as TFDS data, the
persistent compilation cache, a straight tiny run (the training-loop tests), a tiny run with two
checkpoints (the fault tests), and the data tests' small corpus with its vocabulary.

The two tiny runs and their corpora are built once per test session, not once per pytest-xdist
worker: the first worker to ask builds them into the session's shared base directory (under a
file lock) and the others wait for it, as test_sharding.py does with its measurements; the
compilation cache is shared the same way. Tests that change a shared run copy it first
(shutil.copytree to their tmp_path).
"""
import fcntl
import json
import os
from pathlib import Path
import shutil

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

from run_helpers import train
from toy_corpus import (real_multi30k_dir, toy_pairs, write_small_corpus, write_split,
                        write_train_val)
from transformer_jax.configs import tiny
from transformer_jax.data import load_or_train_vocab
from transformer_jax.data.datasets.multi30k.builder import load_multi30k, prepare_multi30k
from transformer_jax.training import loop

STEPS = 8  # checkpoints at 4 and 8
FAULT_OVERRIDES = {'num_train_steps': STEPS, 'log_every_steps': 1, 'checkpoint_every_steps': 4,
             'eval_every_steps': 1000, 'optimizer.schedule': 'rsqrt', 'optimizer.cooldown_steps': 0,
             'eval.batch_size': 8, 'eval.num_bleu_sentences': 8, 'eval.max_decode_length': 12,
             'keep_checkpoints': 10}


def build_once(tmp_path_factory, name, build):
  """`build(directory)`'s JSON result, built by one worker of the session and read by all.

  Under pytest-xdist the workers share the parent of their base temporary directories: the
  first to take `<name>.lock` there builds into `<name>/` and records the result; the others
  wait on the lock, then read it. A build that raised is redone by the next worker to ask.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    result = root / f'{name}.json'
    if not result.exists():
      directory = root / name
      shutil.rmtree(directory, ignore_errors=True)  # what a failed build left
      directory.mkdir()
      result.write_text(json.dumps(build(directory), default=float))
    return json.loads(result.read_text())


def _prepare(directory, write):
  raw, prepared = directory / 'raw', directory / 'tfds'
  raw.mkdir()
  write(raw)
  prepare_multi30k(prepared, raw)
  return {'raw': str(raw), 'data': str(prepared)}


def _paths(corpus):
  return {key: Path(value) for key, value in corpus.items()}


@pytest.fixture(scope='session')
def data(tmp_path_factory):
  """The fault tests' corpus: {'raw': 200 train, 16 val toy pairs, 'data': prepared TFDS}."""
  def write(raw):
    write_split(raw, 'train', toy_pairs(200, 0, min_words=3, max_words=8))
    write_split(raw, 'val', toy_pairs(16, 1, min_words=3, max_words=8))
  return _paths(build_once(tmp_path_factory, 'fault_corpus', lambda d: _prepare(d, write)))


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
  """The fault tests' run: STEPS steps, checkpoints at 4 and 8. Returns its workdir."""
  def build(directory):
    loop.train_and_evaluate(make_fault_config(data), str(directory / 'run'))
    return str(directory / 'run')
  return Path(build_once(tmp_path_factory, 'fault_run', build))


# --- the training-loop tests: one corpus, one compilation cache, one straight run ----------


@pytest.fixture(scope='session')
def corpus(tmp_path_factory):
  """{'raw': manual dir with 300 train and 40 val pairs, 'data': prepared TFDS dir}, made once.

  The pairs are the first real ones that fit max_length=32 (at most 9 words a side) when
  $MULTI30K_DIR is set, else toy pairs.
  """
  write = lambda raw: write_train_val(raw, 300, 40, real_max_words=9)
  return _paths(build_once(tmp_path_factory, 'corpus', lambda d: _prepare(d, write)))


@pytest.fixture(scope='session')
def compile_cache(tmp_path_factory):
  """Turns on JAX's persistent compilation cache from the first test that asks until the
  session ends (on this worker); returns its directory."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # shared by the workers: each loads what the other compiled
  path = str(root / 'jax_compilation_cache')
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
  def build(directory):
    return {'workdir': str(directory / 'run'), 'summary': train(corpus, directory / 'run')}
  run = build_once(tmp_path_factory, 'straight_run', build)
  return Path(run['workdir']), run['summary']


@pytest.fixture(scope='session')
def untrained_run(corpus, compile_cache, tmp_path_factory):
  """A complete work directory whose weights are still their random initialisation (2 steps
  at a learning rate of ~0). The serving tests translate with it: its translations differ from
  sentence to sentence and by beam size, where the tiny trained model answers almost every
  sentence with the same few tokens, which would make "equals the Translator" hard to fail."""
  def build(directory):
    train(corpus, directory / 'run', num_train_steps=2, checkpoint_every_steps=2,
          optimizer__learning_rate_scale=1e-9)
    return str(directory / 'run')
  return Path(build_once(tmp_path_factory, 'untrained_run', build))


@pytest.fixture
def processes():
  """Collects TrainProcesses; SIGKILLs whatever still runs when the test ends."""
  started = []
  yield started
  for p in started:
    p.kill()


# --- the data tests: a small numbered toy corpus, its vocabulary, the real data ---------------


@pytest.fixture(scope='session')
def toy(tmp_path_factory):
  """(raw_dir, pairs, data_dir) with the toy corpus prepared once per session."""
  raw_dir = tmp_path_factory.mktemp('raw')
  pairs = write_small_corpus(raw_dir)
  data_dir = tmp_path_factory.mktemp('tfds')
  prepare_multi30k(data_dir, raw_dir)
  return raw_dir, pairs, data_dir


@pytest.fixture(scope='session')
def toy_train(toy):
  return load_multi30k('train', toy[2])


@pytest.fixture(scope='session')
def toy_vocab(toy_train, tmp_path_factory):
  return load_or_train_vocab(toy_train, tmp_path_factory.mktemp('vocab'), vocab_size=120,
                             languages=('en', 'de'))


@pytest.fixture(scope='session')
def real_data_dir(tmp_path_factory):
  """$MULTI30K_DIR prepared as TFDS data (for tests marked to need the real files)."""
  data_dir = tmp_path_factory.mktemp('multi30k_tfds')
  prepare_multi30k(data_dir, real_multi30k_dir())
  return data_dir
