"""Learning-rate schedules as pure functions of the step."""
from __future__ import annotations

import jax.numpy as jnp

from transformer_jax.config_lib import SCHEDULES  # noqa: F401 (the names config validation accepts)


def rsqrt_schedule(step, *, d_model: int, warmup_steps: int, scale: float = 1.0):
  """lr = scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)   (paper eq. 3).

  Rises linearly for `warmup_steps`, peaks at scale·(d_model·warmup)^-0.5, then
  decays as 1/√step. `step` counts from 1 (step 0 gives 0).
  """
  step = jnp.asarray(step, jnp.float32)
  safe = jnp.maximum(step, 1.0)
  lr = scale * d_model ** -0.5 * jnp.minimum(safe ** -0.5, step * warmup_steps ** -1.5)
  return jnp.where(step > 0, lr, 0.0)


def rsqrt_cooldown_schedule(step, *, d_model: int, warmup_steps: int, scale: float,
                            total_steps: int, cooldown_steps: int):
  """The paper's schedule, then a linear ramp to 0 over the last `cooldown_steps`.

  A fixed training budget ends better at lr 0 than at the middle of a 1/√step
  tail; this keeps the paper's shape until the cool-down starts.
  """
  lr = rsqrt_schedule(step, d_model=d_model, warmup_steps=warmup_steps, scale=scale)
  start = total_steps - cooldown_steps
  frac = jnp.clip((total_steps - jnp.asarray(step, jnp.float32)) / max(cooldown_steps, 1), 0.0, 1.0)
  at_start = rsqrt_schedule(start, d_model=d_model, warmup_steps=warmup_steps, scale=scale)
  return jnp.where(step < start, lr, at_start * frac)


def make_schedule(name: str, *, d_model: int, warmup_steps: int, scale: float, total_steps: int,
                  cooldown_steps: int = 0):
  """A step -> lr callable (optax schedules count from 0: we shift to count from 1)."""
  if name == 'rsqrt':
    return lambda count: rsqrt_schedule(count + 1, d_model=d_model, warmup_steps=warmup_steps,
                                        scale=scale)
  if name == 'rsqrt_cooldown':
    return lambda count: rsqrt_cooldown_schedule(
        count + 1, d_model=d_model, warmup_steps=warmup_steps, scale=scale,
        total_steps=total_steps, cooldown_steps=cooldown_steps)
  raise ValueError(f'optimizer.schedule={name!r}; valid: {SCHEDULES}')
