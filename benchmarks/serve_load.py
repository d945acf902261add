"""The server under load: throughput and latency against offline `Translator.translate`.

    python benchmarks/serve_load.py --workdir runs/multi30k_en_de \
        [--input ../shared/data/multi30k/val.en] [--sentences 256] [--concurrency 1,8,32,128]
        [--beams 1,4] [--rounds 3]

For each beam size it measures, in one process and one sitting:
- offline: `Translator.translate` of all the sentences at once (sorted into batches of 64),
  sentences/s; and each sentence alone (`batch_size=1`), its decode time (p50, p99);
- served: a real `serve.py` (one with dynamic batching, one with --nobatching) on
  127.0.0.1, fed by C concurrent clients that each send one sentence per request until the
  sentences run out: sentences/s and request latency p50/p99 at every concurrency C.
Each figure is the median over --rounds (rounds interleave offline and served runs).
The clients run in this process on the same 2 cores as the server: at high concurrency they
take CPU from it, so the served figures are a lower bound.

Targets (issue 22): at concurrency 32 the batching server's throughput >= 80% of offline; at
concurrency 1 its p99 latency <= 2x a single sentence's decode time (its p99, same sentences).
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import re
import statistics
import sys
import time

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tests'))

from serve_process import ServeProcess  # noqa: E402


def percentile(values, q):
  values = sorted(values)
  return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def _post(reader, writer, host: bytes, body: bytes) -> tuple[int, bytes]:
  """One POST /v1/translate on a kept-alive connection (uvicorn always sends Content-Length)."""
  writer.write(b'POST /v1/translate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n'
               b'Content-Length: %d\r\n\r\n%s' % (host, len(body), body))
  await writer.drain()
  head = await reader.readuntil(b'\r\n\r\n')
  status = int(head.split(b' ', 2)[1])
  length = int(re.search(rb'(?i)\r\ncontent-length: *(\d+)', head).group(1))
  return status, await reader.readexactly(length)


async def _load(url, sentences, concurrency, beam_size):
  """(wall seconds, request latencies) of sending every sentence alone, C at a time.

  The clients speak HTTP/1.1 over raw asyncio streams, one kept-alive connection each: httpx's
  connection pool costs ~3 ms of CPU a request at 32 connections, which on 2 cores shared with
  the server measured the client, not the server.
  """
  host, port = url.removeprefix('http://').split(':')
  queue = asyncio.Queue()
  for s in sentences:
    queue.put_nowait(json.dumps({'texts': [s], 'beam_size': beam_size}).encode())
  latencies = []

  async def client():
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
      while not queue.empty():
        body = queue.get_nowait()
        start = time.perf_counter()
        status, answer = await _post(reader, writer, host.encode(), body)
        if status != 200:
          raise RuntimeError(f'{status}: {answer[:300]!r}')
        latencies.append(time.perf_counter() - start)
    finally:
      writer.close()

  start = time.perf_counter()
  await asyncio.gather(*(client() for _ in range(concurrency)))
  return time.perf_counter() - start, latencies


def served(url, sentences, concurrency, beam_size):
  wall, latencies = asyncio.run(_load(url, sentences, concurrency, beam_size))
  return {'sent_per_s': len(sentences) / wall, 'p50_ms': percentile(latencies, 50) * 1e3,
          'p99_ms': percentile(latencies, 99) * 1e3}


def offline(translator, sentences, beam_size):
  start = time.perf_counter()
  translator.translate(sentences, beam_size=beam_size)
  return {'sent_per_s': len(sentences) / (time.perf_counter() - start)}


def single(translator, sentences, beam_size):
  times = []
  for s in sentences:
    start = time.perf_counter()
    translator.translate([s], beam_size=beam_size, batch_size=1)
    times.append(time.perf_counter() - start)
  return {'p50_ms': percentile(times, 50) * 1e3, 'p99_ms': percentile(times, 99) * 1e3}


def median_of(rounds):
  return {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/multi30k_en_de')
  parser.add_argument('--input', default=os.path.join(
      os.environ.get('MULTI30K_DIR', '../shared/data/multi30k'), 'val.en'))
  parser.add_argument('--sentences', type=int, default=256)
  parser.add_argument('--single_sentences', type=int, default=64,
                      help='sentences for concurrency 1 and the one-at-a-time decode times')
  parser.add_argument('--concurrency', default='1,8,32,128')
  parser.add_argument('--beams', default='1,4')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--compile_cache', default=str(Path.home() / '.cache/transformer_jax/xla'))
  args = parser.parse_args()
  import jax
  jax.config.update('jax_compilation_cache_dir', args.compile_cache)
  from transformer_jax.decoding.translator import Translator
  lines = [l.strip() for l in Path(args.input).read_text(encoding='utf-8').splitlines()]
  sentences = [l for l in lines if l][:args.sentences]
  few = sentences[:args.single_sentences]
  levels = [int(c) for c in args.concurrency.split(',')]
  beams = [int(b) for b in args.beams.split(',')]
  translator = Translator(args.workdir)
  for beam in beams:  # compile the offline shapes outside the timings
    translator.translate(sentences, beam_size=beam)
    translator.translate(few, beam_size=beam, batch_size=1)

  results = {}
  servers = {}
  try:
    for batching in (True, False):
      flags = ['--beam_sizes=' + ','.join(map(str, sorted(set(beams) | {4}))),
               '--max_queue=100000', '--timeout_s=600']
      if not batching:
        flags.append('--nobatching')
      servers[batching] = ServeProcess(args.workdir, args.compile_cache, *flags, shapes=())
      servers[batching].wait_ready(3600)
    for beam in beams:
      for batching, server in servers.items():  # warm each server at this beam size
        served(server.url, few[:16], 8, beam)
      rounds = {'offline': [], 'single': []}
      for r in range(args.rounds):
        rounds['offline'].append(offline(translator, sentences, beam))
        rounds['single'].append(single(translator, few, beam))
        for batching, server in servers.items():
          for c in levels:
            data = few if c == 1 else sentences
            key = f'{"batching" if batching else "no_batching"}_c{c}'
            rounds.setdefault(key, []).append(served(server.url, data, c, beam))
        print(json.dumps({'beam': beam, 'round': r, **{k: v[-1] for k, v in rounds.items()}}),
              flush=True)
      results[f'beam{beam}'] = {k: median_of(v) for k, v in rounds.items()}
      b = results[f'beam{beam}']

      def ratio(key, field, base, base_field):  # the median of the per-round ratios
        return round(statistics.median(
            s[field] / o[base_field] for s, o in zip(rounds[key], rounds[base])), 3)
      for c in levels:
        b[f'c{c}_over_offline'] = ratio(f'batching_c{c}', 'sent_per_s', 'offline', 'sent_per_s')
      if 1 in levels:
        b['c1_p99_over_single_p99'] = ratio('batching_c1', 'p99_ms', 'single', 'p99_ms')
        b['c1_p99_over_single_p50'] = ratio('batching_c1', 'p99_ms', 'single', 'p50_ms')
      print(json.dumps({f'beam{beam}': b}), flush=True)
  finally:
    for server in servers.values():
      server.close()
  print(json.dumps({'workdir': args.workdir, 'sentences': len(sentences),
                    'single_sentences': len(few), 'rounds': args.rounds, **results}))


if __name__ == '__main__':
  main()
