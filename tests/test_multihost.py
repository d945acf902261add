"""Two processes × 2 CPU devices train like one process fed the same global batches.

train.py runs twice, as process 0 and 1 of a jax.distributed job on 127.0.0.1
(CPU collectives over gloo). Each process reads `train[i::2]` and feeds its half
of every global batch, so a plain single-process run would see other batches.
The reference is train_and_evaluate in one process on one device with its data
iterator swapped for one that concatenates what processes 0 and 1 read: the same
global batch, row for row — rows matter, since dropout masks are drawn per global
row. What may differ is the order of float32 sums (across 4 devices and 2
processes vs on 1), so losses agree to a tolerance, token counts exactly.
"""
import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from toy_corpus import write_train_val
from transformer_jax.checkpointing import Checkpointer
from transformer_jax.training.metrics_writer import read_metrics
from transformer_jax.decoding.translator import Translator
from transformer_jax import config_lib, sharding
from transformer_jax.workdir import WorkDir

REPO = Path(__file__).resolve().parents[1]
NUM_STEPS = 4
# Float32 sums in another order, over 4 Adam steps: measured ≤ 3e-7 (losses, params).
RTOL = 1e-5
# Final params after several steps: the 2-process all-reduce sums gradients in another order, and
# Adam (update ≈ lr·sign(g) where |g| is tiny) plus global-norm clipping grow those float32
# rounding differences step by step; measured 1.8e-5 on the tied embedding after 6 steps.
PARAMS_RTOL = 1e-4
OVERRIDES = {
    'num_train_steps': NUM_STEPS, 'log_every_steps': 1, 'eval_every_steps': 1000,
    'checkpoint_every_steps': 1000, 'optimizer.cooldown_steps': 1,
    'eval.batch_size': 4, 'eval.num_bleu_sentences': 4, 'eval.max_decode_length': 8,
}

REFERENCE = textwrap.dedent('''
    import json, os, shutil, sys, time
    sys.path.insert(0, os.getcwd())
    import numpy as np
    from transformer_jax.configs import tiny
    from transformer_jax.data import make_train_iterator
    from transformer_jax.training.evaluator import Evaluator
    from transformer_jax.training.loop import train_and_evaluate

    class BothShards:
      """Process 0's rows, then process 1's: the 2-process run's global batch."""

      def __init__(self, source, vocab, **kwargs):
        kwargs.update(batch_tokens=kwargs['batch_tokens'] // 2, shard_count=2)
        self.shards = [make_train_iterator(source, vocab, **{**kwargs, 'shard_index': i})
                       for i in (0, 1)]

      def __next__(self):
        parts = [next(s) for s in self.shards]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

      def get_state(self):
        return [s.get_state() for s in self.shards]

    workdir, other_vocab, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = tiny.get_config()
    for key, value in overrides.items():
      section, _, field = key.rpartition('.')
      (config[section] if section else config)[field] = value
    # The vocabulary is the 2-process run's (SentencePiece shuffles its input).
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(other_vocab, 'spm.model')):
      assert time.time() < deadline, 'the 2-process run wrote no vocabulary'
      time.sleep(0.2)
    shutil.copytree(other_vocab, os.path.join(workdir, 'vocab'))
    class LossOnly(Evaluator):
      def bleu(self, params):
        return {'bleu': 0.0}  # not compared; saves compiling beam search

    sys.modules['tensorboardX'] = None  # its import pulls in torch (seconds); metrics.jsonl stays
    train_and_evaluate(config, workdir, make_train_iterator=BothShards, evaluator_class=LossOnly)
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'MULTI30K_DIR'}
  # LLVM -O0 halves XLA:CPU compile time; the numbers compared are the same programs'.
  flags = '--xla_backend_optimization_level=0'
  if devices > 1:
    flags += f' --xla_force_host_platform_device_count={devices}'
  return {**env, 'XLA_FLAGS': flags, 'JAX_PLATFORMS': 'cpu'}


def _wait_all(procs, logs, timeout):
  """Returns when all exit 0; fails as soon as one exits otherwise, or at the timeout."""
  deadline = time.monotonic() + timeout
  while True:
    codes = {name: proc.poll() for name, proc in procs.items()}
    failed = {n: c for n, c in codes.items() if c not in (None, 0)}
    if not failed and time.monotonic() > deadline:
      failed = {n: 'still running' for n, c in codes.items() if c is None}
    if failed:
      tails = '\n'.join(f'--- {n}\n{logs[n].read_text()[-3000:]}' for n in procs)
      pytest.fail(f'{failed} after {timeout}s at most:\n{tails}')
    if all(c == 0 for c in codes.values()):
      return
    time.sleep(0.2)


def _params(workdir: Path):
  """Latest params of a work directory, restored onto this process's first device."""
  config = WorkDir(str(workdir)).read_config()
  vocab = WorkDir(str(workdir)).load_vocab()
  _, abstract = config_lib.abstract_model(config, vocab.size)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = sharding.with_shardings(abstract, jax.tree.map(lambda _: device, abstract))
  ckpt = Checkpointer(str(workdir), read_only=True)
  return ckpt.latest_step(), ckpt.restore_params(target, ckpt.latest_step())


@pytest.mark.slow
def test_two_processes_train_like_one_fed_the_same_global_batches(tmp_path):
  raw, data_dir = tmp_path / 'raw', tmp_path / 'tfds'
  write_train_val(raw, 300, 8)  # the first real pairs if $MULTI30K_DIR is set, else toy
  two, one = tmp_path / 'two_processes', tmp_path / 'one_process'
  one.mkdir()
  flags = [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
  flags += [f'--config.data.data_dir={data_dir}', f'--config.data.manual_dir={raw}']
  overrides = {**OVERRIDES, 'data.data_dir': str(data_dir), 'data.manual_dir': str(raw)}
  address = f'127.0.0.1:{_free_port()}'
  logs = {n: tmp_path / f'{n}.log' for n in ('process_0', 'process_1', 'reference')}
  procs, outputs = {}, {n: path.open('w') for n, path in logs.items()}
  start = time.perf_counter()
  try:
    for i in (0, 1):
      cmd = [sys.executable, 'train.py', '--config', 'configs/tiny.py', f'--workdir={two}',
             *flags, f'--coordinator_address={address}', '--num_processes=2',
             f'--process_id={i}']
      procs[f'process_{i}'] = subprocess.Popen(
          cmd, cwd=REPO, env=_env(2), stdout=outputs[f'process_{i}'],
          stderr=subprocess.STDOUT)
    # Started alongside: it waits for the vocabulary, then reads the same prepared data.
    procs['reference'] = subprocess.Popen(
        [sys.executable, '-c', REFERENCE, str(one), str(two / 'vocab'), json.dumps(overrides)],
        cwd=REPO, env=_env(1), stdout=outputs['reference'], stderr=subprocess.STDOUT)
    _wait_all(procs, logs, timeout=480)  # minutes on a loaded 2-core CPU
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    for f in outputs.values():
      f.close()
  train_seconds = time.perf_counter() - start

  def train_records(workdir):
    return [r for r in read_metrics(str(workdir)) if 'loss' in r]

  got, want = train_records(two), train_records(one)
  steps = [r['step'] for r in got]
  assert steps == [r['step'] for r in want]
  assert steps[:NUM_STEPS - 1] == list(range(1, NUM_STEPS))  # the last may come at the end
  assert [r['num_tokens'] for r in got] == [r['num_tokens'] for r in want]
  assert [r['loss'] for r in got] == pytest.approx([r['loss'] for r in want], rel=RTOL)
  evals = [[r for r in read_metrics(str(w)) if 'eval_loss' in r] for w in (two, one)]
  assert evals[0][-1]['eval_loss'] == pytest.approx(evals[1][-1]['eval_loss'], rel=RTOL)

  # The 2-process checkpoint restores in this single process, close to the reference's.
  (step_two, params_two), (step_one, params_one) = _params(two), _params(one)
  assert step_two == step_one == NUM_STEPS
  flat_one = dict(jax.tree_util.tree_flatten_with_path(params_one)[0])
  worst = 0.0
  for path, value in jax.tree_util.tree_flatten_with_path(params_two)[0]:
    ref = np.asarray(flat_one[path])
    err = np.linalg.norm(np.asarray(value) - ref) / np.linalg.norm(ref)
    assert err <= PARAMS_RTOL, (jax.tree_util.keystr(path), err)
    worst = max(worst, err)
  translation = Translator(str(two), checkpoint='latest').translate(['a dog runs'], beam_size=1)
  assert len(translation) == 1 and isinstance(translation[0], str)
  print(f'\n2 processes + reference: {train_seconds:.1f}s; losses {[r["loss"] for r in got]} vs '
        f'{[r["loss"] for r in want]}; params worst leaf rel diff {worst:.2e}')
