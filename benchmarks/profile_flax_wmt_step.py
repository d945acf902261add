"""The Flax `examples/wmt` reference's train step, profiled as benchmarks/profile_step.py profiles
ours (same trace, same categories: benchmarks/hlo_profile.py). Run it with the reference's venv:

    bash ../shared/anchors/setup.sh
    /tmp/anchors/venv/bin/python benchmarks/profile_flax_wmt_step.py --preset S [--steps 3]

Nothing of the reference is copied here: its own `bench_train.bench_flax` builds and runs the
step; this script only watches it — `jax.jit` is wrapped so that the compiled step's HLO is kept
and the trace covers `--steps` of its calls after the first (which allocates). Compare with
`python benchmarks/profile_step.py --preset S --dropout 0.1` (the reference also drops out the
attention weights at 0.1; ours does not at that preset). The last line printed is one JSON object.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHORS = os.path.join(HERE, '..', '..', 'shared', 'anchors')
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, ANCHORS)

import jax  # noqa: E402

from benchmarks.hlo_profile import parse_hlo, summarise, thunk_times  # noqa: E402


class _Watched:
  """A compiled executable that starts the trace at call `first` and stops it `steps` later."""

  def __init__(self, compiled, first: int, steps: int, trace_dir: str):
    self._compiled, self._first, self._steps, self._dir = compiled, first, steps, trace_dir
    self.calls = 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    if self.calls == self._first:
      jax.profiler.start_trace(self._dir, create_perfetto_trace=True)
    out = self._compiled(*args, **kwargs)
    if self.calls == self._first + self._steps - 1:
      jax.block_until_ready(out)
      jax.profiler.stop_trace()
    return out

  def __getattr__(self, name):
    return getattr(self._compiled, name)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='S')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=12)
  args = parser.parse_args()
  import bench_train  # the reference's harness, from ../shared/anchors
  trace_dir = tempfile.mkdtemp(prefix='profile_flax_wmt_')
  watched = {}
  real_jit = jax.jit

  def watching_jit(fun, *a, **k):
    jitted = real_jit(fun, *a, **k)
    if 'donate_argnums' not in k:  # model init: not the step
      return jitted

    class Lowerable:
      def lower(self, *la, **lk):
        lowered = jitted.lower(*la, **lk)

        class Compilable:
          def compile(self):
            compiled = lowered.compile()
            watched['hlo'] = compiled.as_text()
            watched['step'] = _Watched(compiled, first=3, steps=args.steps, trace_dir=trace_dir)
            return watched['step']
        return Compilable()
    return Lowerable()

  bench_train.jax.jit = watching_jit
  # bench_flax calls the step: once (first execution), once more, then steps x repeats timed.
  bench_train.bench_flax(bench_train.PRESETS[args.preset], steps=args.steps, repeats=1)
  calls, bodies = parse_hlo(watched['hlo'])
  summary = summarise(thunk_times(trace_dir), calls, bodies,
                      bench_train.PRESETS[args.preset]['vocab'], args.steps, args.top)
  print(json.dumps({'preset': args.preset, 'implementation': 'flax examples/wmt',
                    'steps': args.steps, **summary, 'trace_dir': trace_dir,
                    'jax': jax.__version__}))


if __name__ == '__main__':
  main()
