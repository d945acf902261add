"""What the training-loop tests share: the tiny config's overrides, a corpus fixture dir,
training helpers, and `python train.py` in a subprocess.

Every run uses configs/tiny.py on a few hundred fixture pairs (the real Multi30k
when $MULTI30K_DIR is set, else a synthetic word-aligned corpus). All runs share
one model shape and schedule, so with the persistent compilation cache (conftest.py)
the train step, eval step and beam search compile once per worker, and later runs
(in-process or `train.py` subprocesses) load them from disk.
"""
import hashlib
import os
from pathlib import Path
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from transformer_jax.configs import tiny
from transformer_jax import config_lib
from transformer_jax.training import loop as trainer
from transformer_jax.workdir import WorkDir
from transformer_jax.checkpointing import Checkpointer
from transformer_jax.training.metrics_writer import read_metrics

REPO = Path(__file__).resolve().parents[1]

N = 12  # the resume test trains N, then N more steps
# Shared by every run so that all of them compile the same programs.


OVERRIDES = {
    'num_train_steps': 2 * N,
    'log_every_steps': 1,
    'checkpoint_every_steps': N,
    'eval_every_steps': 1000,  # evaluate once, at the end
    'optimizer.schedule': 'rsqrt',  # no cool-down: lr(step) does not depend on num_train_steps
    'optimizer.cooldown_steps': 0,
    'eval.batch_size': 8,
    'eval.num_bleu_sentences': 8,
    'eval.max_decode_length': 16,
}


TRAIN_KEYS = ('loss', 'nll', 'accuracy', 'num_tokens', 'learning_rate', 'grad_norm')


def make_config(corpus, **overrides):
  """configs/tiny.py with OVERRIDES, then `overrides` (dotted keys as `a__b`)."""
  config = tiny.get_config()
  settings = {'data.data_dir': str(corpus['data']), 'data.manual_dir': str(corpus['raw']),
              **OVERRIDES, **{k.replace('__', '.'): v for k, v in overrides.items()}}
  for key, value in settings.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def train(corpus, workdir, **overrides) -> dict:
  return trainer.train_and_evaluate(make_config(corpus, **overrides), str(workdir))


def train_records(workdir) -> dict[int, dict]:
  """step -> logged training metrics (eval and summary records left out)."""
  return {r['step']: r for r in read_metrics(str(workdir)) if 'loss' in r}


def summary_record(workdir) -> dict:
  return [r for r in read_metrics(str(workdir)) if 'summary_step' in r][-1]


def abstract_params(workdir):
  config = WorkDir(str(workdir)).read_config()
  vocab = WorkDir(str(workdir)).load_vocab()
  _, abstract = config_lib.abstract_model(config, vocab.size)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def restore_params(workdir, step, ema=True):
  checkpointer = Checkpointer(str(workdir), read_only=True)
  try:
    return checkpointer.restore_params(abstract_params(workdir), step, ema=ema)
  finally:
    checkpointer.close()


def checkpoint_steps(workdir) -> list[int]:
  """Completed checkpoints: orbax renames a step's temporary directory to `<step>` when done."""
  directory = Path(workdir, 'checkpoints')
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def file_hashes(directory) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(Path(directory).rglob('*')) if p.is_file()}


def assert_trees_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class TrainProcess:
  """`python train.py` on the tiny config in a subprocess, sharing the compilation cache."""

  def __init__(self, corpus, workdir, cache_dir, **overrides):
    settings = {'data.data_dir': corpus['data'], 'data.manual_dir': corpus['raw'], **OVERRIDES,
                **{k.replace('__', '.'): v for k, v in overrides.items()}}
    self.workdir = Path(workdir)
    self.workdir.parent.mkdir(parents=True, exist_ok=True)
    self.log = self.workdir.parent / f'{self.workdir.name}.{time.monotonic_ns()}.log'
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache_dir,
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
           'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}
    command = [sys.executable, 'train.py', '--config', 'configs/tiny.py',
               '--workdir', str(workdir), *[f'--config.{k}={v}' for k, v in settings.items()]]
    with open(self.log, 'w') as log:
      self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT)

  def output(self) -> str:
    return self.log.read_text(errors='replace')

  def wait_until(self, condition, timeout=300.0, what='condition'):
    deadline = time.monotonic() + timeout
    while not condition():
      if self.process.poll() is not None:
        pytest.fail(f'train.py exited ({self.process.returncode}) before {what}:\n'
                    f'{self.output()[-3000:]}')
      if time.monotonic() > deadline:
        pytest.fail(f'timed out waiting for {what}:\n{self.output()[-3000:]}')
      time.sleep(0.05)

  def wait(self, timeout=300.0) -> int:
    try:
      return self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f'train.py did not finish in {timeout}s:\n{self.output()[-3000:]}')

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait(30)


