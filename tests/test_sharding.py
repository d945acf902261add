"""Scale-out properties: sharded training equals single-device training, params are laid out
by the rules, bad meshes fail fast, and a sharded checkpoint restores on one device.

The 8-device checks run in a subprocess (sharding_checks.py): JAX fixes its device
count when its backend starts, which this pytest process (or another test file)
may already have done. The subprocess records numbers; the tests here assert.
The rule tests need no devices: they use an AbstractMesh in this process.
"""
import fcntl
import functools
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # for `configs`

from transformer_jax.configs import tiny  # noqa: E402
from transformer_jax import config_lib, sharding  # noqa: E402
from transformer_jax.training.train_step import init_train_state, make_optimizer  # noqa: E402

VOCAB_SIZE = 200
MESHES = ('8x1x1', '2x4x1', '2x2x2')  # data x fsdp x tensor, as in sharding_checks.MESHES
# Sharded and single-device runs differ only in the order of float32 sums (~1e-7).
LOSS_RTOL = 1e-5
# Per leaf, ||p_mesh - p_1dev|| / ||p_1dev||. Not element-wise: Adam's first update is
# lr·g/(|g|+ε) ≈ lr·sign(g), so a gradient element that is pure rounding noise may flip
# sign between summation orders and move by 2·lr — a 100% error in that element from a
# 1e-7 difference in g. A leaf norm bounds such elements by their share of the leaf.
PARAMS_RTOL = 1e-5
MOMENTS_RTOL = 1e-5  # Adam's mu, nu: the gradients themselves, no sign amplification
UPDATE_RTOL = 1e-4   # ||Δp_mesh - Δp_1dev|| / ||Δp_1dev||, Δp = change over the steps


def _run_checks(scratch: Path) -> dict:
  out = scratch / 'results.json'
  # The checks compare numerics, not speed: LLVM -O0 halves XLA:CPU compile time.
  env = {**os.environ, 'XLA_FLAGS': '--xla_backend_optimization_level=0', 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'sharding_checks.py'), str(out),
                         str(scratch)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=400)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(out.read_text())


@pytest.fixture(scope='session')
def measured(tmp_path_factory):
  """sharding_checks.py's results, run once per test session on 8 CPU devices."""
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    results = _run_checks(tmp_path_factory.mktemp('sharding'))
  else:
    # The tests may land on several xdist workers; they share this session's base
    # directory, and the first to take the lock runs the checks for all of them.
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / 'sharding_checks.lock', 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      cached = shared / 'sharding_checks.json'
      if not cached.exists():
        scratch = shared / 'sharding_checks'
        scratch.mkdir(exist_ok=True)
        cached.write_text(json.dumps(_run_checks(scratch)))
      results = json.loads(cached.read_text())
  assert results['num_devices'] == 8
  return results


@pytest.mark.parametrize('mesh', MESHES)
def test_sharded_train_steps_equal_single_device(measured, mesh):
  losses, reference = measured['losses'][mesh], measured['losses']['1']
  assert losses == pytest.approx(reference, rel=LOSS_RTOL)
  diffs = measured['diffs'][mesh]
  assert diffs['params_rel'] <= PARAMS_RTOL, diffs
  assert diffs['moments_rel'] <= MOMENTS_RTOL, diffs
  assert diffs['update_rel'] <= UPDATE_RTOL, diffs
  # Not vacuous: the steps moved some leaf by far more than the tolerance.
  assert measured['update_norm'] > 1e3 * PARAMS_RTOL


def test_placed_arrays_carry_the_rule_shardings(measured):
  """After sharded steps on (2, 2, 2), every param and Adam moment sits where the rules say."""
  placed, rules = measured['placed_specs'], measured['rule_specs']
  assert placed == rules
  ffn = ".params['encoder_layers'][0]['feed_forward']"
  assert placed[f"{ffn}['w1_DF'].value"] == str(P('fsdp', 'tensor'))
  assert placed[".params['embedding_VD'].value"] == str(P('tensor', 'fsdp'))
  moments = [v for k, v in placed.items() if k.endswith(".mu['embedding_VD'].value")]
  assert moments == [str(P('tensor', 'fsdp'))]  # wherever the optimizer chain keeps Adam


def _abstract_state():
  config = tiny.get_config()
  tx, _ = make_optimizer(config.optimizer, d_model=config.model.d_model,
                         total_steps=config.num_train_steps)
  _, state = nnx.eval_shape(lambda: init_train_state(config_lib.build_model(config, VOCAB_SIZE),
                                                     tx))
  return state, tx


@functools.cache
def _specs(shape):
  state, tx = _abstract_state()
  mesh = AbstractMesh(shape, sharding.MESH_AXES)
  return sharding.describe(sharding.state_shardings(state, tx, mesh))


ENC = ".params['encoder_layers'][0]"


def test_rules_on_a_2x2x2_mesh():
  specs = _specs((2, 2, 2))
  assert specs[f"{ENC}['feed_forward']['w1_DF'].value"] == P('fsdp', 'tensor')
  assert specs[f"{ENC}['feed_forward']['w2_FD'].value"] == P('tensor', 'fsdp')
  assert specs[f"{ENC}['feed_forward']['b1_F'].value"] == P('tensor')
  assert specs[f"{ENC}['self_attention']['w_qkv_D3HK'].value"] == P('fsdp', None, 'tensor', None)
  assert specs[f"{ENC}['self_attention']['w_o_HKD'].value"] == P('tensor', None, 'fsdp')
  assert specs[".params['embedding_VD'].value"] == P('tensor', 'fsdp')
  # LayerNorm's ('embed',) vectors are split by fsdp like every 'embed' dim (ZeRO-3 style).
  assert specs[f"{ENC}['ff_residual']['norm']['scale'].value"] == P('fsdp')


def test_a_dim_its_mesh_axis_does_not_divide_stays_replicated():
  # fsdp=3 divides no dim (d_model 32); tensor=4 divides d_ff 64 and vocab 200, not 2 heads.
  specs = _specs((1, 3, 4))
  assert specs[f"{ENC}['feed_forward']['w1_DF'].value"] == P(None, 'tensor')
  assert specs[f"{ENC}['self_attention']['w_qkv_D3HK'].value"] == P(None, None, None, None)
  assert specs[".params['embedding_VD'].value"] == P('tensor', None)
  assert specs[f"{ENC}['ff_residual']['norm']['scale'].value"] == P(None)
  # A size-1 axis is never named, so a data-only mesh replicates everything.
  assert all(axis is None for spec in _specs((8, 1, 1)).values() for axis in spec)


def test_adam_moments_follow_their_params():
  specs = _specs((2, 2, 2))
  params = {k[len('.params'):]: v for k, v in specs.items() if k.startswith('.params')}
  for moment in ('mu', 'nu'):
    moments = {k.split(f'.{moment}', 1)[1]: v for k, v in specs.items() if f'.{moment}[' in k}
    assert moments == params
  counts = [v for k, v in specs.items() if k.endswith('.count')]
  assert counts and all(v == P() for v in counts)
  assert specs['.step'] == P()


@pytest.mark.parametrize('case, words', [
    ('not_dividing', ['(3) does not divide the 8 devices']),
    ('two_rest_axes', ['at most one axis may be -1']),
    ('too_few_devices', ['uses 4 devices but 8 are available']),
    ('batch_rows', ['12 rows', '8 ways', 'batch_tokens']),
])
def test_bad_mesh_fails_before_compiling_or_writing(measured, case, words):
  result = measured['mesh_errors'][case]
  assert result['type'] == 'MeshError', result
  for w in words:
    assert w in result['message']
  assert result['compile_events'] == 0
  assert not result['workdir_created']
  assert result['seconds'] < 1.0


def test_checkpoint_from_a_2x2x2_mesh_restores_on_one_device(measured):
  ckpt = measured['checkpoint']
  assert ckpt['same_keys']
  assert ckpt['max_abs_diff'] == 0.0
  assert ckpt['device_counts'] == [1]
  assert (ckpt['meta_mesh'], ckpt['step']) == ('2x2x2', 3)
