"""Measurements on 8 CPU devices for test_sharding.py, which runs this file in a subprocess.

    python tests/sharding_checks.py OUT_JSON SCRATCH_DIR

JAX fixes its device count when the backend starts, and pytest (or another test
file) may already have started it in the test process; this script owns its
process, so it can ask for 8 devices first. It measures and records, the test
file asserts: a failure there shows the numbers.
"""
import json
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_platforms', 'cpu')

import functools  # noqa: E402

import numpy as np  # noqa: E402
from jax.sharding import SingleDeviceSharding  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for `configs`

from transformer_jax.configs import tiny  # noqa: E402
from transformer_jax import config_lib, sharding  # noqa: E402
from transformer_jax.training import loop as trainer  # noqa: E402
from transformer_jax.checkpointing import Checkpointer  # noqa: E402
from transformer_jax.data.vocab import BOS_ID  # noqa: E402
from transformer_jax.training.train_step import init_train_state, make_optimizer, train_step  # noqa: E402

MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))
NUM_STEPS = 3
VOCAB_SIZE = 200


def packed_batch(rng, rows: int, length: int) -> dict[str, np.ndarray]:
  """Random rows of 1-3 packed segments each, inputs and targets paired by segment id."""
  keys = ('inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs', 'targets',
          'targets_segmentation', 'targets_position')
  batch = {k: np.zeros((rows, length), np.int32) for k in keys}
  for r in range(rows):
    num_segments = int(rng.integers(1, 4))
    for side in ('inputs', 'targets'):
      start = 0
      for seg in range(1, num_segments + 1):
        n = int(rng.integers(2, length // num_segments + 1))
        tokens = rng.integers(4, VOCAB_SIZE, n)
        span = slice(start, start + n)
        batch[side][r, span] = tokens
        batch[f'{side}_segmentation'][r, span] = seg
        batch[f'{side}_position'][r, span] = np.arange(n)
        if side == 'targets':
          batch['decoder_inputs'][r, span] = np.concatenate([[BOS_ID], tokens[:-1]])
        start += n
  return batch


def flat(tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(x)) for p, x in leaves}


def rel(a, b) -> float:
  """||a - b|| / ||b|| (0 when both are 0)."""
  denom = np.linalg.norm(b.astype(np.float64))
  diff = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))
  return float(diff / denom) if denom else float(diff)


def run_steps(mesh, state0, step_fn, batches, key):
  """Losses and host states after each step; mesh None = plain jit on one device."""
  if mesh is None:
    fn, state = jax.jit(step_fn), state0
    place = lambda b: b
  else:
    state_sh = sharding.state_shardings(state0, step_fn.keywords['tx'], mesh)
    fn = jax.jit(step_fn, in_shardings=(state_sh, sharding.batch_sharding(mesh), None),
                 out_shardings=(state_sh, None))
    state = jax.device_put(state0, state_sh)
    place = lambda b: sharding.global_batch(b, mesh)
  losses, states = [], []
  for batch in batches:
    state, metrics = fn(state, place(batch), key)
    losses.append(float(metrics['loss_sum']) / float(metrics['num_tokens']))
    states.append(flat(state))
  return losses, states, state


def compare(states, ref_states, init) -> dict:
  """Worst per-leaf norm-relative differences, over all steps."""
  out = {'params_rel': 0.0, 'update_rel': 0.0, 'moments_rel': 0.0, 'max_abs': 0.0, 'worst': ''}
  for got, ref in zip(states, ref_states):
    for k, r in ref.items():
      g = got[k]
      out['max_abs'] = max(out['max_abs'], float(np.max(np.abs(g - r), initial=0.0)))
      if k.startswith('.params'):
        err = rel(g, r)
        if err > out['params_rel']:
          out['params_rel'], out['worst'] = err, k
        out['update_rel'] = max(out['update_rel'], rel(g - init[k], r - init[k]))
      elif '.mu' in k or '.nu' in k:
        out['moments_rel'] = max(out['moments_rel'], rel(g, r))
  return out


def equivalence(results, scratch: Path):
  config = tiny.get_config()
  model = config_lib.build_model(config, VOCAB_SIZE)
  tx, schedule = make_optimizer(config.optimizer, d_model=config.model.d_model,
                                total_steps=config.num_train_steps)
  graphdef, state0 = init_train_state(model, tx)
  step_fn = functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                              label_smoothing=config.label_smoothing)
  rows = config.batch_tokens // config.data.max_length
  rng = np.random.default_rng(0)
  batches = [packed_batch(rng, rows, config.data.max_length) for _ in range(NUM_STEPS)]
  key = jax.random.key(config.seed)  # dropout on: its masks must not depend on the mesh
  init = flat(state0)

  ref_losses, ref_states, _ = run_steps(None, state0, step_fn, batches, key)
  results['losses'] = {'1': ref_losses}
  results['update_norm'] = max(rel(ref_states[-1][k], init[k]) for k in init
                               if k.startswith('.params'))
  results['diffs'] = {}
  for shape in MESHES:
    name = 'x'.join(map(str, shape))
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
    losses, states, state = run_steps(mesh, state0, step_fn, batches, key)
    results['losses'][name] = losses
    results['diffs'][name] = {
        'loss_rel': max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)),
        **compare(states, ref_states, init)}
  # `state` is now the (2, 2, 2) run's: its arrays' shardings, and a checkpoint of it.
  results['placed_specs'] = {jax.tree_util.keystr(path): str(x.sharding.spec)
                             for path, x in jax.tree_util.tree_flatten_with_path(state)[0]}
  results['rule_specs'] = {k: str(v) for k, v in sharding.describe(
      sharding.state_shardings(state0, tx, mesh)).items()}
  checkpoint_round_trip(results, state, scratch / 'ckpt')


def checkpoint_round_trip(results, state, directory: Path):
  saver = Checkpointer(directory)
  saver.save(state, {'mesh': '2x2x2'})
  saver.wait()
  saver.close()
  device = SingleDeviceSharding(jax.devices()[0])
  target = sharding.with_shardings(state, jax.tree.map(lambda _: device, state))
  restored, meta = Checkpointer(directory, read_only=True).restore(target)
  saved, loaded = flat(state), flat(restored)
  results['checkpoint'] = {
      'same_keys': sorted(saved) == sorted(loaded),
      'max_abs_diff': max(float(np.max(np.abs(saved[k] - loaded[k]), initial=0.0))
                          for k in saved),
      'device_counts': sorted({len(x.sharding.device_set) for x in jax.tree.leaves(restored)
                               if isinstance(x, jax.Array)}),
      'meta_mesh': meta['mesh'], 'step': int(meta['step'])}


def mesh_errors(results, scratch: Path):
  """train_and_evaluate with bad meshes: MeshError before anything is traced or compiled."""
  events = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, *_, **__: events.append(event) if event.startswith('/jax/core/compile')
      else None)
  cases = {
      'not_dividing': {'mesh.data': 3},
      'two_rest_axes': {'mesh.data': -1, 'mesh.fsdp': -1},
      'too_few_devices': {'mesh.data': 2, 'mesh.fsdp': 2},
      'batch_rows': {'mesh.data': 8, 'batch_tokens': 12 * 32},
  }
  results['mesh_errors'] = {}
  for name, overrides in cases.items():
    config = tiny.get_config()
    config.data.data_dir = str(scratch / 'no_data')
    for key, value in overrides.items():
      section, _, field = key.rpartition('.')
      (config[section] if section else config)[field] = value
    workdir = scratch / f'bad_{name}'
    before, start = len(events), time.perf_counter()
    try:
      trainer.train_and_evaluate(config, str(workdir))
      outcome = {'type': None, 'message': ''}
    except Exception as e:  # noqa: BLE001 - the test asserts on the type
      outcome = {'type': type(e).__name__, 'message': str(e)}
    results['mesh_errors'][name] = {
        **outcome, 'seconds': time.perf_counter() - start, 'compile_events': len(events) - before,
        'workdir_created': workdir.exists()}


def main(out_path: str, scratch: str):
  scratch = Path(scratch)
  results = {'num_devices': jax.device_count(), 'seconds': {}}
  for name, check in (('mesh_errors', mesh_errors), ('equivalence', equivalence)):
    start = time.perf_counter()
    check(results, scratch)
    results['seconds'][name] = time.perf_counter() - start
  Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
  os.chdir(REPO)
  main(*sys.argv[1:])
