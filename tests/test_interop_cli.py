"""The command-line tools on a Hugging Face Marian directory: `translate.py --pretrained` writes
what transformers' `generate` writes, `serve.py --pretrained` answers as the Translator does, and
the model flags are checked (exactly one of --workdir / --pretrained; a bad directory is named)."""
import subprocess
import sys

from absl import app
import httpx
import pytest

# The interop extra (in dev): imported, not importorskip'd, so that without it these fail.
import torch  # noqa: E402
import transformers  # noqa: E402

from marian_fixture import corpus, random_marian, varied_marian_options  # noqa: E402
from run_helpers import REPO  # noqa: E402
from serve_process import ServeProcess  # noqa: E402
from transformer_jax import Translator  # noqa: E402
from transformer_jax.cli.inputs import load_translator_from_flags  # noqa: E402

MAX_POSITIONS = 32  # 2 source buckets of 16: serve.py compiles a handful of shapes


@pytest.fixture(scope='module')
def marian(tmp_path_factory):
  directory = tmp_path_factory.mktemp('opus_mt_like')
  model, tokenizer = random_marian(directory, max_positions=MAX_POSITIONS,
                                   **varied_marian_options())
  return directory, model, tokenizer


def _sources(count=16):
  return [e for e, _ in corpus()[50:50 + count]]


def test_translate_cli_with_pretrained_writes_what_generate_writes(marian, tmp_path):
  directory, model, tokenizer = marian
  sources = _sources()
  (tmp_path / 'in.en').write_text(''.join(s + '\n' for s in sources), encoding='utf-8')
  translator = Translator.from_pretrained(str(directory))
  # Both cut a long source to max_length - 1 tokens + EOS.
  batch = tokenizer(sources, return_tensors='pt', padding=True, truncation=True,
                    max_length=translator.max_length)
  with torch.no_grad():
    generated = model.generate(**batch, num_beams=1, do_sample=False,
                               max_new_tokens=translator.max_length,
                               bad_words_ids=[[model.config.pad_token_id]])
  reference = tokenizer.batch_decode(generated, skip_special_tokens=True)
  assert len(set(reference)) >= 4  # random weights: translations differ by sentence
  out = tmp_path / 'out.de'
  done = subprocess.run([sys.executable, 'translate.py', f'--pretrained={directory}',
                         f'--input={tmp_path / "in.en"}', f'--output={out}', '--beam_size=1'],
                        cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert out.read_text(encoding='utf-8').splitlines() == reference
  assert f'pretrained {directory}' in done.stderr


@pytest.mark.parametrize('flags,message', [
    (dict(workdir=None, pretrained=None), 'exactly one of --workdir'),
    (dict(workdir='runs/x', pretrained='opus'), 'exactly one of --workdir'),
    (dict(workdir=None, pretrained='/nowhere/opus-mt'), r'--pretrained=/nowhere/opus-mt: .*not a '
     'directory'),
])
def test_model_flags_are_checked(flags, message):
  with pytest.raises(app.UsageError, match=message):
    load_translator_from_flags(**flags, checkpoint='best', ema=True)


def test_a_pretrained_directory_without_weights_is_named(marian, tmp_path):
  broken = tmp_path / 'broken'
  broken.mkdir()
  for name in ('config.json', 'source.spm', 'target.spm', 'vocab.json'):
    (broken / name).write_bytes((marian[0] / name).read_bytes())
  done = subprocess.run([sys.executable, 'translate.py', f'--pretrained={broken}'], cwd=REPO,
                        input='hello\n', capture_output=True, text=True)
  assert done.returncode != 0
  assert f'--pretrained={broken}: ' in done.stderr and 'model.safetensors' in done.stderr
  assert 'Traceback' not in done.stderr


def test_serve_with_pretrained_answers_as_the_translator(marian, compile_cache):
  directory = marian[0]
  translator = Translator.from_pretrained(str(directory))
  beam = translator.config.eval.beam_size
  texts = _sources(6)
  server = ServeProcess(directory, compile_cache, model_flag='--pretrained',
                        shapes=(f'--beam_sizes={",".join(map(str, sorted({1, beam})))}',
                                '--batch_rows=1,8'))
  try:
    server.wait_ready()
    info = httpx.get(server.url + '/v1/model', timeout=10).json()
    assert info['workdir'] is None and info['checkpoint'] == f'pretrained {directory}'
    response = httpx.post(server.url + '/v1/translate', timeout=60,
                          json={'texts': texts, 'beam_size': 1})
    assert response.status_code == 200, response.text
    got = [t['text'] for t in response.json()['translations']]
    assert got == translator.translate(texts, beam_size=1)
    server.terminate()
    assert server.process.wait(60) == 0
  finally:
    server.close()
