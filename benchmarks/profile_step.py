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
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402

from benchmarks.hlo_profile import parse_hlo, summarise, thunk_times  # noqa: E402
from benchmarks.train_step import PRESETS, make_jax_step, model_config, random_batch  # noqa: E402
from transformer_jax.host_memory import reuse_freed_host_memory  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='M30K')
  parser.add_argument('--steps', type=int, default=3, help='traced steps')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='float32')
  parser.add_argument('--dropout', type=float, default=0.3)
  parser.add_argument('--trace-dir', default=None, help='keep the trace here (default: a temp dir)')
  parser.add_argument('--top', type=int, default=12, help='slowest instructions listed')
  parser.add_argument('--system-malloc', action='store_true',
                      help="glibc's defaults (see train_step.py)")
  args = parser.parse_args(argv)
  host_memory_reused = False if args.system_malloc else reuse_freed_host_memory()

  p = PRESETS[args.preset]
  cfg = model_config(p, dtype=args.dtype, dropout=args.dropout)
  run, _, compiled = make_jax_step(cfg, random_batch(p))
  run()  # the first execution allocates; not traced
  calls, bodies = parse_hlo(compiled.as_text())
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='profile_step_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      run()
  summary = summarise(thunk_times(trace_dir), calls, bodies, p['vocab_size'], args.steps,
                      args.top)
  print(json.dumps({'preset': args.preset, 'dtype': args.dtype, 'dropout': args.dropout,
                    'steps': args.steps, 'host_memory_reused': host_memory_reused, **summary,
                    'trace_dir': trace_dir, 'jax': jax.__version__}))


if __name__ == '__main__':
  main()
