"""Translating a trained run: the CLI writes what the Translator gives, the run's eval settings
are the defaults, and the decoding sweep scores each setting like a direct translation."""
import json
import subprocess
import sys

import pytest

from transformer_jax.scoring import bleu_report, sweep_decoding
from transformer_jax.decoding.translator import Translator
from run_helpers import REPO


def _val_text(corpus):
  return [(corpus['raw'] / f'val.{lang}').read_text(encoding='utf-8').splitlines()
          for lang in ('en', 'de')]


def test_translate_cli_writes_what_the_translator_gives(straight_run, corpus, tmp_path):
  workdir, _ = straight_run
  sources, references = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  # Without --beam_size/--alpha it decodes like the run's evaluation did.
  expected = translator.translate(sources)
  assert translator.decoding_settings() == (translator.config.eval.beam_size,
                                            translator.config.eval.alpha)
  output, scores = tmp_path / 'val.hyp.de', tmp_path / 'scores.json'
  subprocess.run([sys.executable, 'translate.py', '--workdir', str(workdir), '--checkpoint',
                  'latest', '--input', str(corpus['raw'] / 'val.en'),
                  '--output', str(output), '--reference', str(corpus['raw'] / 'val.de'),
                  '--score_file', str(scores)], cwd=REPO, check=True, capture_output=True)
  assert output.read_text(encoding='utf-8').splitlines() == expected
  assert json.loads(scores.read_text())['bleu'] == bleu_report(expected, references)['bleu']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['scores.json', 'val.hyp.de']  # no .tmp


def test_translator_decodes_with_the_runs_eval_settings_unless_told(straight_run, corpus):
  workdir, _ = straight_run
  sources, _ = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  # A run whose config chose other settings (as the de→en config chose α 1.0 on val).
  translator.config.eval.beam_size, translator.config.eval.alpha = 3, 1.5
  assert translator.decoding_settings() == (3, 1.5)
  assert translator.decoding_settings(beam_size=1) == (1, 1.5)
  assert translator.decoding_settings(alpha=0.0) == (3, 0.0)  # 0 is a value, not "unset"
  sources = sources[:8]
  assert translator.translate(sources) == translator.translate(sources, beam_size=3, alpha=1.5)
  for bad in ({'beam_size': 0}, {'beam_size': 2.0}, {'alpha': -0.1}, {'alpha': float('nan')}):
    with pytest.raises(ValueError, match=next(iter(bad))):
      translator.translate(sources, **bad)


def test_decoding_sweep_scores_each_setting_like_a_direct_translation(straight_run, corpus):
  workdir, _ = straight_run
  sources, references = _val_text(corpus)
  translator = Translator(str(workdir), checkpoint='latest')
  results = list(sweep_decoding(
      lambda beam, alpha: translator.translate(sources, beam_size=beam, alpha=alpha),
      references, beam_sizes=[1, 2], alphas=[0.0, 1.0]))
  assert [(r['beam_size'], r['alpha']) for r in results] == [(1, None), (2, 0.0), (2, 1.0)]
  for r in results:
    direct = translator.translate(sources, beam_size=r['beam_size'], alpha=r['alpha'] or 0.0)
    assert {k: r[k] for k in ('bleu', 'chrf')} == {
        k: bleu_report(direct, references)[k] for k in ('bleu', 'chrf')}
    assert r['bleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')


def test_sweep_script_appends_one_line_per_setting_and_checks_its_flags(straight_run, corpus,
                                                                        tmp_path):
  workdir, _ = straight_run
  script = [sys.executable, 'scripts/sweep_decoding.py', '--workdir', str(workdir),
            '--checkpoint', 'latest', '--input', str(corpus['raw'] / 'val.en'),
            '--reference', str(corpus['raw'] / 'val.de')]
  bad = subprocess.run(script + ['--beam_sizes=4,x'], cwd=REPO, capture_output=True, text=True)
  assert bad.returncode != 0
  assert '--beam_sizes=4,x: not a comma-separated list of ints' in bad.stderr
  output = tmp_path / 'sweep.jsonl'
  output.write_text('{"kept": "an earlier sweep"}\n')
  done = subprocess.run(script + ['--beam_sizes=1,2', '--alphas=0.6', '--output', str(output)],
                        cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [json.loads(line) for line in output.read_text().splitlines()]
  assert lines[0] == {'kept': 'an earlier sweep'}
  assert [(r['beam_size'], r['alpha']) for r in lines[1:]] == [(1, None), (2, 0.6)]
  assert 'best on' in done.stderr
