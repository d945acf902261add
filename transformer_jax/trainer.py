"""The training loop: train, evaluate, checkpoint, resume. Importable from notebooks.

    from transformer_jax.trainer import train_and_evaluate
    summary = train_and_evaluate(config, workdir)
"""
from __future__ import annotations

import functools
import math
import os
import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from tqdm.auto import tqdm

from transformer_jax import config_lib, decoding, evaluation, run_setup, sharding
from transformer_jax.checkpointing import Checkpointer
from transformer_jax.data import make_eval_batches, make_train_iterator
from transformer_jax.metrics_writer import MetricsWriter
from transformer_jax.sharding import to_host
from transformer_jax.train_step import eval_step, init_train_state, make_optimizer, summarize
from transformer_jax.train_step import train_step as train_step_fn
from transformer_jax.translator import file_sha256


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left untouched."""


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps (then saves and exits)."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _bleu(config, decode, params, eval_data, vocab) -> dict:
  n = config.eval.num_bleu_sentences or len(eval_data.references)
  rows = evaluation.decode_batches(decode, params, [b['inputs'] for b in eval_data.batches][
      :math.ceil(n / config.eval.batch_size)])
  hyps = [vocab.decode(r) for r in rows[:n]]
  return evaluation.bleu_report(hyps, eval_data.references[:n])


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns a summary."""
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)
  mesh = sharding.make_mesh(config.mesh)
  rows = config.batch_tokens // config.data.max_length
  sharding.check_batch_rows(rows, mesh)
  sharding.check_batch_rows(config.eval.batch_size, mesh)
  is_chief = jax.process_index() == 0
  if is_chief:  # one writer for config.json and the vocabulary; the others wait, then read
    run_setup.write_or_check_config(config, workdir)
    sources = run_setup.load_sources(config)
  if jax.process_count() > 1:
    # TFDS prepares data_dir in place: two processes preparing one shared data_dir race to
    # rename it into place (FileExistsError). Process 0 prepares; the rest then read.
    multihost_utils.sync_global_devices('data prepared')
  if not is_chief:
    sources = run_setup.load_sources(config)
  vocab = run_setup.load_vocab(config, workdir, sources['train'] if is_chief else None,
                               wait_for_chief=jax.process_count() > 1)
  src, tgt = config.data.source_lang, config.data.target_lang

  model = run_setup.build_model(config, vocab.size)
  tx, schedule = make_optimizer(config.optimizer, d_model=config.model.d_model,
                                total_steps=config.num_train_steps)
  graphdef, state = init_train_state(model, tx, ema=config.ema_decay > 0)
  del model
  state_sh = sharding.state_shardings(state, tx, mesh)
  state = jax.device_put(state, state_sh)
  # Each process reads its own shard of the data and feeds its rows of the global batch.
  train_iter = make_train_iterator(sources['train'], vocab, source_lang=src, target_lang=tgt,
                                   batch_tokens=config.batch_tokens // jax.process_count(),
                                   max_length=config.data.max_length, seed=config.seed,
                                   shard_index=jax.process_index(),
                                   shard_count=jax.process_count())
  eval_data = make_eval_batches(sources['validation'], vocab, source_lang=src, target_lang=tgt,
                                batch_size=config.eval.batch_size,
                                max_length=config.data.max_length)

  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  meta = {'train_seconds': 0.0, 'best_bleu': None, 'vocab_size': vocab.size,
          'vocab_sha256': file_sha256(vocab.path)}
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(sharding.with_shardings(state, state_sh))
    state = state.replace(step=jax.device_put(state.step, state_sh.step))
    train_iter.set_state(meta['data_iterator'])
    logging.info('Resumed from step %d in %s', meta['step'], checkpointer.directory)
  dropout_key = jax.random.key(config.seed)

  batch_sh = sharding.batch_sharding(mesh)
  step_fn = jax.jit(functools.partial(train_step_fn, graphdef=graphdef, tx=tx, schedule=schedule,
                                      label_smoothing=config.label_smoothing,
                                      ema_decay=config.ema_decay),
                    in_shardings=(state_sh, batch_sh, None), out_shardings=(state_sh, None),
                    donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef,
                                      label_smoothing=config.label_smoothing))
  decode = decoding.make_decoder(graphdef, decoding.beam_search, beam_size=config.eval.beam_size,
                                 alpha=config.eval.alpha, max_length=config.eval.max_decode_length)
  writer = MetricsWriter(workdir, enabled=is_chief)
  eval_data.batches = [sharding.global_batch(_local_rows(b), mesh) for b in eval_data.batches]

  def save(metrics=None):
    if not _all_finite(last_metrics):
      checkpointer.wait()  # an async save of the last good state may still be in flight
      raise NonFiniteLossError(_nan_message(int(state.step)))
    checkpointer.save(state, {**meta, 'data_iterator': train_iter.get_state()}, metrics)

  first_step = int(state.step)
  last_metrics = None  # device metrics of the newest dispatched step, fetched one step late
  window, window_start, train_start = [], time.perf_counter(), time.perf_counter()
  seconds_before = meta['train_seconds']
  bar = tqdm(total=config.num_train_steps, initial=first_step, desc='train', unit='step',
             disable=not is_chief, dynamic_ncols=True)
  stopped_by = None  # a signal: save and leave
  ended_by = None    # the time limit: a normal end before num_train_steps

  def log_window(last_step):
    """Writes the train metrics of the steps in `window`, which ends at update `last_step`."""
    nonlocal window, window_start
    logged = _log_window(window, time.perf_counter() - window_start)
    writer.write(last_step, logged)
    bar.set_postfix(loss=f"{logged['loss']:.3f}", lr=f"{logged['learning_rate']:.2e}",
                    tok_s=f"{logged['target_tokens_per_s']:.0f}")
    window, window_start = [], time.perf_counter()

  with _StopSignal() as stop:
    for step in range(first_step, config.num_train_steps):
      batch = sharding.global_batch(next(train_iter), mesh)
      previous = last_metrics  # of update number `step` (updates count from 1)
      state, last_metrics = step_fn(state, batch, dropout_key)
      if previous is not None:
        window.append(_check_finite(to_host(previous), step, checkpointer))
        if step % config.log_every_steps == 0:
          log_window(step)
      bar.update(1)
      done = step + 1
      meta['train_seconds'] = seconds_before + time.perf_counter() - train_start
      time_up = (config.time_limit_minutes
                 and meta['train_seconds'] >= 60 * config.time_limit_minutes)
      if stop.received:
        stopped_by = stop.received
        break
      # The time limit is a normal end (evaluate, save, average), just an earlier one.
      if done % config.eval_every_steps == 0 or done == config.num_train_steps or time_up:
        eval_start = time.perf_counter()
        results = _evaluate(config, eval_fn, decode, state.eval_params, eval_data, vocab)
        if state.ema_params is not None:  # measures what the EMA buys: the raw params' scores
          final = done == config.num_train_steps or time_up
          raw = (_evaluate(config, eval_fn, decode, state.params, eval_data, vocab) if final
                 else evaluation.eval_loss(eval_fn, state.params, eval_data.batches))
          results.update({f'raw_{k}': v for k, v in raw.items() if 'signature' not in k})
        results['train_minutes'] = meta['train_seconds'] / 60
        meta['best_bleu'] = max(meta['best_bleu'] or 0.0, results['bleu'])
        writer.write(done, results, prefix='eval_')
        logging.info('step %d: %s (eval took %.1fs)', done, results,
                     time.perf_counter() - eval_start)
        bar.write(f"step {done}: val loss {results['loss']:.3f}  BLEU {results['bleu']:.2f}  "
                  f"({results['train_minutes']:.1f} train min)")
        save(results)
        train_start, seconds_before = time.perf_counter(), meta['train_seconds']
        window_start += time.perf_counter() - eval_start  # tokens/s counts training time only
      elif done % config.checkpoint_every_steps == 0:
        save()
      if time_up:
        ended_by = 'time_limit_minutes'
        break
    if last_metrics is not None:  # the newest update's metrics are still on the device
      window.append(_check_finite(to_host(last_metrics), int(state.step), checkpointer))
    if window:
      log_window(int(state.step))
    if stopped_by:
      save()
  bar.close()
  checkpointer.wait()
  summary = {'step': int(state.step), 'train_minutes': round(meta['train_seconds'] / 60, 2),
             'best_bleu': meta['best_bleu'], 'best_step': checkpointer.best_step(),
             'stopped_by': stopped_by, 'ended_by': ended_by}
  if config.average_last_n > 1 and not stopped_by:
    summary['average'] = _evaluate_average(config, checkpointer, state, eval_fn, decode, eval_data,
                                           vocab)
    writer.write(int(state.step), summary['average'], prefix='avg_')
  writer.write(int(state.step), {k: v for k, v in summary.items() if k != 'average'},
               prefix='summary_')
  writer.close()
  checkpointer.close()
  print(f"done: step {summary['step']}, {summary['train_minutes']} train min, best val BLEU "
        f"{summary['best_bleu']} (step {summary['best_step']})"
        + (f', stopped by {stopped_by}' if stopped_by else '')
        + (f', ended by {ended_by}' if ended_by else ''))
  return summary


def quiet_libraries() -> None:
  """orbax and tfds log every file they touch at INFO; keep the console for the progress bar."""
  import logging as std_logging
  logging.set_verbosity(logging.WARNING)
  for name in ('orbax', 'absl', 'tensorflow_datasets', 'jax'):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def _evaluate_average(config, checkpointer, state, eval_fn, decode, eval_data, vocab) -> dict:
  """Validation scores of the mean params of the last `average_last_n` checkpoints."""
  from transformer_jax.checkpointing import select_params
  target = sharding.with_shardings(state.params, jax.tree.map(lambda x: x.sharding, state.params))
  params, description = select_params(checkpointer, target, f'average:{config.average_last_n}')
  params = jax.device_put(params, jax.tree.map(lambda x: x.sharding, state.params))
  results = _evaluate(config, eval_fn, decode, params, eval_data, vocab)
  results['checkpoints'] = description
  print(f"average of the last {config.average_last_n} checkpoints ({description}): "
        f"val loss {results['loss']:.3f}  BLEU {results['bleu']:.2f}")
  return results


def _evaluate(config, eval_fn, decode, params, eval_data, vocab) -> dict:
  results = evaluation.eval_loss(eval_fn, params, eval_data.batches)
  results.update(_bleu(config, decode, params, eval_data, vocab))
  return results


def _log_window(window, seconds) -> dict:
  totals = {k: sum(float(m[k]) for m in window) for k in ('loss_sum', 'nll_sum', 'correct_sum',
                                                          'num_tokens')}
  totals.update(learning_rate=window[-1]['learning_rate'], grad_norm=window[-1]['grad_norm'])
  logged = summarize(totals)
  logged['target_tokens_per_s'] = totals['num_tokens'] / max(seconds, 1e-9)
  return logged


def _local_rows(batch: dict) -> dict:
  """This process's slice of an eval batch that every process holds in full."""
  n, i = jax.process_count(), jax.process_index()
  rows = next(iter(batch.values())).shape[0] // n
  return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}


def _nan_message(step: int) -> str:
  return (f'non-finite loss at step {step}: training stopped; the last good checkpoint is kept. '
          'Lower optimizer.learning_rate_scale, set optimizer.grad_clip_norm, or check the data.')


def _all_finite(device_metrics) -> bool:
  return device_metrics is None or bool(np.isfinite(float(to_host(device_metrics)['loss_sum'])))


def _check_finite(metrics, step: int, checkpointer: Checkpointer) -> dict:
  if not np.isfinite(float(metrics['loss_sum'])):
    checkpointer.wait()  # an async save of the last good state may still be in flight
    raise NonFiniteLossError(_nan_message(step))
  return metrics
