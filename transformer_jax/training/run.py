"""Building a run: config checks, the mesh, data, vocabulary, train state, resume, the steps.

    run = build_run(config, workdir)     # everything a training loop needs, resumed if saved
    train_loop(run, Evaluator.for_run(run))

`make_train_iterator` is a seam: tests and users hand in another batch source (one that
poisons a batch, one that reads two shards in one process) without patching modules.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

from absl import logging
import jax
from jax.experimental import multihost_utils

from transformer_jax import config_lib, sharding
from transformer_jax.data import eval_batches, pipeline, registry
from transformer_jax.errors import UserError
from transformer_jax.training.metrics_writer import truncate_metrics
from transformer_jax.training.train_step import (eval_step, init_train_state, make_optimizer,
                                                 train_step)
from transformer_jax.workdir import WorkDir


@dataclasses.dataclass
class Run:
  """What the loop drives. `state` is replaced by every step (its buffers are donated)."""
  config: Any
  workdir: WorkDir
  mesh: jax.sharding.Mesh
  splits: dict          # {'train', 'validation'}: random-access {language: text} sources
  vocab: Any
  graphdef: Any
  state: Any            # TrainState, sharded over the mesh
  state_shardings: Any
  train_iter: Any       # grain iterator of packed batches (get_state/set_state)
  eval_data: Any        # eval_batches.EvalBatches
  checkpointer: Any
  meta: dict            # train_seconds, best_bleu, vocabulary identity; saved with checkpoints
  dropout_key: jax.Array
  train_step: Callable  # jitted (state, batch, dropout_key) -> (state, device metrics)
  eval_step: Callable   # jitted (params, batch) -> summed device metrics
  is_chief: bool
  lock: Any = None      # WorkDirLock held by process 0 until train_loop ends


def load_data(config, workdir: WorkDir, pretrained=None):
  """(splits, vocab): process 0 prepares the data and trains the vocabulary (or copies the
  pretrained model's tokenizer); the others wait."""
  is_chief = jax.process_index() == 0
  if is_chief:  # one writer for config.json and the vocabulary; the others wait, then read
    workdir.write_or_check_config(config)
    workdir.check_data_fingerprint(registry.fingerprint(config.data))
    splits = registry.load_splits(config.data)
  if jax.process_count() > 1:
    # TFDS prepares data_dir in place: two processes preparing one shared data_dir race to
    # rename it into place (FileExistsError). Process 0 prepares; the rest then read.
    multihost_utils.sync_global_devices('data prepared')
  if not is_chief:
    splits = registry.load_splits(config.data)
  prepared_vocab = registry.prepared_vocab_path(config.data)
  if prepared_vocab is not None:  # the records hold ids of the vocabulary they were prepared with
    if pretrained is not None:
      raise config_lib.ConfigError(
          f'config key `init_from` cannot be combined with `data.dataset` = '
          f'{config.data.dataset!r}: its prepared token ids are of its own vocabulary, not of '
          'the imported model\'s tokenizer')
    if is_chief:
      workdir.adopt_vocab(prepared_vocab)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('vocabulary copied')
    return splits, workdir.load_vocab()
  if pretrained is not None:
    from transformer_jax.interop.marian_import import copy_tokenizer
    if is_chief:
      copy_tokenizer(pretrained, workdir.vocab_dir)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('tokenizer copied')
    return splits, workdir.load_vocab()
  vocab = workdir.load_or_train_vocab(config, splits[registry.TRAIN] if is_chief else None,
                                      wait_for_chief=jax.process_count() > 1)
  return splits, vocab


def build_run(config, workdir: str, *,
              make_train_iterator: Callable = pipeline.make_train_iterator) -> Run:
  """Checks `config`, locks `workdir`, builds everything, and resumes from its newest intact
  checkpoint if any. Process 0 holds the work directory's lock until train_loop ends."""
  pretrained = None
  if config.get('init_from'):  # fine-tuning: the checkpoint decides the architecture
    from transformer_jax.interop.marian_import import load_pretrained, with_architecture
    try:
      pretrained = load_pretrained(config.init_from)
    except UserError as e:
      raise config_lib.ConfigError(f'config key `init_from` = {config.init_from!r}: {e}') from None
    config = with_architecture(config, pretrained)
    for key in ('data.max_length', 'eval.max_decode_length'):
      section, field = key.split('.')
      if config[section][field] > pretrained.max_positions:
        # Our sinusoids would run, but the exported model could not: transformers' and
        # CTranslate2's position tables end at max_position_embeddings.
        raise config_lib.ConfigError(
            f'config key `{key}` = {config[section][field]} exceeds the {pretrained.max_positions}'
            f' positions of the model in `init_from` = {config.init_from!r} '
            '(max_position_embeddings): lower it to at most that')
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_rows(config.batch_tokens // config.data.max_length, mesh)
  sharding.check_batch_rows(config.eval.batch_size, mesh)
  workdir = WorkDir(workdir)
  lock = workdir.lock().acquire() if jax.process_index() == 0 else None
  try:
    return _build(config, workdir, mesh, make_train_iterator, lock, pretrained)
  except BaseException:
    if lock is not None:
      lock.release()
    raise


def _build(config, workdir: WorkDir, mesh, make_train_iterator: Callable, lock,
           pretrained=None) -> Run:
  splits, vocab = load_data(config, workdir, pretrained)
  src, tgt = config.data.source_lang, config.data.target_lang
  model = config_lib.build_model(config, vocab.size, **config_lib.special_ids(vocab))
  if pretrained is not None:  # a checkpoint of the run, if any, replaces these below
    _load_pretrained_params(model, pretrained.params)
  tx, schedule = make_optimizer(config.optimizer, d_model=config.model.d_model,
                                total_steps=config.num_train_steps)
  graphdef, state = init_train_state(model, tx, ema=config.ema_decay > 0)
  del model
  state_sh = sharding.state_shardings(state, tx, mesh)
  state = jax.device_put(state, state_sh)
  # Each process reads its own shard of the data and feeds its rows of the global batch.
  train_iter = make_train_iterator(splits[registry.TRAIN], vocab, source_lang=src, target_lang=tgt,
                                   batch_tokens=config.batch_tokens // jax.process_count(),
                                   max_length=config.data.max_length, seed=config.seed,
                                   shard_index=jax.process_index(),
                                   shard_count=jax.process_count(),
                                   num_workers=pipeline.resolve_num_workers(
                                       config.data.get('num_workers', 0)))
  eval_data = eval_batches.make_eval_batches(
      splits[registry.VALIDATION], vocab, source_lang=src, target_lang=tgt,
      batch_size=config.eval.batch_size, max_length=config.data.max_length)
  checkpointer = workdir.checkpointer(keep=config.keep_checkpoints)
  meta = {'train_seconds': 0.0, 'best_bleu': None, **workdir.vocab_meta(vocab)}
  state, meta = _resume(checkpointer, state, state_sh, train_iter, meta)
  step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                      label_smoothing=config.label_smoothing,
                                      ema_decay=config.ema_decay),
                    in_shardings=(state_sh, sharding.batch_sharding(mesh), None),
                    out_shardings=(state_sh, None), donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef,
                                      label_smoothing=config.label_smoothing))
  return Run(config=config, workdir=workdir, mesh=mesh, splits=splits, vocab=vocab,
             graphdef=graphdef, state=state, state_shardings=state_sh, train_iter=train_iter,
             eval_data=eval_data, checkpointer=checkpointer, meta=meta,
             dropout_key=jax.random.key(config.seed), train_step=step_fn, eval_step=eval_fn,
             is_chief=jax.process_index() == 0, lock=lock)


def _load_pretrained_params(model, params: dict) -> None:
  """Sets the model's weights to the imported ones (cast to the model's param dtype)."""
  from flax import nnx
  _, state = nnx.split(model, nnx.Param)
  dtypes = nnx.to_pure_dict(jax.tree.map(lambda x: x.dtype, state))
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda w, dt: jax.numpy.asarray(w, dt),
                                               params, dtypes))
  nnx.update(model, state)


def _resume(checkpointer, state, state_sh, train_iter, meta):
  """(state, meta) of the newest intact checkpoint, with the data iterator set to it;
  unchanged when there is none. Damaged newer steps are moved aside first."""
  step = checkpointer.newest_intact_step()
  if step is None:
    return state, meta
  state, meta = checkpointer.restore(sharding.with_shardings(state, state_sh), step)
  state = state.replace(step=jax.device_put(state.step, state_sh.step))
  train_iter.set_state(meta['data_iterator'])
  if jax.process_index() == 0:  # the steps logged after this checkpoint are trained again
    dropped = truncate_metrics(os.path.dirname(checkpointer.directory), step)
    if dropped:
      logging.info('metrics.jsonl: dropped %d records after step %d (retrained now)', dropped,
                   step)
  logging.info('Resumed from step %d in %s', meta['step'], checkpointer.directory)
  return state, meta
