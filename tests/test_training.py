"""The training loop end to end: it learns, resumes exactly, survives kills, fails fast.

Every run uses configs/tiny.py on a few hundred fixture pairs (the real Multi30k
when $MULTI30K_DIR is set, else a synthetic word-aligned corpus). All runs share
one model shape and schedule, so with the persistent compilation cache below the
train step, eval step and beam search compile once per worker, and later runs
(in-process or `train.py` subprocesses) load them from disk.
"""
import hashlib
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # for `configs`

from transformer_jax.configs import tiny  # noqa: E402
from toy_corpus import toy_pairs, write_split  # noqa: E402
from transformer_jax import config_lib, configs  # noqa: E402
from transformer_jax.training import loop as trainer  # noqa: E402
from transformer_jax.workdir import WorkDir  # noqa: E402
from transformer_jax.checkpointing import Checkpointer, average_params, select_params  # noqa: E402
from transformer_jax.data import make_train_iterator, registry  # noqa: E402
from transformer_jax.data.datasets.multi30k import MANUAL_DIR_ENV  # noqa: E402
from transformer_jax.data.datasets.multi30k.builder import prepare_multi30k  # noqa: E402
from transformer_jax.scoring import bleu_report, sweep_decoding  # noqa: E402
from transformer_jax.training.losses import masked_token_metrics  # noqa: E402
from transformer_jax.training.metrics_writer import read_metrics  # noqa: E402
from transformer_jax.training import train_step as train_step_lib  # noqa: E402
from transformer_jax.training.train_step import TrainState  # noqa: E402
from transformer_jax.decoding.translator import Translator  # noqa: E402

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

# --- fixtures and helpers -----------------------------------------------------------------


def _real_pairs(stem, count, max_words=9):
  """The first `count` short pairs of the real split (short: they fit max_length=32)."""
  directory = Path(os.environ[MANUAL_DIR_ENV])
  en = (directory / f'{stem}.en').read_text(encoding='utf-8').splitlines()
  de = (directory / f'{stem}.de').read_text(encoding='utf-8').splitlines()
  short = [(e, d) for e, d in zip(en, de)
           if len(e.split()) <= max_words and len(d.split()) <= max_words]
  return short[:count]


@pytest.fixture(scope='module')
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


@pytest.fixture(scope='module')
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


@pytest.fixture(scope='module')
def straight_run(corpus, compile_cache, tmp_path_factory):
  """2N steps in one go: the reference for the resume tests. Returns (workdir, summary)."""
  workdir = tmp_path_factory.mktemp('straight') / 'run'
  return workdir, train(corpus, workdir)


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


@pytest.fixture
def processes():
  """Collects TrainProcesses; SIGKILLs whatever still runs when the test ends."""
  started = []
  yield started
  for p in started:
    p.kill()


# --- end to end ---------------------------------------------------------------------------


def test_tiny_model_learns_and_leaves_a_complete_workdir(straight_run):
  workdir, summary = straight_run
  assert summary['step'] == 2 * N and summary['stopped_by'] is None
  records = [r for r in read_metrics(str(workdir)) if 'loss' in r]
  assert [r['step'] for r in records] == list(range(1, 2 * N + 1)), 'one record per step'
  for r in records:
    assert set(TRAIN_KEYS) <= set(r) and np.isfinite(r['loss'])
  first, last = records[0]['loss'], records[-1]['loss']
  assert last < first - 0.5, f'loss did not go down: {first:.3f} -> {last:.3f}'
  evals = [r for r in read_metrics(str(workdir)) if 'eval_loss' in r]
  assert [r['step'] for r in evals] == [2 * N] and 0 <= evals[0]['eval_bleu'] <= 100
  # What translation needs.
  assert (workdir / 'config.json').is_file() and (workdir / 'vocab' / 'spm.model').is_file()
  assert checkpoint_steps(workdir) == [N, 2 * N]
  assert (workdir / 'checkpoints' / str(2 * N) / 'params').is_dir()
  assert (workdir / 'checkpoints' / str(2 * N) / 'ema_params').is_dir()  # tiny.py keeps an EMA
  # ... which is what is evaluated; the raw params are scored beside it at the end.
  assert {'eval_raw_nll', 'eval_raw_bleu'} <= set(evals[0])
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  params, description = select_params(Checkpointer(str(workdir), read_only=True),
                                      abstract_params(workdir), 'latest')
  assert description == f'step {2 * N} (EMA params)'
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_training_applies_dropout_keyed_by_step(straight_run, corpus):
  """The loss logged for update 1 is the dropout loss under fold_in(key(seed), 0)."""
  workdir, _ = straight_run
  config = make_config(corpus)
  assert config.model.dropout_rate > 0
  vocab = WorkDir(str(workdir)).load_vocab()
  model = config_lib.build_model(config, vocab.size)  # the trainer's initial parameters
  sources = registry.load_splits(config.data, splits=('train',))
  batch = next(make_train_iterator(sources['train'], vocab, source_lang='en', target_lang='de',
                                   batch_tokens=config.batch_tokens,
                                   max_length=config.data.max_length, seed=config.seed))

  @nnx.jit
  def loss(model, batch, key):
    logits = model(batch['inputs'], batch['decoder_inputs'],
                   inputs_segmentation=batch['inputs_segmentation'],
                   targets_segmentation=batch['targets_segmentation'],
                   inputs_position=batch['inputs_position'],
                   targets_position=batch['targets_position'], dropout_rng=key)
    sums = masked_token_metrics(logits, batch['targets'], batch['targets_segmentation'] != 0,
                                config.label_smoothing)
    return sums['loss_sum'] / sums['num_tokens']

  key = jax.random.key(config.seed)
  logged = train_records(workdir)[1]['loss']
  assert logged == pytest.approx(float(loss(model, batch, jax.random.fold_in(key, 0))), abs=1e-4)
  assert abs(logged - float(loss(model, batch, jax.random.fold_in(key, 1)))) > 1e-3, (
      'another dropout key gives another loss: dropout is on')


# --- resume -------------------------------------------------------------------------------


def test_resume_is_exact(straight_run, corpus, tmp_path):
  """N steps, restart with num_train_steps=2N: the same per-step metrics and final params."""
  workdir, _ = straight_run
  resumed = tmp_path / 'resumed'
  assert train(corpus, resumed, num_train_steps=N)['step'] == N
  first_leg = train_records(resumed)
  assert sorted(first_leg) == list(range(1, N + 1)), 'the last step of a run is logged too'
  assert train(corpus, resumed)['step'] == 2 * N

  straight, both = train_records(workdir), train_records(resumed)
  assert sorted(both) == list(range(1, 2 * N + 1))
  for step in range(1, 2 * N + 1):
    for key in TRAIN_KEYS:
      assert both[step][key] == straight[step][key], (step, key)
  # Not trivially equal: batches differ from step to step, so a restarted data iterator
  # (or a dropout key that restarts at 0) would have shown up above.
  tokens = [straight[s]['num_tokens'] for s in range(1, 2 * N + 1)]
  assert tokens[N:] != tokens[:N] and len(set(tokens)) > 3
  assert_trees_equal(restore_params(resumed, 2 * N), restore_params(workdir, 2 * N))
  # tiny.py trains with an EMA: the raw params resume exactly too, and differ from the EMA.
  raw = restore_params(workdir, 2 * N, ema=False)
  assert_trees_equal(restore_params(resumed, 2 * N, ema=False), raw)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(raw),
                                                       jax.tree.leaves(restore_params(workdir, 2 * N))))


def test_sigkill_then_restart_resumes_from_the_last_checkpoint(corpus, compile_cache, tmp_path,
                                                               processes):
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  run = TrainProcess(corpus, workdir, compile_cache, num_train_steps=10_000,
                     checkpoint_every_steps=2, time_limit_minutes=2.0)
  processes.append(run)

  def saving_after_a_checkpoint():  # kill while orbax writes a step, if we catch it doing so
    steps = checkpoint_steps(workdir)
    writing = steps and any('tmp' in p.name for p in checkpoints.iterdir())
    return writing or len(steps) >= 4

  run.wait_until(saving_after_a_checkpoint, what='a checkpoint')
  run.process.send_signal(signal.SIGKILL)
  assert run.wait() == -signal.SIGKILL

  last = checkpoint_steps(workdir)[-1]
  killed = {r['step']: r for r in read_metrics(str(workdir)) if 'loss' in r}
  summary = train(corpus, workdir, num_train_steps=last + 3, checkpoint_every_steps=2)
  assert summary['step'] == last + 3
  assert not [p.name for p in checkpoints.iterdir() if not p.name.isdigit()], (
      'temporary directories of the killed save are left')
  for step in checkpoint_steps(workdir):  # every kept checkpoint restores
    params = restore_params(workdir, step)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  records = [r for r in read_metrics(str(workdir)) if 'loss' in r]
  steps = [r['step'] for r in records]
  assert steps == list(range(1, last + 4)), 'each step logged once, up to the end'
  for record in records[:last]:  # the killed run's records up to its checkpoint, as written
    assert record == killed[record['step']], record['step']
  for record in records[last:]:  # restarted at the last checkpoint: the same losses again
    if record['step'] in killed:
      assert record['loss'] == killed[record['step']]['loss'], record['step']


def test_sigterm_saves_the_current_step_and_exits(corpus, compile_cache, tmp_path, processes):
  workdir = tmp_path / 'run'
  run = TrainProcess(corpus, workdir, compile_cache, num_train_steps=10_000,
                     checkpoint_every_steps=10_000, time_limit_minutes=2.0)
  processes.append(run)
  metrics = workdir / 'metrics.jsonl'  # written as we poll: count complete lines only
  run.wait_until(lambda: metrics.exists() and metrics.read_bytes().count(b'\n') >= 3,
                 what='three training steps')
  run.process.send_signal(signal.SIGTERM)
  assert run.wait() == 0, run.output()[-3000:]
  summary = summary_record(workdir)
  assert summary['summary_stopped_by'] == 'SIGTERM'
  step = summary['summary_step']
  assert 3 <= step < 10_000 and checkpoint_steps(workdir) == [step]
  assert max(train_records(workdir)) == step, 'metrics up to the stopping step are logged'
  assert 'stopped by SIGTERM' in run.output()


# --- failures -----------------------------------------------------------------------------


class _PoisonedIterator:
  """The trainer's data iterator, but update `bad_step` gets an out-of-vocabulary token id.

  The embedding lookup returns NaN for it (jnp.take fills out-of-bounds rows), so that
  update's loss is NaN while every compiled program stays the same (no recompilation).
  """

  def __init__(self, iterator, first_step, bad_step):
    self._iterator, self._step, self._bad_step = iterator, first_step, bad_step

  def set_state(self, state):
    self._iterator.set_state(state)

  def get_state(self):
    return self._iterator.get_state()

  def __next__(self):
    batch = next(self._iterator)
    self._step += 1
    if self._step == self._bad_step:
      batch = {**batch, 'inputs': batch['inputs'].copy()}
      batch['inputs'][0, 0] = 10 ** 6
    return batch


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(straight_run, corpus,
                                                                  tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_run[0], workdir)
  before = file_hashes(workdir / 'checkpoints')
  bad_step = 2 * N + 3

  poisoned = lambda *args, **kwargs: _PoisonedIterator(
      make_train_iterator(*args, **kwargs), first_step=2 * N, bad_step=bad_step)
  config = make_config(corpus, num_train_steps=2 * N + 10, checkpoint_every_steps=1,
                       keep_checkpoints=100)
  with pytest.raises(trainer.NonFiniteLossError, match=f'non-finite loss at step {bad_step}:'):
    trainer.train_and_evaluate(config, str(workdir), make_train_iterator=poisoned)
  assert max(train_records(workdir)) == bad_step - 1, 'steps before the bad one are logged'
  after = file_hashes(workdir / 'checkpoints')
  assert {k: after.get(k) for k in before} == before, 'existing checkpoints changed'
  assert checkpoint_steps(workdir) == [N, 2 * N, 2 * N + 1, 2 * N + 2], (
      'saved every step up to, not including, the bad one')


def test_unknown_config_key_fails_before_any_work(corpus, tmp_path):
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, 'train.py', '--config', 'configs/tiny.py', '--workdir',
       str(tmp_path / 'run'), '--config.nonexistent=1',
       f'--config.data.data_dir={tmp_path / "tfds"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'nonexistent' in result.stderr
  assert time.monotonic() - start < 60
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'tfds').exists()


@pytest.mark.parametrize('key,value', [
    ('model.dropout_rate', 1.5),
    ('ema_decay', 1.0),
    ('data.source_lang', 'fr'),
    ('batch_tokens', 16),  # smaller than data.max_length = 32
    ('num_train_steps', 0),
    ('optimizer.schedule', 'cosine'),
    ('model.num_heads', 3),  # d_model 32 is not divisible by 3
])
def test_invalid_values_raise_config_error_naming_the_key(corpus, tmp_path, key, value):
  config = make_config(corpus, **{key.replace('.', '__'): value})
  name = key.split('.')[-1]
  with pytest.raises(config_lib.ConfigError, match=name):
    config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match=name):  # before anything is written
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_cooldown_longer_than_training_is_only_an_error_for_the_cooldown_schedule(corpus):
  config = make_config(corpus, num_train_steps=5, optimizer__cooldown_steps=10)
  config_lib.validate(config)  # 'rsqrt' ignores cooldown_steps
  config.optimizer.schedule = 'rsqrt_cooldown'
  with pytest.raises(config_lib.ConfigError, match='cooldown_steps'):
    config_lib.validate(config)


def test_resuming_with_a_different_model_is_refused(straight_run, corpus, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_run[0], workdir)
  WorkDir(str(workdir)).write_or_check_config(make_config(corpus, num_train_steps=99))
  with pytest.raises(config_lib.ConfigError, match=r"\['model\.d_model'\]"):
    train(corpus, workdir, model__d_model=64)


# --- checkpoints --------------------------------------------------------------------------


def _save_steps(workdir, params_by_step, bleu_by_step, ema_by_step=None):
  checkpointer = Checkpointer(str(workdir), keep=10)
  for step, params in params_by_step.items():
    state = TrainState(step=jnp.int32(step), params=params,
                       opt_state={'count': jnp.zeros((), jnp.int32)},
                       ema_params=(ema_by_step or {}).get(step))
    checkpointer.save(state, {'train_seconds': 0.0}, {'bleu': bleu_by_step[step]})
  checkpointer.wait()
  return checkpointer


def _tree(value):
  return {'embedding': jnp.full((3, 2), value, jnp.float32),
          'layer': {'w': jnp.arange(4, dtype=jnp.float32) * value}}


def test_average_params_is_the_element_wise_mean():
  mean = average_params([_tree(1.0), _tree(4.0)])
  assert_trees_equal(mean, _tree(2.5))
  assert_trees_equal(average_params([_tree(3.0)]), _tree(3.0))
  with pytest.raises(ValueError):
    average_params([])


def test_select_params_best_latest_average_and_missing(tmp_path):
  checkpointer = _save_steps(tmp_path, {10: _tree(1.0), 20: _tree(3.0), 30: _tree(7.0)},
                             {10: 5.0, 20: 9.0, 30: 2.0})
  abstract = _tree(0.0)
  params, description = select_params(checkpointer, abstract, 'best')
  assert description == 'step 20' and checkpointer.best_step() == 20
  assert_trees_equal(params, _tree(3.0))
  params, description = select_params(checkpointer, abstract, 'latest')
  assert description == 'step 30'
  assert_trees_equal(params, _tree(7.0))
  params, description = select_params(checkpointer, abstract, 'average:2')
  assert description == 'average of steps [20, 30]'
  assert_trees_equal(params, _tree(5.0))
  assert_trees_equal(select_params(checkpointer, abstract, '10')[0], _tree(1.0))
  with pytest.raises(FileNotFoundError, match=r'step 15.*available: \[10, 20, 30\]'):
    select_params(checkpointer, abstract, '15')
  with pytest.raises(ValueError, match='average:N'):
    select_params(checkpointer, abstract, 'first')
  checkpointer.close()


def test_select_params_uses_the_ema_when_the_run_has_one(tmp_path):
  checkpointer = _save_steps(tmp_path, {10: _tree(1.0), 20: _tree(3.0)}, {10: 5.0, 20: 2.0},
                             ema_by_step={10: _tree(-1.0), 20: _tree(-3.0)})
  params, description = select_params(checkpointer, _tree(0.0), 'best')
  assert description == 'step 10 (EMA params)'
  assert_trees_equal(params, _tree(-1.0))
  params, description = select_params(checkpointer, _tree(0.0), 'average:2')
  assert description == 'average of steps [10, 20] (EMA params)'
  assert_trees_equal(params, _tree(-2.0))
  assert_trees_equal(checkpointer.restore_params(_tree(0.0), 20, ema=False), _tree(3.0))
  params, description = select_params(checkpointer, _tree(0.0), "latest", ema=False)
  assert description == "step 20"
  assert_trees_equal(params, _tree(3.0))
  # The whole state round-trips, EMA included; a config with EMA cannot resume a run without.
  abstract = TrainState(step=jnp.int32(0), params=_tree(0.0),
                        opt_state={'count': jnp.zeros((), jnp.int32)}, ema_params=_tree(0.0))
  state, meta = checkpointer.restore(abstract)
  assert meta['step'] == 20
  assert_trees_equal(state.ema_params, _tree(-3.0))
  assert_trees_equal(state.params, _tree(3.0))
  checkpointer.close()
  plain = _save_steps(tmp_path / 'plain', {10: _tree(1.0)}, {10: 1.0})
  with pytest.raises(ValueError, match='no EMA params.*ema_decay'):
    plain.restore(abstract)
  assert plain.restore(abstract.replace(ema_params=None))[0].ema_params is None
  plain.close()


def test_ema_update_warms_up_then_tracks_with_the_decay():
  ema, params = _tree(1.0), _tree(12.0)
  # Update 1: d = min(0.99, 2/11): the random init barely counts.
  first = train_step_lib.ema_update(ema, params, 1, 0.99)
  chex.assert_trees_all_close(first, jax.tree.map(lambda e, p: 2 / 11 * e + 9 / 11 * p, ema, params))
  # Late: d = decay; a constant target is approached geometrically.
  late = train_step_lib.ema_update(ema, params, 10_000, 0.9)
  chex.assert_trees_all_close(late, jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, params))


def test_select_params_without_checkpoints_says_so(tmp_path):
  checkpointer = Checkpointer(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    select_params(checkpointer, _tree(0.0), 'best')
  checkpointer.close()


# --- translating a trained run ------------------------------------------------------------


def _val_text(corpus):
  return [(corpus['raw'] / f'val.{lang}').read_text(encoding='utf-8').splitlines()
          for lang in ('en', 'de')]


def test_translate_cli_writes_what_the_translator_gives(straight_run, corpus, tmp_path):
  workdir, _ = straight_run
  sources, references = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  # Without --beam_size/--alpha it decodes like the run's evaluation did.
  expected = translator.translate(sources)
  assert translator.decoding_settings() == (translator.config.eval.beam_size,
                                            translator.config.eval.alpha)
  output, scores = tmp_path / 'val.hyp.de', tmp_path / 'scores.json'
  subprocess.run([sys.executable, 'translate.py', '--workdir', str(workdir), '--checkpoint',
                  'latest', '--input', str(corpus['raw'] / 'val.en'),
                  '--output', str(output), '--reference', str(corpus['raw'] / 'val.de'),
                  '--score_file', str(scores)], cwd=REPO, check=True, capture_output=True)
  assert output.read_text(encoding='utf-8').splitlines() == expected
  assert json.loads(scores.read_text())['bleu'] == bleu_report(expected, references)['bleu']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['scores.json', 'val.hyp.de']  # no .tmp


def test_translator_decodes_with_the_runs_eval_settings_unless_told(straight_run, corpus):
  workdir, _ = straight_run
  sources, _ = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  # A run whose config chose other settings (as the de→en config chose α 1.0 on val).
  translator.config.eval.beam_size, translator.config.eval.alpha = 3, 1.5
  assert translator.decoding_settings() == (3, 1.5)
  assert translator.decoding_settings(beam_size=1) == (1, 1.5)
  assert translator.decoding_settings(alpha=0.0) == (3, 0.0)  # 0 is a value, not "unset"
  sources = sources[:8]
  assert translator.translate(sources) == translator.translate(sources, beam_size=3, alpha=1.5)
  for bad in ({'beam_size': 0}, {'beam_size': 2.0}, {'alpha': -0.1}, {'alpha': float('nan')}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      translator.translate(sources, **bad)


def test_decoding_sweep_scores_each_setting_like_a_direct_translation(straight_run, corpus):
  workdir, _ = straight_run
  sources, references = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  results = list(sweep_decoding(
      lambda beam, alpha: translator.translate(sources, beam_size=beam, alpha=alpha),
      references, beam_sizes=[1, 2], alphas=[0.0, 1.0]))
  assert [(r['beam_size'], r['alpha']) for r in results] == [(1, None), (2, 0.0), (2, 1.0)]
  for r in results:
    direct = translator.translate(sources, beam_size=r['beam_size'], alpha=r['alpha'] or 0.0)
    assert {k: r[k] for k in ('bleu', 'chrf')} == {
        k: bleu_report(direct, references)[k] for k in ('bleu', 'chrf')}
    assert r['bleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')


def test_sweep_script_appends_one_line_per_setting_and_checks_its_flags(straight_run, corpus,
                                                                        tmp_path):
  workdir, _ = straight_run
  script = [sys.executable, 'scripts/sweep_decoding.py', '--workdir', str(workdir),
            '--checkpoint', 'latest', '--input', str(corpus['raw'] / 'val.en'),
            '--reference', str(corpus['raw'] / 'val.de')]
  bad = subprocess.run(script + ['--beam_sizes=4,x'], cwd=REPO, capture_output=True, text=True)
  assert bad.returncode != 0
  assert '--beam_sizes=4,x: not a comma-separated list of ints' in bad.stderr
  output = tmp_path / 'sweep.jsonl'
  output.write_text('{"kept": "an earlier sweep"}\n')
  done = subprocess.run(script + ['--beam_sizes=1,2', '--alphas=0.6', '--output', str(output)],
                        cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [json.loads(line) for line in output.read_text().splitlines()]
  assert lines[0] == {'kept': 'an earlier sweep'}
  assert [(r['beam_size'], r['alpha']) for r in lines[1:]] == [(1, None), (2, 0.6)]
  assert 'best on' in done.stderr


# --- the paper's base configuration -------------------------------------------------------


def _paper_base_config():
  """The paper's base model and schedule (Table 3) over the default config's data, with a
  joint 32k vocabulary and rows of 256 tokens. (WMT14 configs come with its dataset.)"""
  config = configs.get_config('multi30k')
  config.batch_tokens, config.num_train_steps = 25_600, 100_000
  config.data.vocab_size, config.data.max_length = 32_000, 256
  config.eval.max_decode_length = 256
  model = config.model
  model.d_model, model.num_heads, model.d_ff, model.dropout_rate = 512, 8, 2048, 0.1
  model.num_encoder_layers = model.num_decoder_layers = 6
  config.optimizer.schedule, config.optimizer.warmup_steps = 'rsqrt', 4000
  config.optimizer.learning_rate_scale, config.optimizer.cooldown_steps = 1.0, 0
  return config


def test_the_papers_base_model_builds_and_its_step_traces():
  """The base model validates, has the paper's parameter count, and its train step traces."""
  from transformer_jax.training.train_step import make_optimizer, train_step

  config = _paper_base_config()
  config_lib.validate(config)
  vocab_size, d, f, layers = config.data.vocab_size, 512, 2048, 6
  tx, schedule = make_optimizer(config.optimizer, d_model=d, total_steps=config.num_train_steps)
  graphdef, abstract = config_lib.abstract_model(config, vocab_size)
  state = jax.eval_shape(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                              opt_state=tx.init(p)), abstract)
  shapes = [x.shape for x in jax.tree.leaves(abstract)]
  encoder_layer = 4 * d * d + 2 * d * f + f + d + 2 * 2 * d  # attention, FFN, 2 LayerNorms
  decoder_layer = 8 * d * d + 2 * d * f + f + d + 3 * 2 * d  # + cross-attention, 3rd LayerNorm
  expected = vocab_size * d + layers * (encoder_layer + decoder_layer)
  assert sum(int(np.prod(s)) for s in shapes) == expected  # ~60.5M with a shared 32k vocab
  assert (vocab_size, d) in shapes
  rows, length = config.batch_tokens // config.data.max_length, config.data.max_length
  batch = {k: jax.ShapeDtypeStruct((rows, length), jnp.int32) for k in (
      'inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs', 'targets',
      'targets_segmentation', 'targets_position')}
  new_state, metrics = jax.eval_shape(
      lambda s, b: train_step(s, b, jax.random.key(0), graphdef=graphdef, tx=tx,
                              schedule=schedule, label_smoothing=config.label_smoothing),
      state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert metrics['loss_sum'].shape == () and metrics['loss_sum'].dtype == jnp.float32
  assert float(schedule(config.optimizer.warmup_steps - 1)) == pytest.approx(
      (d * config.optimizer.warmup_steps) ** -0.5)
