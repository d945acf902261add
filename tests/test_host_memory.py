"""host_memory.reuse_freed_host_memory: freed XLA buffers stay mapped and are reused.

The property: a jitted call with 64 MiB of scratch memory (a transpose feeding a dot) page-faults
that memory in again on every call under glibc's defaults (an mmap per buffer), and not at all
once the setting is applied. Each case runs in a fresh interpreter, since the setting only
takes before jax starts its backend (which this test process has long done).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from transformer_jax import host_memory
from transformer_jax.cli import train as train_cli

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
BUFFER_PAGES = 64 * 2**20 // 4096

_FAULTS_PER_CALL = textwrap.dedent('''
    import json, resource, sys, time
    from transformer_jax.host_memory import reuse_freed_host_memory
    applied = reuse_freed_host_memory() if sys.argv[1] == 'reuse' else False
    import jax, jax.numpy as jnp
    x = jnp.zeros((16 * 2**20,), jnp.float32)            # 64 MiB
    # 64 MiB of XLA temp memory per call (the transposed operand), 64 KiB of result.
    ones = jnp.ones((4096, 4), jnp.float32)
    transposed_product = jax.jit(lambda v: (v + 1.0).reshape(4096, 4096).T @ ones)
    for _ in range(3):                                    # compile, first allocations
        transposed_product(x).block_until_ready()
    faults = []
    for _ in range(5):
        # The runtime frees a call's temp memory just after its result is ready: on a loaded
        # machine the next call could ask before that, and grow the heap instead.
        time.sleep(0.2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        transposed_product(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({'applied': applied, 'faults': sorted(faults)[2]}))
''')


def _faults_per_call(mode: str, env_extra=None) -> dict:
  env = {k: v for k, v in os.environ.items() if k != host_memory.OPT_OUT_ENV}
  env.update({'JAX_PLATFORMS': 'cpu', **(env_extra or {})})
  out = subprocess.run([sys.executable, '-c', _FAULTS_PER_CALL, mode], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  system = _faults_per_call('system')
  reused = _faults_per_call('reuse')
  assert not system['applied'] and reused['applied']
  # glibc's defaults: the 64 MiB scratch is a fresh mmap each call, every page faulted in.
  assert system['faults'] > 0.5 * BUFFER_PAGES, system
  assert reused['faults'] < 0.02 * BUFFER_PAGES, reused


def test_the_environment_opt_out_leaves_glibc_alone():
  opted_out = _faults_per_call('reuse', {host_memory.OPT_OUT_ENV: 'system'})
  assert not opted_out['applied']
  assert opted_out['faults'] > 0.5 * BUFFER_PAGES, opted_out


def test_after_the_backend_started_it_refuses_and_says_when_to_call_it():
  script = textwrap.dedent('''
      import jax
      jax.devices()
      from transformer_jax.host_memory import reuse_freed_host_memory
      print(reuse_freed_host_memory())
  ''')
  env = {k: v for k, v in os.environ.items() if k != host_memory.OPT_OUT_ENV}
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       env={**env, 'JAX_PLATFORMS': 'cpu'}, cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == 'False'
  assert 'before the first jax computation' in out.stderr


def test_the_train_cli_applies_it_before_anything_else(monkeypatch):
  events = []
  monkeypatch.setattr(train_cli, 'reuse_freed_host_memory', lambda: events.append('reuse'))
  monkeypatch.setattr(train_cli, '_define_flags', lambda: events.append('flags'))
  monkeypatch.setattr(train_cli.app, 'run', lambda *a, **k: events.append('app.run'))
  monkeypatch.setattr(sys, 'argv', ['train.py'])
  train_cli.run()
  assert events == ['reuse', 'flags', 'app.run']


@pytest.mark.parametrize('system, libc', [('Darwin', ('', '')), ('Linux', ('musl', '1.2'))])
def test_other_platforms_are_left_alone(monkeypatch, system, libc):
  monkeypatch.delenv(host_memory.OPT_OUT_ENV, raising=False)
  monkeypatch.setattr(host_memory.platform, 'system', lambda: system)
  monkeypatch.setattr(host_memory.platform, 'libc_ver', lambda: libc)
  monkeypatch.setattr(host_memory, '_jax_backend_started', lambda: False)
  monkeypatch.setattr(host_memory.ctypes, 'CDLL', lambda *a: pytest.fail('mallopt called'))
  assert host_memory.reuse_freed_host_memory() is False
