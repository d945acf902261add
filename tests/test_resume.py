"""Resume equals uninterrupted: exactly after a clean stop, after SIGKILL, after SIGTERM."""
import signal

import jax
import numpy as np

from transformer_jax.training.metrics_writer import read_metrics
from run_helpers import (N, TRAIN_KEYS, TrainProcess, assert_trees_equal, checkpoint_steps,
                         restore_params, summary_record, train, train_records)


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
