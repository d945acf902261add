"""The train and eval steps: pure functions of (state, batch), compiled with jax.jit.

A batch is a dict of int32 [B, L] arrays: inputs, inputs_segmentation,
inputs_position, decoder_inputs, targets, targets_segmentation,
targets_position (segmentation 0 = padding; see data/pipeline.py).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from transformer_jax.training.losses import masked_token_metrics
from transformer_jax.training.schedules import make_schedule


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: number of updates applied
  params: Any              # nnx.State of the model's Params
  opt_state: Any
  ema_params: Any = None   # exponential moving average of params (None: no EMA)

  @property
  def eval_params(self):
    """The params to evaluate and translate with: the EMA when there is one."""
    return self.params if self.ema_params is None else self.ema_params


def make_optimizer(opt_cfg, *, d_model: int, total_steps: int):
  """Adam(β1, β2, ε) with the paper's schedule, optional clipping and decoupled weight decay.

  Returns (optax transformation, schedule fn).
  """
  schedule = make_schedule(opt_cfg.schedule, d_model=d_model, warmup_steps=opt_cfg.warmup_steps,
                           scale=opt_cfg.learning_rate_scale, total_steps=total_steps,
                           cooldown_steps=opt_cfg.cooldown_steps)
  parts = []
  if opt_cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  if opt_cfg.weight_decay:
    parts.append(optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                             weight_decay=opt_cfg.weight_decay,
                             mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))
  else:
    parts.append(optax.adam(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps))
  return optax.chain(*parts), schedule


def init_train_state(model: nnx.Module, tx, *, ema: bool = False) -> tuple[Any, TrainState]:
  graphdef, params = nnx.split(model, nnx.Param)
  ema_params = jax.tree.map(jnp.copy, params) if ema else None
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params), ema_params=ema_params)


def ema_update(ema_params, params, step, decay: float):
  """ema ← d·ema + (1−d)·params with d = min(decay, (1+step)/(10+step)).

  The warm-up of d keeps the first updates from averaging in the random init
  (the EMA starts as a copy of the initial params); `step` counts updates from 1.
  """
  step = jnp.asarray(step, jnp.float32)
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema_params, params)


def _forward(graphdef, params, batch, dropout_rng):
  model = nnx.merge(graphdef, params)
  return model(batch['inputs'], batch['decoder_inputs'],
               inputs_segmentation=batch['inputs_segmentation'],
               targets_segmentation=batch['targets_segmentation'],
               inputs_position=batch['inputs_position'],
               targets_position=batch['targets_position'], dropout_rng=dropout_rng)


def train_step(state: TrainState, batch, dropout_key, *, graphdef, tx, schedule,
               label_smoothing: float, ema_decay: float = 0.0):
  """One update. Dropout key = fold_in(dropout_key, step): reproducible on resume.

  With `state.ema_params` set, it also moves the EMA towards the new params.
  """
  step_key = jax.random.fold_in(dropout_key, state.step)
  weights = batch['targets_segmentation'] != 0

  def loss_fn(params):
    logits = _forward(graphdef, params, batch, step_key)
    sums = masked_token_metrics(logits, batch['targets'], weights, label_smoothing)
    return sums['loss_sum'] / jnp.maximum(sums['num_tokens'], 1.0), sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**sums, 'learning_rate': schedule(state.step), 'grad_norm': optax.global_norm(grads)}
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = ema_update(ema_params, params, state.step + 1, ema_decay)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                    ema_params=ema_params), metrics


def eval_step(params, batch, *, graphdef, label_smoothing: float):
  """Loss sums over a validation batch (no dropout)."""
  logits = _forward(graphdef, params, batch, None)
  return masked_token_metrics(logits, batch['targets'], batch['targets_segmentation'] != 0,
                              label_smoothing)
