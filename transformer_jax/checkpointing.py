"""Orbax checkpoints of a training run: params, optimizer, step, seed, data-iterator state.

Layout: <workdir>/checkpoints/<step>/{params,opt_state,meta[,ema_params]}. Orbax writes a
step into a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous checkpoints intact.
"""
from __future__ import annotations

import base64
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

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
    self.manager.save(step, args=ocp.args.Composite(**items),
        metrics=None if metrics is None else {BLEU_KEY: float(metrics[BLEU_KEY])}, force=True)

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

  def best_step(self) -> int | None:
    """The step with the highest validation BLEU among the kept checkpoints."""
    scored = [(m[BLEU_KEY], s) for s in self.all_steps()
              if (m := self.manager.metrics(s)) is not None and BLEU_KEY in m]
    return max(scored)[1] if scored else None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def average_params(param_trees: list) -> Any:
  """Element-wise mean of several parameter trees (checkpoint averaging)."""
  if not param_trees:
    raise ValueError('average_params needs at least one parameter tree')
  n = len(param_trees)
  return jax.tree.map(lambda *xs: sum(x.astype(np.float32) for x in xs[1:]) / n
                      + xs[0].astype(np.float32) / n, *param_trees)


def resolve_steps(checkpointer: Checkpointer, which: str = 'best') -> list[int]:
  """The steps named by `which`: 'best', 'latest', a step number, or 'average:N' (last N).

  Raises FileNotFoundError when nothing fits, ValueError for an unknown `which`.
  """
  steps = checkpointer.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {checkpointer.directory}: the run has not saved '
                            'one yet (train longer, or check --workdir)')
  which = str(which)
  if which == 'latest':
    return [steps[-1]]
  if which == 'best':
    return [checkpointer.best_step() or steps[-1]]
  if which.startswith('average:'):
    return steps[-int(which.split(':', 1)[1]):]
  if which.isdigit():
    if int(which) not in steps:
      raise FileNotFoundError(f'no checkpoint for step {which} in {checkpointer.directory}; '
                              f'available: {steps}')
    return [int(which)]
  raise ValueError(f'checkpoint {which!r}: use best, latest, a step number or average:N')


def select_params(checkpointer: Checkpointer, abstract_params, which: str = 'best',
                  ema: bool = True):
  """Params named by `which` (see `resolve_steps`); 'average:N' averages the last N.

  A run trained with an EMA (ema_decay > 0) evaluates and translates with its EMA
  params unless `ema` is False; the description says which.

  Returns (params, description). Raises FileNotFoundError when nothing fits.
  """
  chosen = resolve_steps(checkpointer, which)
  note = ' (EMA params)' if ema and checkpointer.has_ema(chosen[-1]) else ''
  if str(which).startswith('average:'):
    trees = [checkpointer.restore_params(abstract_params, s, ema) for s in chosen]
    return average_params(trees), f'average of steps {chosen}{note}'
  step = chosen[0]
  return checkpointer.restore_params(abstract_params, step, ema), f'step {step}{note}'
