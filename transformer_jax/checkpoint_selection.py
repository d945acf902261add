"""Which checkpoint(s) a run evaluates or translates with: 'best', 'latest', a step, or the
average of the last N — intact ones only (`Checkpointer.problem`)."""
from __future__ import annotations

from typing import Any

from absl import logging
import jax
import numpy as np

from transformer_jax.checkpoint_integrity import CheckpointError


def average_params(param_trees: list) -> Any:
  """Element-wise mean of several parameter trees (checkpoint averaging)."""
  if not param_trees:
    raise ValueError('average_params needs at least one parameter tree')
  n = len(param_trees)
  return jax.tree.map(lambda *xs: sum(x.astype(np.float32) for x in xs[1:]) / n
                      + xs[0].astype(np.float32) / n, *param_trees)


CHECKPOINT_CHOICES = 'best, latest, a step number, or average:N (the last N, N >= 1)'


def check_checkpoint_choice(which) -> str:
  """`which` as a string if it names checkpoints in a valid form; ValueError saying why not."""
  which = str(which)
  average = which.startswith('average:')
  count = which.split(':', 1)[1] if average else None
  if not (which in ('best', 'latest') or which.isdigit() or (average and count.isdigit())):
    hint = ' (it has surrounding whitespace)' if which != which.strip() else ''
    raise ValueError(f'checkpoint {which!r}{hint}: use {CHECKPOINT_CHOICES}')
  if average and int(count) < 1:
    raise ValueError(f'checkpoint {which!r}: average:N needs N >= 1')
  return which


def resolve_steps(checkpointer, which: str = 'best') -> list[int]:
  """The steps named by `which`: 'best', 'latest', a step number, or 'average:N' (last N).

  Raises FileNotFoundError when nothing fits, ValueError for a malformed `which` (naming
  it and the valid forms).
  """
  which = check_checkpoint_choice(which)
  count = which.split(':', 1)[1] if which.startswith('average:') else None
  all_steps = checkpointer.all_steps()
  if not all_steps:
    raise FileNotFoundError(f'no checkpoints in {checkpointer.directory}: the run has not saved '
                            'one yet (train longer, or check --workdir)')
  if which.isdigit():
    if int(which) not in all_steps:
      raise FileNotFoundError(f'no checkpoint for step {which} in {checkpointer.directory}; '
                              f'available: {all_steps}')
    if problem := checkpointer.problem(int(which)):
      raise CheckpointError(f'checkpoint {which} in {checkpointer.directory} is damaged '
                            f'({problem}): choose another (--checkpoint latest skips it)')
    return [int(which)]
  if which == 'best' and (best := checkpointer.best_step(intact_only=True)) is not None:
    return [best]
  wanted = int(count) if count else 1  # 'latest', or 'best' when no step has a BLEU
  steps = _newest_intact(checkpointer, all_steps, wanted)
  if len(steps) < wanted:
    raise ValueError(f'checkpoint {which!r}: {checkpointer.directory} keeps {len(steps)} intact '
                     f'checkpoints ({steps}), fewer than {count}')
  return steps


def _newest_intact(checkpointer, steps: list[int], wanted: int) -> list[int]:
  """Up to `wanted` of the newest intact `steps`, oldest first; the damaged ones are logged.

  Raises CheckpointError when none is intact. Steps are checked newest first, and only as
  far as needed (a check reads the files).
  """
  intact = []
  for step in reversed(steps):
    if len(intact) == wanted:
      break
    if problem := checkpointer.problem(step):
      logging.warning('skipping checkpoint %d in %s: it is damaged (%s)', step,
                      checkpointer.directory, problem)
    else:
      intact.append(step)
  if not intact:
    raise CheckpointError(f'every checkpoint in {checkpointer.directory} is damaged: restore '
                          'them, or train again')
  return intact[::-1]


def select_params(checkpointer, abstract_params, which: str = 'best',
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
