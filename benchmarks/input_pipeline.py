"""Input pipeline at WMT scale: preparation time and memory, packed-batch throughput, padding.

    python scripts/make_synthetic_corpus.py --multi30k_dir ../shared/data/multi30k \
        --out /tmp/synthetic_wmt                     # 4.5M pairs, WMT14's size
    python benchmarks/input_pipeline.py --corpus /tmp/synthetic_wmt --data_dir /tmp/bench_tfds

Stages (each prints one JSON line; `--stages` picks some):
  prepare   `registry.load_splits` of the wmt14_en_de_base config pointed at the corpus, in a
            child process: wall time and the child's peak RSS (ru_maxrss), records kept and
            dropped (preparation.json), size on disk. Skipped when already prepared (then
            delete --data_dir to time it again).
  pipeline  `make_train_iterator` over the prepared ids with the base config's batch shape
            (25,600 token slots a side, rows of 128): real (non-pad) target tokens per second
            of wall time and per CPU second of this process, and the padding fraction of the
            targets and inputs; `--workers N` also times N grain worker processes.
  multi30k  the default config's text pipeline (tokenising Multi30k in the training process)
            in batches/s and target tokens/s: the small case, which must not get slower;
            `--compare_tree DIR` times another checkout's pipeline in the same rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


def base_config(corpus: str, data_dir: str):
  from transformer_jax.configs import wmt14_en_de_base
  config = wmt14_en_de_base.get_config()
  config.data.train_files = [(os.path.join(corpus, 'train.en'), os.path.join(corpus, 'train.de'))]
  config.data.validation_files = [(os.path.join(corpus, 'val.en'), os.path.join(corpus, 'val.de'))]
  config.data.data_dir = data_dir
  return config


def _prepare_child(corpus: str, data_dir: str) -> None:
  from absl import logging
  logging.set_verbosity(logging.INFO)
  from transformer_jax.data import registry
  config = base_config(corpus, data_dir)
  start = time.perf_counter()
  splits = registry.load_splits(config.data)
  print(json.dumps({'seconds': time.perf_counter() - start, 'train': len(splits['train']),
                    'validation': len(splits['validation']),
                    'prepared_dir': registry.get_dataset('parallel_text').prepared_dir(
                        config.data)}))


def stage_prepare(args) -> dict:
  from transformer_jax.data import registry
  prepared = registry.get_dataset('parallel_text').prepared_dir(
      base_config(args.corpus, args.data_dir).data)
  if os.path.isdir(os.path.join(prepared, 'parallel_text', '1.0.0')):
    return {'stage': 'prepare', 'skipped': f'{prepared} is prepared; delete it to time it'}
  start = time.perf_counter()
  out = subprocess.run([sys.executable, __file__, '--prepare_child', '--corpus', args.corpus,
                        '--data_dir', args.data_dir], capture_output=True, text=True)
  wall = time.perf_counter() - start
  if out.returncode:
    sys.exit(out.stderr[-4000:])
  child = json.loads(out.stdout.strip().splitlines()[-1])
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  with open(os.path.join(prepared, 'preparation.json')) as f:
    stats = json.load(f)
  size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(prepared)
             for n in names)
  return {'stage': 'prepare', 'wall_s': round(wall, 1), 'prepare_s': round(child['seconds'], 1),
          'peak_rss_gib': round(peak_kib / 2**20, 2), 'disk_gib': round(size / 2**30, 2),
          'train_records': child['train'], 'validation_records': child['validation'],
          'counts': stats}


def _time_batches(iterator, batches: int, warmup: int) -> dict:
  for _ in range(warmup):
    next(iterator)
  real_targets = real_inputs = slots = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    batch = next(iterator)
    real_targets += int((batch['targets_segmentation'] > 0).sum())
    real_inputs += int((batch['inputs_segmentation'] > 0).sum())
    slots += batch['targets'].size
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'target_tokens_per_s': round(real_targets / wall),
          'target_tokens_per_cpu_s': round(real_targets / cpu),
          'target_padding': round(1 - real_targets / slots, 4),
          'input_padding': round(1 - real_inputs / slots, 4),
          'batches': batches, 'seconds': round(wall, 2), 'cpu_seconds': round(cpu, 2)}


def stage_pipeline(args) -> list[dict]:
  from transformer_jax.data import pipeline, registry
  from transformer_jax.data.vocab import Vocab
  config = base_config(args.corpus, args.data_dir)
  train = registry.load_splits(config.data, ('train',))['train']
  vocab = Vocab(registry.prepared_vocab_path(config.data))
  results = []
  for workers in [0] + ([args.workers] if args.workers else []):
    rounds = []
    for round_index in range(args.rounds):
      iterator = pipeline.make_train_iterator(
          train, vocab, source_lang='en', target_lang='de', batch_tokens=config.batch_tokens,
          max_length=config.data.max_length, seed=round_index, num_workers=workers)
      rounds.append(_time_batches(iterator, args.batches, warmup=3 if workers else 1))
      if workers:
        iterator.close()
    best = statistics.median(r['target_tokens_per_s'] for r in rounds)
    results.append({'stage': 'pipeline', 'workers': workers, 'rounds': rounds,
                    'median_target_tokens_per_s': best,
                    'median_target_tokens_per_cpu_s': statistics.median(
                        r['target_tokens_per_cpu_s'] for r in rounds),
                    'rows': config.batch_tokens // config.data.max_length,
                    'max_length': config.data.max_length})
  return results


_MULTI30K_SNIPPET = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from transformer_jax.configs import multi30k
from transformer_jax.data import pipeline, registry
from transformer_jax.data.vocab import load_or_train_vocab
config = multi30k.get_config()
config.data.manual_dir = sys.argv[2]
train = registry.load_splits(config.data, ('train',))['train']
vocab = load_or_train_vocab(train, sys.argv[3], vocab_size=8000, languages=('en', 'de'))
it = pipeline.make_train_iterator(train, vocab, source_lang='en', target_lang='de',
                                  batch_tokens=config.batch_tokens,
                                  max_length=config.data.max_length, seed=0)
next(it)
n, tokens, start = int(sys.argv[4]), 0, time.perf_counter()
for _ in range(n):
  tokens += int((next(it)['targets_segmentation'] > 0).sum())
seconds = time.perf_counter() - start
print(json.dumps({'batches_per_s': n / seconds, 'target_tokens_per_s': tokens / seconds}))
'''


def stage_multi30k(args) -> dict:
  manual = args.multi30k_dir or os.environ.get('MULTI30K_DIR')
  if not manual:
    sys.exit('the multi30k stage needs --multi30k_dir or $MULTI30K_DIR')
  trees = {'this': ROOT} | ({'compare': args.compare_tree} if args.compare_tree else {})
  vocab_dir = os.path.join(args.data_dir, 'multi30k_vocab')
  runs = {name: [] for name in trees}
  for _ in range(args.rounds):
    for name, tree in trees.items():  # interleaved: load hits both alike
      out = subprocess.run([sys.executable, '-c', _MULTI30K_SNIPPET, tree, manual, vocab_dir,
                            str(args.multi30k_batches)], capture_output=True, text=True)
      if out.returncode:
        sys.exit(out.stderr[-4000:])
      runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
  result = {'stage': 'multi30k', 'rounds': runs}
  for name, rounds in runs.items():
    result[f'{name}_median_target_tokens_per_s'] = round(statistics.median(
        r['target_tokens_per_s'] for r in rounds))
  if args.compare_tree:
    result['this_over_compare'] = round(statistics.median(
        a['target_tokens_per_s'] / b['target_tokens_per_s']
        for a, b in zip(runs['this'], runs['compare'])), 3)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--corpus', help='directory with train.{en,de}, val.{en,de}')
  parser.add_argument('--data_dir', default='/tmp/bench_tfds')
  parser.add_argument('--stages', default='prepare,pipeline,multi30k')
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--workers', type=int, default=0)
  parser.add_argument('--multi30k_dir')
  parser.add_argument('--multi30k_batches', type=int, default=100)
  parser.add_argument('--compare_tree')
  parser.add_argument('--prepare_child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.prepare_child:
    return _prepare_child(args.corpus, args.data_dir)
  for stage in args.stages.split(','):
    result = {'prepare': stage_prepare, 'pipeline': stage_pipeline,
              'multi30k': stage_multi30k}[stage](args)
    for line in result if isinstance(result, list) else [result]:
      print(json.dumps(line), flush=True)


if __name__ == '__main__':
  main()
