"""Train step side by side with the Flax `examples/wmt` reference, interleaved, several rounds.

    bash ../shared/anchors/setup.sh         # the reference's own venv (once)
    python benchmarks/vs_flax_wmt.py --presets S,B --rounds 3

Each round runs, per preset, this project's `benchmarks/train_step.py` and the reference's
`../shared/anchors/bench_train.py` in fresh processes, one after the other — the order reversed
every other round, so that a machine getting faster or slower during a round favours neither —
and records target tokens/s. Ours keeps freed host memory in the process, as its train CLI
does (transformer_jax/host_memory.py); --reference-reuses-host-memory gives the reference the
same setting (benchmarks/with_reused_host_memory.py), --ours-system-malloc takes it from ours.
Prints each round's ratio (ours / reference) and, as the last line, one JSON object with every figure and the median ratio per preset.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
ANCHORS = os.path.join(ROOT, '..', 'shared', 'anchors')


def last_json(command, env=None) -> dict:
  out = subprocess.run(command, capture_output=True, text=True, env=env)
  if out.returncode:
    sys.exit(f'{" ".join(command)} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--presets', default='S,B')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--anchor_python', default=os.path.join(
      os.environ.get('ANCHORS_HOME', '/tmp/anchors'), 'venv', 'bin', 'python'))
  parser.add_argument('--reference-reuses-host-memory', action='store_true')
  parser.add_argument('--ours-system-malloc', action='store_true')
  args = parser.parse_args()
  reference_wrapper = ([os.path.join(ROOT, 'benchmarks', 'with_reused_host_memory.py')]
                       if args.reference_reuses_host_memory else [])
  ours_flags = ['--system-malloc'] if args.ours_system_malloc else []
  figures = {p: {'ours': [], 'reference': [], 'ratio': []} for p in args.presets.split(',')}
  for round_index in range(args.rounds):
    for preset in figures:
      runs = {
          'ours': [sys.executable, os.path.join(ROOT, 'benchmarks', 'train_step.py'),
                   '--preset', preset, *ours_flags],
          'reference': [args.anchor_python, *reference_wrapper,
                        os.path.join(ANCHORS, 'bench_train.py'),
                        '--preset', preset],
      }
      order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
      result = {}
      for name in order:
        out = last_json(runs[name])
        result[name] = out['tokens_per_s'] if name == 'ours' else out['flax_tokens_per_s']
      for name in runs:
        figures[preset][name].append(round(result[name], 1))
      ratio = result['ours'] / result['reference']
      figures[preset]['ratio'].append(round(ratio, 3))
      print(f'round {round_index} {preset}: ours {result["ours"]:.1f} tok/s, reference '
            f'{result["reference"]:.1f} tok/s, ratio {ratio:.3f}', flush=True)
  for preset, f in figures.items():
    f['median_ratio'] = statistics.median(f['ratio'])
  print(json.dumps({'ours_reuses_host_memory': not args.ours_system_malloc,
                    'reference_reuses_host_memory': args.reference_reuses_host_memory,
                    **figures}))


if __name__ == '__main__':
  main()
