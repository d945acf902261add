"""The training loop: train, evaluate, checkpoint, resume. Importable from notebooks.

    from transformer_jax.training.loop import train_and_evaluate
    summary = train_and_evaluate(config, workdir)

which is `train_loop(build_run(config, workdir), Evaluator.for_run(run))`: a test or a
notebook can build the parts itself and hand them in.
"""
from __future__ import annotations

import time

from absl import logging
import jax
from tqdm.auto import tqdm

from transformer_jax import sharding
from transformer_jax.checkpointing import select_params
from transformer_jax.data import pipeline
from transformer_jax.sharding import to_host
from transformer_jax.training.evaluator import Evaluator
from transformer_jax.training.metrics import (NonFiniteLossError, is_finite, non_finite_message,
                                              window_metrics)
from transformer_jax.training.metrics_writer import MetricsWriter
from transformer_jax.training.run import Run, build_run
from transformer_jax.training.stop_signal import StopSignal

__all__ = ['NonFiniteLossError', 'train_and_evaluate', 'train_loop']


def train_and_evaluate(config, workdir: str, *,
                       make_train_iterator=pipeline.make_train_iterator,
                       evaluator_class=Evaluator) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns a summary."""
  run = build_run(config, workdir, make_train_iterator=make_train_iterator)
  return train_loop(run, evaluator_class.for_run(run))


class _Loop:
  """The loop's bookkeeping: the log window, train time, the newest step's metrics."""

  def __init__(self, run: Run, evaluator: Evaluator):
    self.run, self.evaluator = run, evaluator
    self.writer = MetricsWriter(run.workdir.path, enabled=run.is_chief)
    self.last_metrics = None  # device metrics of the newest dispatched step, fetched one step late
    self.window, self.window_start = [], time.perf_counter()
    self.train_start, self.seconds_before = time.perf_counter(), run.meta['train_seconds']
    self.bar = tqdm(total=run.config.num_train_steps, initial=int(run.state.step), desc='train',
                    unit='step', disable=not run.is_chief, dynamic_ncols=True)

  def check_finite(self, host_metrics, step: int) -> dict:
    if not is_finite(host_metrics):
      self.run.checkpointer.wait()  # an async save of the last good state may still be in flight
      raise NonFiniteLossError(non_finite_message(step))
    return host_metrics

  def save(self, metrics=None) -> None:
    run = self.run
    if self.last_metrics is not None and not is_finite(to_host(self.last_metrics)):
      run.checkpointer.wait()
      raise NonFiniteLossError(non_finite_message(int(run.state.step)))
    run.checkpointer.save(run.state, {**run.meta, 'data_iterator': run.train_iter.get_state()},
                          metrics)

  def log_window(self, last_step: int) -> None:
    """Writes the train metrics of the steps in the window, which ends at update `last_step`."""
    logged = window_metrics(self.window, time.perf_counter() - self.window_start)
    self.writer.write(last_step, logged)
    self.bar.set_postfix(loss=f"{logged['loss']:.3f}", lr=f"{logged['learning_rate']:.2e}",
                         tok_s=f"{logged['target_tokens_per_s']:.0f}")
    self.window, self.window_start = [], time.perf_counter()

  def step(self, step: int) -> None:
    """Dispatches update `step` + 1, then logs update `step`'s metrics (one step late)."""
    run = self.run
    batch = sharding.global_batch(next(run.train_iter), run.mesh)
    previous = self.last_metrics  # of update number `step` (updates count from 1)
    run.state, self.last_metrics = run.train_step(run.state, batch, run.dropout_key)
    if previous is not None:
      self.window.append(self.check_finite(to_host(previous), step))
      if step % run.config.log_every_steps == 0:
        self.log_window(step)
    self.bar.update(1)
    run.meta['train_seconds'] = self.seconds_before + time.perf_counter() - self.train_start

  def evaluate(self, done: int, final: bool) -> None:
    run = self.run
    eval_start = time.perf_counter()
    results = self.evaluator.evaluate_state(run.state, final=final)
    results['train_minutes'] = run.meta['train_seconds'] / 60
    run.meta['best_bleu'] = max(run.meta['best_bleu'] or 0.0, results['bleu'])
    self.writer.write(done, results, prefix='eval_')
    logging.info('step %d: %s (eval took %.1fs)', done, results, time.perf_counter() - eval_start)
    self.bar.write(f"step {done}: val loss {results['loss']:.3f}  BLEU {results['bleu']:.2f}  "
                   f"({results['train_minutes']:.1f} train min)")
    self.save(results)
    self.train_start, self.seconds_before = time.perf_counter(), run.meta['train_seconds']
    self.window_start += time.perf_counter() - eval_start  # tokens/s counts training time only

  def flush(self) -> None:
    if self.last_metrics is not None:  # the newest update's metrics are still on the device
      self.window.append(self.check_finite(to_host(self.last_metrics), int(self.run.state.step)))
    if self.window:
      self.log_window(int(self.run.state.step))


def train_loop(run: Run, evaluator: Evaluator) -> dict:
  """Trains `run` to config.num_train_steps, its time limit, or a SIGTERM/SIGINT (then saves).

  Evaluates every eval_every_steps and at the end, checkpoints every checkpoint_every_steps.
  Returns the summary that is also written to metrics.jsonl (prefix summary_).
  """
  try:
    return _train(run, evaluator)
  finally:
    if run.lock is not None:
      run.lock.release()


def _train(run: Run, evaluator: Evaluator) -> dict:
  config = run.config
  loop = _Loop(run, evaluator)
  stopped_by = None  # a signal: save and leave
  ended_by = None    # the time limit: a normal end before num_train_steps
  with StopSignal() as stop:
    for step in range(int(run.state.step), config.num_train_steps):
      loop.step(step)
      done = step + 1
      time_up = bool(config.time_limit_minutes
                     and run.meta['train_seconds'] >= 60 * config.time_limit_minutes)
      if stop.received:
        stopped_by = stop.received
        break
      # The time limit is a normal end (evaluate, save, average), just an earlier one.
      if done % config.eval_every_steps == 0 or done == config.num_train_steps or time_up:
        loop.evaluate(done, final=done == config.num_train_steps or time_up)
      elif done % config.checkpoint_every_steps == 0:
        loop.save()
      if time_up:
        ended_by = 'time_limit_minutes'
        break
    loop.flush()
    if stopped_by:
      loop.save()
  loop.bar.close()
  run.checkpointer.wait()
  return _finish(run, evaluator, loop.writer, stopped_by, ended_by)


def _finish(run: Run, evaluator: Evaluator, writer: MetricsWriter, stopped_by, ended_by) -> dict:
  config, step = run.config, int(run.state.step)
  summary = {'step': step, 'train_minutes': round(run.meta['train_seconds'] / 60, 2),
             'best_bleu': run.meta['best_bleu'], 'best_step': run.checkpointer.best_step(),
             'stopped_by': stopped_by, 'ended_by': ended_by}
  if config.average_last_n > 1 and not stopped_by:
    summary['average'] = _evaluate_average(run, evaluator)
    writer.write(step, summary['average'], prefix='avg_')
  writer.write(step, {k: v for k, v in summary.items() if k != 'average'}, prefix='summary_')
  writer.close()
  run.checkpointer.close()
  print(f"done: step {summary['step']}, {summary['train_minutes']} train min, best val BLEU "
        f"{summary['best_bleu']} (step {summary['best_step']})"
        + (f', stopped by {stopped_by}' if stopped_by else '')
        + (f', ended by {ended_by}' if ended_by else ''))
  return summary


def _evaluate_average(run: Run, evaluator: Evaluator) -> dict:
  """Validation scores of the mean params of the last `average_last_n` checkpoints."""
  n, params_sh = run.config.average_last_n, jax.tree.map(lambda x: x.sharding, run.state.params)
  kept = len(run.checkpointer.all_steps())
  if kept < n:  # a short run (or a time limit) saved fewer: average those it has
    logging.warning('average_last_n=%d, but the run keeps %d checkpoints: averaging %d', n,
                    kept, kept)
    n = kept
  target = sharding.with_shardings(run.state.params, params_sh)
  params, description = select_params(run.checkpointer, target, f'average:{n}')
  results = evaluator.evaluate(jax.device_put(params, params_sh))
  results['checkpoints'] = description
  print(f"average of the last {n} checkpoints ({description}): "
        f"val loss {results['loss']:.3f}  BLEU {results['bleu']:.2f}")
  return results
