"""Where a train step's time goes: a jax.profiler trace of a few steps, grouped by what each
XLA:CPU thunk computes.

    python benchmarks/profile_step.py [--preset M30K] [--dropout 0.3] [--dtype float32]
                                      [--steps 3] [--trace-dir DIR]

The step is benchmarks/train_step.py's (same presets, random tokens). XLA:CPU emits one trace
event per thunk, named after its HLO instruction; each instruction is put in a category by what
its fused computation (from `compiled.as_text()`) contains, in this order:

    matmul: output projection   a dot with the vocabulary as a dimension (logits and their grads)
    matmul                      any other dot (projections, FFN, attention scores)
    dropout RNG                 threefry's u32 shifts/xors (the bits), or their comparison
    [B, T, V] elementwise       any other op on a vocabulary-sized array: the log-softmax, the
                                loss and its gradient, the accuracy's argmax
    layer norm                  rsqrt
    optimizer                   sqrt (Adam's denominator)
    layout copies               only transposes, copies, bitcasts, broadcasts, slices
    other elementwise           the rest (residual adds, ReLU and its backward, masks, ...)

Thunk times overlap on two threads, so shares are of the summed thunk time, not of the wall
step. Dots that XLA does not hand to YNNPACK (plain `dot.N`, run by Eigen) are asynchronous
thunks: the trace holds only their launch, so their time is missing here; the wall-clock
benchmark (train_step.py) is what decides whether a change helps. A profile under load gives
the same shares, not the same milliseconds. The last line printed is one JSON object; the
table before it is for reading.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402

from benchmarks.train_step import PRESETS, make_jax_step, model_config, random_batch  # noqa: E402

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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='M30K')
  parser.add_argument('--steps', type=int, default=3, help='traced steps')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='float32')
  parser.add_argument('--dropout', type=float, default=0.3)
  parser.add_argument('--trace-dir', default=None, help='keep the trace here (default: a temp dir)')
  parser.add_argument('--top', type=int, default=12, help='slowest instructions listed')
  args = parser.parse_args(argv)

  p = PRESETS[args.preset]
  cfg = model_config(p, dtype=args.dtype, dropout=args.dropout)
  run, _, compiled = make_jax_step(cfg, random_batch(p))
  run()  # the first execution allocates; not traced
  calls, bodies = parse_hlo(compiled.as_text())
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='profile_step_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      run()
  times = thunk_times(trace_dir)

  by_category, by_name, unmatched = (collections.Counter() for _ in range(3))
  for name, us in times.items():
    if name in calls:
      by_category[categorise(instruction_ops(name, calls, bodies), p['vocab_size'])] += us
      by_name[name] += us
    else:
      unmatched[name] += us  # the executable's own span and runtime events, not thunks
  total = sum(by_category.values())
  if not total:
    raise RuntimeError('no trace event matched an HLO instruction: the trace format changed; '
                       f'event names seen: {sorted(times)[:10]}')
  per_step_ms = {c: by_category[c] / 1e3 / args.steps for c in CATEGORIES}
  print(f'{"category":28s} {"ms/step":>9s} {"share":>7s}')
  for c in CATEGORIES:
    print(f'{c:28s} {per_step_ms[c]:9.1f} {by_category[c] / total:7.1%}')
  print(f'{"sum of thunk times":28s} {total / 1e3 / args.steps:9.1f}')
  print('slowest instructions (ms/step, category):')
  for name, us in by_name.most_common(args.top):
    category = categorise(instruction_ops(name, calls, bodies), p['vocab_size'])
    print(f'  {name:40s} {us / 1e3 / args.steps:8.1f}  {category}')
  print('events that are not HLO instructions (ms/step):',
        {n: round(us / 1e3 / args.steps, 1) for n, us in unmatched.most_common(5)})
  print(json.dumps({
      'preset': args.preset, 'dtype': args.dtype, 'dropout': args.dropout, 'steps': args.steps,
      'thunk_ms_per_step': round(total / 1e3 / args.steps, 1),
      'share': {c: round(by_category[c] / total, 4) for c in CATEGORIES},
      'ms_per_step': {c: round(v, 1) for c, v in per_step_ms.items()},
      'trace_dir': trace_dir, 'jax': jax.__version__}))


if __name__ == '__main__':
  main()
