"""Decoding throughput: sentences/s for greedy and beam-4 search, random weights.

    python benchmarks/decode.py [--batch 64] [--src_len 32] [--max_length 32] [--repeats 5]
                                [--dtype bfloat16]

Defaults are the S preset (vocab 8192, d_model 256, 4 heads, d_ff 1024, 3+3
layers). Every decode runs all max_length steps (stop_early=False), so the
figure does not depend on when a random model happens to emit eos. Compilation
is timed separately; each figure is the median of --repeats timed runs. A
2048³ float32 matmul timed before and after gives this machine's rate
(`peak_gflops`), by which the issue's targets are rescaled (`scaled_target_*`).
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from transformer_jax.decoding.decoder import make_decoder  # noqa: E402
from transformer_jax.nn.config import TransformerConfig  # noqa: E402
from transformer_jax.nn.model import Transformer  # noqa: E402
from benchmarks.train_step import PEAK_N, timed, make_peak_matmul  # noqa: E402

# The targets (sentences/s), set on a machine whose 2048³ f32 matmul ran at ~460 GFLOP/s;
# `scaled_target_*` rescales them by this machine's matmul rate measured in the same process.
TARGETS = {'greedy': 370.0, 'beam4': 110.0}
TARGET_MACHINE_GFLOPS = 460.0


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _time(fn, *args, repeats):
  """(compile seconds, median seconds per run, all runs, CPU cores used while running)."""
  start = time.perf_counter()
  fn = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(fn(*args))  # warm-up: first-run allocations stay out of the figures
  runs, cpu_start = [], _cpu_seconds()
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - start)
  # Below os.cpu_count(): other processes took part of the machine during the runs.
  cores_used = (_cpu_seconds() - cpu_start) / sum(runs)
  return compile_s, statistics.median(runs), runs, cores_used


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--src_len', type=int, default=32)
  parser.add_argument('--max_length', type=int, default=32)
  parser.add_argument('--beam_size', type=int, default=4)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--vocab_size', type=int, default=8192)
  parser.add_argument('--d_model', type=int, default=256)
  parser.add_argument('--num_heads', type=int, default=4)
  parser.add_argument('--d_ff', type=int, default=1024)
  parser.add_argument('--num_layers', type=int, default=3)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='compute dtype (TransformerConfig.dtype); params stay float32')
  args = parser.parse_args(argv)

  cfg = TransformerConfig(vocab_size=args.vocab_size, d_model=args.d_model,
                          num_heads=args.num_heads, d_ff=args.d_ff,
                          num_encoder_layers=args.num_layers, num_decoder_layers=args.num_layers,
                          dropout_rate=0.0, dtype=args.dtype)
  graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
  # Full-length sources (tokens + eos, no padding): the encoder's worst case.
  inputs_BS = jax.random.randint(jax.random.key(1), (args.batch, args.src_len), 4,
                                 args.vocab_size).at[:, -1].set(3)
  common = dict(max_length=args.max_length, stop_early=False)
  greedy = make_decoder(graphdef, **common)
  beam = make_decoder(graphdef, beam_size=args.beam_size, **common)
  load_before = os.getloadavg()[0]
  matmul = make_peak_matmul()
  matmul_s = [timed(matmul) for _ in range(5)]
  compile_g, median_g, runs_g, cores_g = _time(greedy, state, inputs_BS, repeats=args.repeats)
  compile_b, median_b, runs_b, cores_b = _time(beam, state, inputs_BS, repeats=args.repeats)
  matmul_s += [timed(matmul) for _ in range(5)]
  peak_gflops = 2 * PEAK_N ** 3 / statistics.median(matmul_s) / 1e9
  scale = peak_gflops / TARGET_MACHINE_GFLOPS
  print(f'greedy: {[round(r, 3) for r in runs_g]} s per batch, {cores_g:.2f} cores busy')
  print(f'beam{args.beam_size}: {[round(r, 3) for r in runs_b]} s per batch, '
        f'{cores_b:.2f} cores busy')
  print(json.dumps({
      'greedy_sent_per_s': round(args.batch / median_g, 1),
      f'beam{args.beam_size}_sent_per_s': round(args.batch / median_b, 1),
      'compile_s_greedy': round(compile_g, 2),
      f'compile_s_beam{args.beam_size}': round(compile_b, 2),
      'batch': args.batch, 'src_len': args.src_len, 'max_length': args.max_length,
      'beam_size': args.beam_size, 'vocab_size': cfg.vocab_size, 'd_model': cfg.d_model,
      'num_heads': cfg.num_heads, 'd_ff': cfg.d_ff, 'num_layers': args.num_layers,
      'repeats': args.repeats, 'backend': jax.default_backend(), 'cpu_count': os.cpu_count(),
      # Per CPU-second of this process: less sensitive to other load than wall-clock figures.
      'greedy_sent_per_cpu_s': round(args.batch / (median_g * cores_g), 1),
      f'beam{args.beam_size}_sent_per_cpu_s': round(args.batch / (median_b * cores_b), 1),
      'cores_used_greedy': round(cores_g, 2), f'cores_used_beam{args.beam_size}': round(cores_b, 2),
      'dtype': args.dtype, 'peak_gflops': round(peak_gflops, 1),
      'scaled_target_greedy': round(TARGETS['greedy'] * scale, 1),
      'scaled_target_beam4': round(TARGETS['beam4'] * scale, 1),
      'load_avg_1m_before': round(load_before, 2),
      'load_avg_1m_after': round(os.getloadavg()[0], 2),
  }))


if __name__ == '__main__':
  main()
