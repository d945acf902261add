"""One model, three decoders: this project, transformers `generate` (torch) and CTranslate2.

    python benchmarks/interop_decode.py --workdir runs/multi30k_en_de [--rounds 3]

Exports the run (best checkpoint, EMA) to Hugging Face Marian and converts that to CTranslate2,
then translates the 1,014 Multi30k val sentences with each, greedy and beam 4, in batches of 64.
Every decoder gets the same batches (sentences sorted by source length, as Translator.translate
makes them) and the same length cap per batch (min(max_decode_length, 1.5 · source + 10),
rounded up to 16); all use 2 threads. Rounds interleave the systems; each figure is the median
over rounds, after one untimed warm-up pass per system (compilation, first allocations).

Length penalties: ours is GNMT's ((5 + L) / 6)^α with the run's α; transformers and CTranslate2
divide by L^α. Both at the run's α (0.6): the same search with different length rules, so BLEU
(sacreBLEU, cased) is reported beside the speed. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402

from benchmarks.train_step import PEAK_N, make_peak_matmul, timed  # noqa: E402


def _batches(translator, sentences, batch_size):
  """[(indices, decode length)]: the batches Translator.translate makes."""
  return [(idx, decode_len) for idx, _, decode_len
          in translator.batches(translator.encode_sources(sentences), batch_size)]


def _ours(translator, beam, alpha, batch_size):
  def run(sentences):
    return translator.translate(sentences, beam_size=beam, alpha=alpha, batch_size=batch_size)
  return run


def _transformers(directory, translator, beam, alpha, batch_size):
  import torch
  from transformers import MarianMTModel, MarianTokenizer
  torch.set_num_threads(2)
  model = MarianMTModel.from_pretrained(directory).eval()
  tokenizer = MarianTokenizer.from_pretrained(directory)

  def run(sentences):
    out = [''] * len(sentences)
    for idx, length in _batches(translator, sentences, batch_size):
      batch = tokenizer([sentences[i] for i in idx], return_tensors='pt', padding=True,
                        truncation=True, max_length=translator.max_length)
      with torch.inference_mode():
        generated = model.generate(**batch, num_beams=beam, do_sample=False,
                                   max_new_tokens=length, length_penalty=alpha,
                                   early_stopping=False)
      for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
        out[i] = text
    return out
  return run


def _ctranslate2(directory, hf_directory, translator, beam, alpha, batch_size, compute_type):
  import ctranslate2
  from transformers import MarianTokenizer
  tokenizer = MarianTokenizer.from_pretrained(hf_directory)
  model = ctranslate2.Translator(directory, device='cpu', compute_type=compute_type,
                                 inter_threads=1, intra_threads=2)

  def run(sentences):
    out = [''] * len(sentences)
    for idx, length in _batches(translator, sentences, batch_size):
      tokens = [tokenizer.convert_ids_to_tokens(
          tokenizer(sentences[i], truncation=True, max_length=translator.max_length)['input_ids'])
          for i in idx]
      results = model.translate_batch(tokens, beam_size=beam, length_penalty=alpha,
                                      max_decoding_length=length, max_batch_size=batch_size,
                                      suppress_sequences=[['<pad>']])
      for i, r in zip(idx, results):
        out[i] = tokenizer.decode(tokenizer.convert_tokens_to_ids(r.hypotheses[0]),
                                  skip_special_tokens=True)
    return out
  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/multi30k_en_de')
  parser.add_argument('--checkpoint', default='best')
  parser.add_argument('--data_dir', default=os.environ.get('MULTI30K_DIR',
                                                           '../shared/data/multi30k'))
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--beams', default='1,4')
  parser.add_argument('--systems', default='ours,transformers,ct2_float32,ct2_int8')
  parser.add_argument('--limit', type=int, default=0, help='first N val sentences (0 = all)')
  args = parser.parse_args()

  import sacrebleu
  from transformer_jax import Translator
  from transformer_jax.interop import ctranslate2 as ct2_convert
  from transformer_jax.interop.marian_export import export_translator
  sources = open(os.path.join(args.data_dir, 'val.en'), encoding='utf-8').read().splitlines()
  references = open(os.path.join(args.data_dir, 'val.de'), encoding='utf-8').read().splitlines()
  if args.limit:
    sources, references = sources[:args.limit], references[:args.limit]
  translator = Translator(args.workdir, args.checkpoint)
  alpha = translator.config.eval.alpha
  work = tempfile.mkdtemp(prefix='interop_decode_')
  hf_dir = str(export_translator(translator, os.path.join(work, 'marian')))
  ct2_dir = str(ct2_convert.convert(hf_dir, os.path.join(work, 'ct2')))

  systems = {}
  for beam in map(int, args.beams.split(',')):
    for name in args.systems.split(','):
      key = f'{name} beam{beam}'
      if name == 'ours':
        systems[key] = _ours(translator, beam, alpha, args.batch)
      elif name == 'transformers':
        systems[key] = _transformers(hf_dir, translator, beam, alpha, args.batch)
      elif name.startswith('ct2_'):
        systems[key] = _ctranslate2(ct2_dir, hf_dir, translator, beam, alpha, args.batch,
                                    name.removeprefix('ct2_'))
      else:
        raise SystemExit(f'--systems: unknown system {name!r}')

  matmul = make_peak_matmul()

  def peak():  # this machine's 2048³ f32 matmul rate now, GFLOP/s (best of 3)
    return 2 * PEAK_N ** 3 / min(timed(matmul) for _ in range(3)) / 1e9
  peaks = [peak()]
  outputs = {}
  for key, run in systems.items():  # warm-up: compilation, first allocations
    outputs[key] = run(sources)
  seconds = {key: [] for key in systems}
  keys = list(systems)
  for r in range(args.rounds):
    for key in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotate the order each round
      start = time.perf_counter()
      out = systems[key](sources)
      seconds[key].append(time.perf_counter() - start)
      assert out == outputs[key], f'{key}: round {r} translated differently'
      print(f'round {r} {key}: {len(sources) / seconds[key][-1]:.1f} sent/s', flush=True)
    peaks.append(peak())

  rows = {}
  for key in keys:
    median = statistics.median(seconds[key])
    rows[key] = {'sentences_per_s': round(len(sources) / median, 1),
                 'seconds': [round(s, 2) for s in seconds[key]],
                 'bleu': round(sacrebleu.corpus_bleu(outputs[key], [references]).score, 2)}
  for beam in map(int, args.beams.split(',')):
    ours = rows.get(f'ours beam{beam}')
    for key in keys:
      if ours and key.endswith(f'beam{beam}'):
        rows[key]['ours_speedup'] = round(ours['sentences_per_s'] / rows[key]['sentences_per_s'],
                                          2)
    if f'ours beam{beam}' in outputs and f'transformers beam{beam}' in outputs:
      same = sum(a == b for a, b in zip(outputs[f'ours beam{beam}'],
                                        outputs[f'transformers beam{beam}']))
      rows[f'ours beam{beam}']['same_as_transformers'] = same
  print('| decoder | sentences/s | BLEU | ours is × faster |')
  print('|---|---|---|---|')
  for key, row in rows.items():
    print(f"| {key} | {row['sentences_per_s']} | {row['bleu']} | {row.get('ours_speedup', '')} |")
  print(json.dumps({'sentences': len(sources), 'batch': args.batch, 'alpha': alpha,
                    'checkpoint': translator.checkpoint_description, 'rounds': args.rounds,
                    'peak_gflops': [round(p, 1) for p in peaks], 'systems': rows}))


if __name__ == '__main__':
  main()
