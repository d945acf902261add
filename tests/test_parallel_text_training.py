"""Training on parallel_text end to end: your own files by `train.py` flags alone, and the
WMT14 configs on fixture files laid out as scripts/get_wmt14.sh lays out the real ones."""
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

import parallel_text_fixture as ptf
from run_helpers import REPO, summary_record
from transformer_jax.configs import wmt14_en_de_base, wmt14_en_de_big
from transformer_jax.data import registry
from transformer_jax.training import loop
from transformer_jax.workdir import WorkDir


def test_your_own_tsv_trains_with_flags_alone(tmp_path, compile_cache):
  tsv = ptf.write_tsv(tmp_path / 'my_corpus.tsv', ptf.pairs(300), compression='.gz')
  workdir = tmp_path / 'run'
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': compile_cache,
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}
  flags = {'data.dataset': 'parallel_text', 'data.source_lang': 'fr', 'data.target_lang': 'cs',
           'data.train_files': tsv, 'data.validation_size': 20,
           'data.data_dir': str(tmp_path / 'tfds'), 'data.vocab_size': 100,
           'num_train_steps': 4, 'eval_every_steps': 4, 'checkpoint_every_steps': 4,
           'optimizer.cooldown_steps': 2,
           'eval.num_bleu_sentences': 8, 'eval.max_decode_length': 12, 'log_every_steps': 2}
  result = subprocess.run(
      [sys.executable, 'train.py', '--config', 'configs/tiny.py', '--workdir', str(workdir),
       *[f'--config.{k}={v}' for k, v in flags.items()]],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert summary_record(workdir)['summary_step'] == 4
  prepared = registry.get_dataset('parallel_text').prepared_dir(WorkDir(str(workdir)).read_config().data)
  assert (workdir / 'vocab' / 'spm.model').read_bytes() == Path(prepared, 'spm.model').read_bytes()
  fingerprint = json.loads((workdir / 'data_fingerprint.json').read_text())
  assert list(fingerprint) == ['train[0]:tsv'] and 'my_corpus.tsv.gz' in fingerprint['train[0]:tsv']


def _wmt14_layout(directory: Path) -> None:
  """The files get_wmt14.sh writes, with toy pairs (en = the fixture's source side)."""
  directory.mkdir(parents=True)
  for k, corpus in enumerate(wmt14_en_de_base.TRAIN_CORPORA):
    pairs = ptf.pairs(150, seed=10 + k)
    for lang, side in (('en', 0), ('de', 1)):
      ptf.write_lines(directory / f'{corpus}.{lang}', [p[side] for p in pairs])
  for k, stem in enumerate((wmt14_en_de_base.VALIDATION, wmt14_en_de_base.TEST)):
    pairs = ptf.pairs(20, seed=20 + k)
    for lang, side in (('en', 0), ('de', 1)):
      ptf.write_lines(directory / f'{stem}.{lang}', [p[side] for p in pairs])


@pytest.mark.parametrize('module', [wmt14_en_de_base, wmt14_en_de_big])
def test_wmt14_configs_point_at_the_files_get_wmt14_writes(module, tmp_path, monkeypatch):
  monkeypatch.setenv('WMT14_DIR', str(tmp_path))
  config = module.get_config()
  expected = [(str(tmp_path / f'{c}.en'), str(tmp_path / f'{c}.de'))
              for c in wmt14_en_de_base.TRAIN_CORPORA]
  assert [tuple(p) for p in config.data.train_files] == expected
  assert config.data.validation_files[0][0].endswith('newstest2013.en')
  assert (config.model.d_model, config.model.num_heads, config.model.d_ff) == (
      {wmt14_en_de_base: (512, 8, 2048), wmt14_en_de_big: (1024, 16, 4096)}[module])
  assert config.data.vocab_size == 32_000 and config.average_last_n == 5
  assert (config.eval.beam_size, config.eval.alpha) == (4, 0.6)
  script = (REPO / 'scripts' / 'get_wmt14.sh').read_text()
  for corpus in wmt14_en_de_base.TRAIN_CORPORA:
    assert f'"{corpus}.$lang"' in script
  for stem in ('newstest2013', 'newstest2014'):
    assert f'{stem}.en' in script and f'{stem}.de' in script


def test_wmt14_base_config_trains_on_files_laid_out_like_the_real_ones(tmp_path, monkeypatch,
                                                                        compile_cache):
  _wmt14_layout(tmp_path / 'wmt14')
  monkeypatch.setenv('WMT14_DIR', str(tmp_path / 'wmt14'))
  config = wmt14_en_de_base.get_config()
  # The data section as shipped (but a vocabulary the toy corpus can fill); a tiny model.
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.vocab_size = 100
  config.batch_tokens = 8 * 128
  config.model.d_model, config.model.num_heads, config.model.d_ff = 32, 2, 64
  config.model.num_encoder_layers = config.model.num_decoder_layers = 1
  config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 3, 3, 1
  config.log_every_steps = 1
  config.eval.num_bleu_sentences, config.eval.max_decode_length = 4, 8
  config.eval.batch_size = 8
  summary = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['step'] == 3
  splits = registry.load_splits(config.data)
  assert len(splits['train']) == 450 and len(splits['validation']) == 20
  # average_last_n = 5 of the 3 checkpoints there are: the end evaluates their average
  assert 'bleu' in summary['average']
