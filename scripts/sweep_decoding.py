"""Choose the beam size and length penalty α on a validation file: BLEU for each setting.

  python scripts/sweep_decoding.py --workdir runs/en_de_s0 --checkpoint latest \\
      --input ../shared/data/multi30k/val.en --reference ../shared/data/multi30k/val.de \\
      --beam_sizes 1,4,5,8 --alphas 0.6,1.0 --output runs/en_de_s0/decoding_sweep.jsonl

The params are loaded once. Each setting's scores (cased sacreBLEU with its signature,
lowercased BLEU, chrF, seconds) are appended to --output as one JSON line as soon as they are
measured, so a stopped sweep keeps what it finished; the best setting is printed at the end.
Tune on the validation split only.
"""
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string('workdir', None, 'Work directory written by train.py.', required=True)
flags.DEFINE_string('input', None, 'Source sentences, one per line.', required=True)
flags.DEFINE_string('reference', None, 'Reference translations, line by line.', required=True)
flags.DEFINE_list('beam_sizes', ['1', '4', '5', '8'], 'Beam sizes to try; 1 = greedy.')
flags.DEFINE_list('alphas', ['0.6', '1.0'], 'Length penalty exponents to try with beam > 1.')
flags.DEFINE_string('checkpoint', 'best', 'best | latest | <step> | average:N')
flags.DEFINE_bool('ema', True, 'Use the EMA params of a run trained with ema_decay > 0.')
flags.DEFINE_integer('batch_size', 64, 'Sentences decoded together.', lower_bound=1)
flags.DEFINE_string('output', None, 'Append one JSON line per setting here (default: stdout).')
FLAGS = flags.FLAGS


def _parse_grid(values, flag, kind, lowest):
  try:
    parsed = [kind(v) for v in values]
  except ValueError:
    raise app.UsageError(f'--{flag}={",".join(values)}: not a comma-separated list of '
                         f'{kind.__name__}s') from None
  if not parsed or min(parsed) < lowest:
    raise app.UsageError(f'--{flag}={",".join(values)}: give at least one value, each >= {lowest}')
  return parsed


def main(argv):
  del argv
  beam_sizes = _parse_grid(FLAGS.beam_sizes, 'beam_sizes', int, 1)
  alphas = _parse_grid(FLAGS.alphas, 'alphas', float, 0.0)
  from transformer_jax.cli.inputs import load_translator, read_sources_and_references
  from transformer_jax.scoring import sweep_decoding
  from transformer_jax.cli.logs import quiet_libraries
  quiet_libraries()
  sources, references = read_sources_and_references(FLAGS.input, FLAGS.reference)
  translator = load_translator(FLAGS.workdir, FLAGS.checkpoint, FLAGS.ema)

  def translate(beam_size, alpha):
    return translator.translate(sources, beam_size=beam_size, alpha=alpha,
                                batch_size=FLAGS.batch_size)

  results = []
  for result in sweep_decoding(translate, references, beam_sizes, alphas):
    result['checkpoint'] = translator.checkpoint_description
    line = json.dumps(result)
    if FLAGS.output:
      with open(FLAGS.output, 'a', encoding='utf-8') as f:
        f.write(line + '\n')
    print(line, flush=True)
    results.append(result)
  best = max(results, key=lambda r: r['bleu'])
  print(f'best on {FLAGS.input}: beam {best["beam_size"]}, alpha {best["alpha"]}: '
        f'BLEU {best["bleu"]} (lowercased {best["bleu_lowercase"]}, chrF {best["chrf"]})',
        file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
