"""The learning-rate schedule and the label-smoothed loss against hand computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.training.losses import (label_is_a_top_prediction, label_smoothed_cross_entropy,
                                   masked_token_metrics)
from transformer_jax.training.schedules import make_schedule, rsqrt_cooldown_schedule, rsqrt_schedule

D_MODEL, WARMUP = 512, 4000


def _paper_lr(step, d_model=D_MODEL, warmup=WARMUP, scale=1.0):
  """Eq. 3 of the paper, written out with Python floats."""
  return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def _lr(step, **kwargs):
  return float(rsqrt_schedule(step, **{'d_model': D_MODEL, 'warmup_steps': WARMUP, **kwargs}))


# --- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize('step', [1, 2, 100, 3999, 4000, 4001, 10_000, 100_000])
def test_rsqrt_matches_the_paper_formula(step):
  assert _lr(step) == pytest.approx(_paper_lr(step), rel=1e-6)


def test_rsqrt_known_values():
  # 512^-0.5 · 4000^-1.5 and 512^-0.5 · 4000^-0.5, computed by hand.
  assert _lr(1) == pytest.approx(1.7469281e-07, rel=1e-6)
  assert _lr(4000) == pytest.approx(6.9877124e-04, rel=1e-6)
  assert _lr(16_000) == pytest.approx(6.9877124e-04 / 2, rel=1e-6)
  assert _lr(0) == 0.0


@pytest.mark.parametrize('scale,d_model,warmup', [(1.0, 512, 4000), (2.0, 32, 10), (0.5, 256, 600)])
def test_rsqrt_peaks_at_warmup(scale, d_model, warmup):
  kwargs = dict(d_model=d_model, warmup_steps=warmup, scale=scale)
  steps = np.arange(1, 4 * warmup)
  lrs = np.asarray(rsqrt_schedule(steps, **kwargs))
  peak = scale * d_model ** -0.5 * warmup ** -0.5
  assert steps[lrs.argmax()] == warmup
  assert lrs.max() == pytest.approx(peak, rel=1e-6)
  assert np.all(np.diff(lrs[:warmup]) > 0), 'increasing up to the warmup step'
  assert np.all(np.diff(lrs[warmup - 1:]) < 0), 'decreasing after it'
  # Linear warmup: lr(k) = k/warmup · peak.
  np.testing.assert_allclose(lrs[:warmup], steps[:warmup] / warmup * peak, rtol=1e-5)


def test_rsqrt_cooldown_follows_rsqrt_then_ramps_to_zero():
  kwargs = dict(d_model=32, warmup_steps=10, scale=2.0)
  total, cooldown = 100, 30
  steps = np.arange(0, total + 5)
  lrs = np.asarray(rsqrt_cooldown_schedule(steps, total_steps=total, cooldown_steps=cooldown,
                                           **kwargs))
  plain = np.asarray(rsqrt_schedule(steps, **kwargs))
  start = total - cooldown
  np.testing.assert_array_equal(lrs[:start], plain[:start])
  at_start = _paper_lr(start, d_model=32, warmup=10, scale=2.0)
  assert lrs[start] == pytest.approx(at_start, rel=1e-6)
  assert lrs[start + cooldown // 3] == pytest.approx(at_start * 2 / 3, rel=1e-5)
  assert lrs[total] == 0.0 and np.all(lrs[total:] == 0.0)
  assert np.all(np.diff(lrs[start:total + 1]) < 0), 'linear ramp strictly down to 0'
  np.testing.assert_allclose(np.diff(lrs[start:total + 1]), -at_start / cooldown, rtol=1e-4)


@pytest.mark.parametrize('name', ['rsqrt', 'rsqrt_cooldown'])
def test_make_schedule_counts_updates_from_zero(name):
  """optax calls the schedule with the update count 0, 1, ...: lr(count) = rsqrt(count + 1)."""
  schedule = make_schedule(name, d_model=32, warmup_steps=10, scale=2.0, total_steps=1000,
                           cooldown_steps=100)
  for count in (0, 1, 9, 10, 500):
    assert float(schedule(count)) == pytest.approx(_paper_lr(count + 1, 32, 10, 2.0), rel=1e-6)
  assert float(schedule(0)) > 0, 'the first update must not have lr 0'
  if name == 'rsqrt_cooldown':
    assert float(schedule(999)) == 0.0


def test_make_schedule_rejects_unknown_names():
  with pytest.raises(ValueError, match="'cosine'.*rsqrt"):
    make_schedule('cosine', d_model=32, warmup_steps=10, scale=1.0, total_steps=10)


# --- label smoothing ----------------------------------------------------------------------


def _numpy_smoothed_loss(logits, targets, smoothing):
  """KL(q || p) with explicit soft targets q: -Σ q log p - H(q)."""
  vocab = logits.shape[-1]
  logits = logits.astype(np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
  one_hot = np.eye(vocab)[targets]
  q = one_hot * (1 - smoothing) + (1 - one_hot) * smoothing / (vocab - 1)
  cross_entropy = -(q * log_p).sum(-1)
  entropy = -(q * np.log(np.where(q > 0, q, 1.0))).sum(-1)
  nll = -(one_hot * log_p).sum(-1)
  return cross_entropy - entropy, nll


@pytest.fixture
def logits_and_targets():
  rng = np.random.default_rng(0)
  return rng.normal(size=(3, 5, 11)).astype(np.float32) * 3, rng.integers(0, 11, size=(3, 5))


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.3])
def test_label_smoothing_matches_explicit_soft_targets(logits_and_targets, smoothing):
  logits, targets = logits_and_targets
  loss, nll = label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), smoothing)
  want_loss, want_nll = _numpy_smoothed_loss(logits, targets, smoothing)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nll, want_nll, rtol=1e-5, atol=1e-5)
  assert loss.dtype == jnp.float32 and loss.shape == targets.shape


def test_no_smoothing_is_the_negative_log_likelihood(logits_and_targets):
  logits, targets = logits_and_targets
  loss, nll = label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), 0.0)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  want = -np.log(np.take_along_axis(probs, targets[..., None], -1)[..., 0])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_array_equal(loss, nll)


@pytest.mark.parametrize('smoothing', [0.1, 0.2])
def test_predicting_the_smoothed_target_scores_zero(smoothing):
  vocab = 7
  targets = np.array([[0, 3, 6, 2]])
  one_hot = np.eye(vocab)[targets]
  q = one_hot * (1 - smoothing) + (1 - one_hot) * smoothing / (vocab - 1)
  loss, nll = label_smoothed_cross_entropy(jnp.log(jnp.asarray(q, jnp.float32)),
                                           jnp.asarray(targets), smoothing)
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)
  np.testing.assert_allclose(nll, -np.log(1 - smoothing), rtol=1e-5)
  # Any other prediction scores more (the loss is a KL divergence).
  worse, _ = label_smoothed_cross_entropy(jnp.asarray(one_hot * 5.0, jnp.float32),
                                          jnp.asarray(targets), smoothing)
  assert np.all(np.asarray(worse) > 0.01)


def _autodiff_reference(logits, targets, smoothing):
  """The loss as the formula reads, through log_softmax: what autodiff differentiates."""
  vocab = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  q = jax.nn.one_hot(targets, vocab) * (1 - smoothing - smoothing / (vocab - 1)) + smoothing / (
      vocab - 1)
  entropy = -(q * jnp.log(jnp.where(q > 0, q, 1.0))).sum(-1)
  nll = -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
  return -(q * log_p).sum(-1) - entropy, nll


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.3])
def test_hand_written_gradient_equals_autodiff_of_the_formula(logits_and_targets, smoothing):
  logits, targets = (jnp.asarray(a) for a in logits_and_targets)
  # Different weights on the loss and the nll, so both cotangents of the VJP are exercised.
  w_loss = jnp.asarray(np.random.default_rng(1).uniform(size=targets.shape), jnp.float32)
  w_nll = 0.3 * (1.0 - w_loss)

  def objective(fn, x):
    loss, nll = fn(x, targets, smoothing)
    return (w_loss * loss).sum() + (w_nll * nll).sum()

  got = jax.jit(jax.grad(lambda x: objective(label_smoothed_cross_entropy, x)))(logits)
  want = jax.grad(lambda x: objective(_autodiff_reference, x))(logits)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The gradient of the loss alone is p - q: each row sums to zero.
  row = jax.grad(lambda x: label_smoothed_cross_entropy(x, targets, smoothing)[0].sum())(logits)
  np.testing.assert_allclose(row.sum(-1), 0.0, atol=1e-5)


def test_gradient_keeps_the_logits_dtype(logits_and_targets):
  logits, targets = logits_and_targets
  logits_bf16 = jnp.asarray(logits, jnp.bfloat16)
  grad = jax.grad(lambda x: label_smoothed_cross_entropy(x, jnp.asarray(targets), 0.1)[0].sum())(
      logits_bf16)
  assert grad.dtype == jnp.bfloat16
  loss, _ = label_smoothed_cross_entropy(logits_bf16, jnp.asarray(targets), 0.1)
  assert loss.dtype == jnp.float32  # the reductions run in float32 whatever the compute dtype


def test_label_is_a_top_prediction_is_argmax_without_ties_and_any_max_with_them():
  logits = np.random.default_rng(2).normal(size=(4, 6, 9)).astype(np.float32)
  targets = np.random.default_rng(3).integers(0, 9, size=(4, 6))
  targets[0] = logits[0].argmax(-1)  # some hits for sure
  got = label_is_a_top_prediction(jnp.asarray(logits), jnp.asarray(targets))
  np.testing.assert_array_equal(got, logits.argmax(-1) == targets)
  tied = np.zeros((1, 1, 5), np.float32)
  tied[0, 0, [1, 3]] = 2.0
  assert label_is_a_top_prediction(jnp.asarray(tied), jnp.asarray([[3]]))[0, 0]
  assert not label_is_a_top_prediction(jnp.asarray(tied), jnp.asarray([[2]]))[0, 0]


def test_masked_token_metrics_ignore_weight_zero_tokens(logits_and_targets):
  logits, targets = logits_and_targets
  weights = np.ones(targets.shape, np.int32)
  weights[0, 3:] = 0
  weights[2, :] = 0
  sums = masked_token_metrics(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), 0.1)
  loss, nll = _numpy_smoothed_loss(logits, targets, 0.1)
  real = weights.astype(bool)
  assert float(sums['num_tokens']) == real.sum() == 8
  assert float(sums['loss_sum']) == pytest.approx(loss[real].sum(), rel=1e-5)
  assert float(sums['nll_sum']) == pytest.approx(nll[real].sum(), rel=1e-5)
  assert float(sums['correct_sum']) == (logits.argmax(-1) == targets)[real].sum()
  # Whatever sits under weight 0 (here: garbage logits and labels) changes nothing.
  garbage_logits, garbage_targets = logits.copy(), targets.copy()
  garbage_logits[~real] = 1e4
  garbage_targets[~real] = 0
  again = masked_token_metrics(jnp.asarray(garbage_logits), jnp.asarray(garbage_targets),
                               jnp.asarray(weights), 0.1)
  for key in sums:
    assert float(again[key]) == pytest.approx(float(sums[key]), rel=1e-6), key
