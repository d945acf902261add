"""The training loop end to end: a tiny model learns, leaves a complete work directory,
applies dropout keyed by the step, stops on a non-finite loss keeping the last good checkpoint."""
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from transformer_jax import config_lib
from transformer_jax.training import loop as trainer
from transformer_jax.workdir import WorkDir
from transformer_jax.checkpointing import Checkpointer, select_params
from transformer_jax.data import make_train_iterator, registry
from transformer_jax.training.losses import masked_token_metrics
from transformer_jax.training.metrics_writer import read_metrics
from run_helpers import (N, TRAIN_KEYS, abstract_params, checkpoint_steps, file_hashes, make_config,
                         train_records)


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
