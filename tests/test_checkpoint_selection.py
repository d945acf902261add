"""Choosing checkpoints (best, latest, a step, the average of the last N) and the EMA params
they hold."""
import chex
import jax
import jax.numpy as jnp
import pytest

from transformer_jax.checkpointing import Checkpointer, average_params, select_params
from transformer_jax.training import train_step as train_step_lib
from transformer_jax.training.train_step import TrainState
from run_helpers import assert_trees_equal


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


def test_select_params_without_checkpoints_says_so(tmp_path):
  checkpointer = Checkpointer(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    select_params(checkpointer, _tree(0.0), 'best')
  checkpointer.close()


def test_ema_update_warms_up_then_tracks_with_the_decay():
  ema, params = _tree(1.0), _tree(12.0)
  # Update 1: d = min(0.99, 2/11): the random init barely counts.
  first = train_step_lib.ema_update(ema, params, 1, 0.99)
  chex.assert_trees_all_close(first, jax.tree.map(lambda e, p: 2 / 11 * e + 9 / 11 * p, ema, params))
  # Late: d = decay; a constant target is approached geometrically.
  late = train_step_lib.ema_update(ema, params, 10_000, 0.9)
  chex.assert_trees_all_close(late, jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, params))
