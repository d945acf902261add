"""Where a compiled XLA:CPU program spends its time: a jax.profiler trace's thunk times grouped
by what each HLO instruction computes. Shared by benchmarks/profile_step.py (this project's
step) and benchmarks/profile_flax_wmt_step.py (the reference's, run in its own venv), so both
are measured the same way. Imports nothing of the project.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

CATEGORIES = ('matmul: output projection', 'matmul', 'dropout RNG', '[B, T, V] elementwise',
              'layer norm', 'optimizer', 'layout copies', 'other elementwise')
_LAYOUT_OPS = {'transpose', 'copy', 'bitcast', 'broadcast', 'slice', 'reshape', 'parameter',
               'tuple', 'get-tuple-element', 'constant', 'concatenate', 'pad',
               'dynamic-slice', 'dynamic-update-slice'}
_OP = re.compile(r'=\s*(\S+)\s+([a-z][a-z0-9-]*)\(')


def parse_hlo(text: str) -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
  """({instruction: called computation or ''}, {computation: [(result shape, opcode), ...]})."""
  calls, bodies, current = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    header = re.match(r'\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$', line)
    if header and '=' not in line.split('{')[0]:
      current = header.group(1)
      continue
    match = re.match(r'\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=', line)
    op = _OP.search(line)
    if not match or not op:
      continue
    name, (shape, opcode) = match.group(1), op.groups()
    bodies[current].append((shape, opcode))
    called = re.search(r'calls=%?([\w.\-]+)', line)
    calls[name] = called.group(1) if called else ''
    if not called:
      bodies[f'<op>{name}'].append((shape, opcode))
  return calls, bodies


def instruction_ops(name: str, calls: dict, bodies: dict) -> list[tuple[str, str]]:
  """The (shape, opcode)s an instruction runs: its fused computation's, or its own if unfused."""
  return bodies.get(calls[name]) or bodies.get(f'<op>{name}', [])


def categorise(ops: list[tuple[str, str]], vocab: int) -> str:
  opcodes = {o for _, o in ops}
  has_vocab = any(re.search(rf'[\[,]{vocab}[\],]', shape) for shape, _ in ops)
  if 'dot' in opcodes or 'convolution' in opcodes:
    return 'matmul: output projection' if has_vocab else 'matmul'
  if {'shift-right-logical', 'shift-left'} & opcodes and 'xor' in opcodes:
    return 'dropout RNG'
  if has_vocab:
    return '[B, T, V] elementwise'
  if 'rsqrt' in opcodes:
    return 'layer norm'
  if 'sqrt' in opcodes:
    return 'optimizer'
  if opcodes <= _LAYOUT_OPS:
    return 'layout copies'
  if 'compare' in opcodes and any(s.startswith('u16') or s.startswith('u8') for s, _ in ops):
    return 'dropout RNG'
  return 'other elementwise'


def thunk_times(trace_dir: str) -> dict[str, float]:
  """Summed microseconds per event name in the newest perfetto trace under trace_dir."""
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f'no perfetto_trace.json.gz under {trace_dir}: the profiler wrote '
                            'no trace (is this jax built with profiler support?)')
  with gzip.open(paths[-1], 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e:
      totals[e['name']] += float(e['dur'])
  return totals

def summarise(times: dict[str, float], calls: dict, bodies: dict, vocab: int, steps: int,
              top: int = 12) -> dict:
  """Prints the per-category table and the slowest instructions; returns the JSON figures."""
  by_category, by_name, unmatched = (collections.Counter() for _ in range(3))
  for name, us in times.items():
    if name in calls:
      by_category[categorise(instruction_ops(name, calls, bodies), vocab)] += us
      by_name[name] += us
    else:
      unmatched[name] += us  # the executable's own span and runtime events, not thunks
  total = sum(by_category.values())
  if not total:
    raise RuntimeError('no trace event matched an HLO instruction: the trace format changed; '
                       f'event names seen: {sorted(times)[:10]}')
  per_step_ms = {c: by_category[c] / 1e3 / steps for c in CATEGORIES}
  print(f'{"category":28s} {"ms/step":>9s} {"share":>7s}')
  for c in CATEGORIES:
    print(f'{c:28s} {per_step_ms[c]:9.1f} {by_category[c] / total:7.1%}')
  print(f'{"sum of thunk times":28s} {total / 1e3 / steps:9.1f}')
  print('slowest instructions (ms/step, category):')
  for name, us in by_name.most_common(top):
    category = categorise(instruction_ops(name, calls, bodies), vocab)
    print(f'  {name:40s} {us / 1e3 / steps:8.1f}  {category}')
  print('events that are not HLO instructions (ms/step):',
        {n: round(us / 1e3 / steps, 1) for n, us in unmatched.most_common(5)})
  return {'thunk_ms_per_step': round(total / 1e3 / steps, 1),
          'share': {c: round(by_category[c] / total, 4) for c in CATEGORIES},
          'ms_per_step': {c: round(v, 1) for c, v in per_step_ms.items()}}
