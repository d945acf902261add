"""`python translate.py` / `transformer-jax-translate`: translate a file (or stdin) with a
trained work directory or a Hugging Face Marian / OPUS-MT model directory; optionally score it.

  transformer-jax-translate --workdir runs/multi30k_en_de --input val.en --output val.hyp.de \
      --reference val.de
  transformer-jax-translate --pretrained opus-mt-en-de --input val.en --beam_size 4
One output line per input line, in order. Scores (cased sacreBLEU with its
signature, lowercased BLEU, chrF) go to stderr, or to --score_file as JSON.
"""
import json
import sys
import time

from absl import app, flags

from transformer_jax.cli.errors import report_user_errors

flags.DEFINE_string('workdir', None, 'Work directory written by train.py.')
flags.DEFINE_string('pretrained', None, 'Instead of --workdir: a Hugging Face Marian / OPUS-MT '
                    'model directory (config.json, model.safetensors, source.spm, target.spm, '
                    "vocab.json), read offline; needs the interop extra.")
flags.DEFINE_string('input', '-', 'Source sentences, one per line; - = stdin.')
flags.DEFINE_string('output', '-', 'Where translations go, one per line; - = stdout.')
flags.DEFINE_integer('beam_size', None, "Beam size; 1 = greedy (default: the run's "
                     'eval.beam_size, the one its validation BLEU was measured with).', lower_bound=1)
flags.DEFINE_float('alpha', None, "GNMT length penalty exponent: ((5+len)/6)^alpha (default: the "
                   "run's eval.alpha).", lower_bound=0)
flags.DEFINE_integer('batch_size', 64, 'Sentences decoded together.', lower_bound=1)
flags.DEFINE_integer('max_length', None, 'Longest translation in tokens (default: the model\'s).')
flags.DEFINE_string('checkpoint', 'best', 'best | latest | <step> | average:N (--workdir only)')
flags.DEFINE_bool('ema', True, 'Use the EMA params of a run trained with ema_decay > 0 '
                  '(--noema: the raw params).')
flags.DEFINE_string('reference', None, 'Reference translations; prints sacreBLEU scores.')
flags.DEFINE_string('score_file', None, 'Write the scores as JSON here instead of stderr.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from tqdm.auto import tqdm
  from transformer_jax.cli.inputs import (check_output_path, load_translator_from_flags,
                                          read_sources_and_references)
  from transformer_jax.cli.logs import quiet_libraries
  from transformer_jax.scoring import bleu_report
  from transformer_jax.text_files import write_text_atomically
  quiet_libraries()
  check_output_path(FLAGS.output, 'output')
  if FLAGS.score_file:
    check_output_path(FLAGS.score_file, 'score_file')
  sources, references = read_sources_and_references(FLAGS.input, FLAGS.reference)
  translator = load_translator_from_flags(FLAGS.workdir, FLAGS.pretrained, FLAGS.checkpoint,
                                          FLAGS.ema)
  beam_size, alpha = translator.decoding_settings(FLAGS.beam_size, FLAGS.alpha)
  start = time.perf_counter()
  with tqdm(total=len(sources), unit='sent', disable=FLAGS.input == '-', file=sys.stderr) as bar:
    hyps = translator.translate(sources, beam_size=beam_size, alpha=alpha,
                                batch_size=FLAGS.batch_size, max_length=FLAGS.max_length,
                                progress=bar.update)
  seconds = time.perf_counter() - start
  text = ''.join(h + '\n' for h in hyps)
  if FLAGS.output == '-':
    sys.stdout.write(text)
  else:
    write_text_atomically(FLAGS.output, text)
  print(f'translated {len(sources)} lines in {seconds:.1f}s with {translator.checkpoint_description}'
        f', beam {beam_size}, alpha {alpha}'
        + (f' ({translator.num_truncated} truncated)' if translator.num_truncated else ''),
        file=sys.stderr)
  if references is not None:
    scores = {**bleu_report(hyps, references), 'seconds': round(seconds, 2),
              'beam_size': beam_size, 'alpha': alpha,
              'checkpoint': translator.checkpoint_description}
    if FLAGS.score_file:
      write_text_atomically(FLAGS.score_file, json.dumps(scores, indent=2) + '\n')
    else:
      print(json.dumps(scores, indent=2), file=sys.stderr)


def run() -> None:
  """The console entry point."""
  app.run(report_user_errors(main))


if __name__ == '__main__':
  run()
