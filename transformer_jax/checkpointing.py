"""Orbax checkpoints of a training run: params, optimizer, step, seed, data-iterator state.

Layout: <workdir>/checkpoints/<step>/{params,opt_state,meta[,ema_params]}. Orbax writes a
step into a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoints intact.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import glob
import os
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from transformer_jax.checkpoint_integrity import CheckpointError, Integrity

BLEU_KEY = 'bleu'
EMA_ITEM = 'ema_params'


def _encode_iter_state(state: Any) -> Any:
  if isinstance(state, bytes):  # grain DataLoader states are bytes; JSON wants text
    return {'bytes_b64': base64.b64encode(state).decode('ascii')}
  return state


def decode_iter_state(state: Any) -> Any:
  if isinstance(state, dict) and set(state) == {'bytes_b64'}:
    return base64.b64decode(state['bytes_b64'])
  return state


class Checkpointer:
  """Keeps the last `keep` checkpoints plus the best one by validation BLEU."""

  def __init__(self, workdir: str, keep: int = 5, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda m: m[BLEU_KEY], reverse=False, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    # best_fn only switches on orbax's metric storage; the policy above decides what stays.
    # cleanup_tmp_directories: a process killed mid-save leaves <step>.orbax-checkpoint-tmp
    # behind (a checkpoint's size each); the resuming run deletes them.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=not read_only,
                                           read_only=read_only, best_fn=lambda m: m[BLEU_KEY],
                                           best_mode='max', cleanup_tmp_directories=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('params', 'opt_state', 'meta', EMA_ITEM))
    self.integrity = Integrity(self.directory)
    self.read_only = read_only

  def save(self, state, meta: dict, metrics: dict | None = None) -> None:
    step = int(jax.device_get(state.step))
    meta = {**meta, 'step': step}
    if 'data_iterator' in meta:
      meta['data_iterator'] = _encode_iter_state(meta['data_iterator'])
    if step in self.manager.all_steps():
      return
    items = dict(params=ocp.args.StandardSave(state.params),
                 opt_state=ocp.args.StandardSave(state.opt_state), meta=ocp.args.JsonSave(meta))
    if state.ema_params is not None:
      items[EMA_ITEM] = ocp.args.StandardSave(state.ema_params)
    self.wait()  # the previous save is finished and has its manifest
    self._check_free_space(step, state)
    with self._disk_full_is_an_error(step):
      self.manager.save(step, args=ocp.args.Composite(**items), force=True,
                        metrics=None if metrics is None else {BLEU_KEY: float(metrics[BLEU_KEY])})

  def _check_free_space(self, step: int, state) -> None:
    """Refuses to start a save the disk cannot hold (orbax would die half-way through)."""
    trees = (state.params, state.opt_state, state.ema_params)
    needed = sum(getattr(x, 'nbytes', 0) for x in jax.tree.leaves(trees)) * 1.05 + (1 << 20)
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      raise CheckpointError(self._no_space_message(step, needed, free))

  def _no_space_message(self, step: int, needed: float | None, free: int) -> str:
    need = f'~{needed / 2**20:.0f} MB, ' if needed else ''
    return (f'not enough disk space to save checkpoint {step} in {self.directory}: it needs '
            f'{need}{free / 2**20:.0f} MB are free. Free some space and run again: it resumes '
            'from the last checkpoint, which is intact')

  @contextlib.contextmanager
  def _disk_full_is_an_error(self, step):
    """An ENOSPC from orbax becomes one clear error; its temporary directory is removed."""
    try:
      yield
    except OSError as e:
      if e.errno != errno.ENOSPC:
        raise
      self.remove_temporary_directories()
      raise CheckpointError(self._no_space_message(
          step, None, shutil.disk_usage(self.directory).free)) from e

  def remove_temporary_directories(self) -> None:
    """The `<step>.orbax-checkpoint-tmp*` a failed or killed save leaves (a checkpoint each)."""
    for path in glob.glob(os.path.join(self.directory, '*.orbax-checkpoint-tmp*')):
      shutil.rmtree(path, ignore_errors=True)

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step` (default: latest); abstract_state gives structure and shardings."""
    step = self.latest_step() if step is None else step
    items = dict(params=ocp.args.StandardRestore(abstract_state.params),
                 opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                 meta=ocp.args.JsonRestore())
    if abstract_state.ema_params is not None:
      if not self.has_ema(step):
        raise ValueError(f'checkpoint {step} in {self.directory} has no EMA params but the config '
                         'sets ema_decay > 0: resume with the ema_decay the run was started with')
      items[EMA_ITEM] = ocp.args.StandardRestore(abstract_state.ema_params)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    meta = dict(out['meta'])
    if 'data_iterator' in meta:
      meta['data_iterator'] = decode_iter_state(meta['data_iterator'])
    state = abstract_state.replace(step=np.int32(meta['step']), params=out['params'],
                                   opt_state=out['opt_state'],
                                   ema_params=out[EMA_ITEM] if EMA_ITEM in items else None)
    return state, meta

  def read_meta(self, step: int) -> dict:
    """The meta item of checkpoint `step` (step, train seconds, vocabulary hash, ...)."""
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out['meta'])

  def has_ema(self, step: int) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), EMA_ITEM))

  def restore_params(self, abstract_params, step: int, ema: bool = True):
    """The params of `step`: its EMA params when it has them and `ema` is set."""
    item = EMA_ITEM if ema and self.has_ema(step) else 'params'
    out = self.manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.StandardRestore(abstract_params)}))
    return out[item]

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self, intact_only: bool = False) -> int | None:
    """The step with the highest validation BLEU among the kept (and intact) checkpoints."""
    scored = sorted(((m[BLEU_KEY], s) for s in self.all_steps()
                     if (m := self.manager.metrics(s)) is not None and BLEU_KEY in m),
                    reverse=True)
    return next((s for _, s in scored if not (intact_only and self.problem(s))), None)

  def wait(self) -> None:
    """Waits for an async save to finish, then records the manifests of finished steps."""
    with self._disk_full_is_an_error(self.latest_step()):
      self.manager.wait_until_finished()
    if not self.read_only and jax.process_index() == 0:
      for step in self.all_steps():
        self.integrity.write_manifest(step)

  def close(self) -> None:
    self.wait()
    self.manager.close()

  def problem(self, step: int) -> str | None:
    """None if checkpoint `step` is intact, else what is damaged (`checkpoint_integrity`)."""
    return self.integrity.problem(step)

  def newest_intact_step(self) -> int | None:
    """The step to resume from: damaged newer steps are moved aside (logged, never deleted).

    Raises CheckpointError when there are checkpoints but none is intact.
    """
    steps, damaged = self.all_steps(), []
    for step in reversed(steps):
      problem = self.problem(step)
      if problem is None:
        break
      # One process moves it (others see the same damage and skip it); read-only: skip only.
      moved = None if self.read_only or jax.process_index() else self.integrity.quarantine(step)
      logging.warning('checkpoint %d in %s is damaged (%s); %s', step, self.directory, problem,
                      f'moved to {moved}' if moved else 'skipped')
      damaged.append(f'{step} ({problem})')
    else:
      if steps:
        raise CheckpointError(f'no intact checkpoint in {self.directory}: {"; ".join(damaged)}. '
                              'Restore them or train into a new --workdir')
      return None
    if damaged and not self.read_only and jax.process_index() == 0:
      self.manager.reload()
    return step


# Selection lives in checkpoint_selection.py; these names stay importable from here.
from transformer_jax.checkpoint_selection import (  # noqa: E402,F401
    CHECKPOINT_CHOICES, average_params, check_checkpoint_choice, resolve_steps, select_params)
