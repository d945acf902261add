"""Bad input at the public entry points: the command lines print one line naming the flag or
key (exit 2, no traceback), the Translator names the argument; text splits on '\\n' only."""
from pathlib import Path
import subprocess
import sys

import pytest

from transformer_jax.decoding.translator import Translator

REPO = Path(__file__).resolve().parents[1]


def _run(*args, stdin=None, timeout=180):
  return subprocess.run([sys.executable, *args], cwd=REPO, input=stdin, capture_output=True,
                        timeout=timeout)


def _one_line_error(result, *fragments):
  stderr = result.stderr.decode('utf-8', 'replace')
  assert result.returncode == 2, stderr[-2000:]
  assert 'Traceback' not in stderr, stderr[-2000:]
  errors = [line for line in stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, stderr[-2000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def test_train_cli_bad_keys_values_and_workdirs_are_one_line(tmp_path):
  _one_line_error(_run('train.py', '--config.modle.d_model=3'), '--config', 'modle',
                  'Did you mean "model"')
  _one_line_error(_run('train.py', '--config', 'tiny', '--config.model.d_model=abc'),
                  'd_model', 'abc')
  _one_line_error(_run('train.py', '--config', 'tiny', '--config.model.d_model=-3',
                       f'--workdir={tmp_path / "run"}'), '`model.d_model` = -3')
  afile = tmp_path / 'afile'
  afile.write_text('not a directory')
  _one_line_error(_run('train.py', '--config', 'tiny', f'--workdir={afile}'),
                  f'{afile} is a file, not a directory')


def test_translate_cli_checks_its_flags_before_translating(trained, tmp_path):
  source = tmp_path / 'in.en'
  source.write_text('a dog runs .\n')
  common = ['translate.py', f'--workdir={trained}', f'--input={source}']
  _one_line_error(_run(*common, f'--output={tmp_path / "missing" / "out.de"}'), '--output',
                  'does not exist')
  _one_line_error(_run(*common, '--checkpoint=average:x'), '--checkpoint=average:x',
                  'average:N')
  _one_line_error(_run('translate.py', f'--workdir={trained}', stdin=b'a dog\n\xff\xfe cat\n'),
                  '<stdin>: line 2 is not valid UTF-8')


def test_a_bare_carriage_return_inside_a_line_keeps_the_output_aligned(trained, tmp_path):
  lines = [f'a dog runs {i} .' for i in range(12)]
  lines[4] = 'a cat\rsits .'  # a bare CR, as real corpora have
  source = tmp_path / 'in.en'
  source.write_bytes(('\ufeff' + '\n'.join(lines) + '\r\n').encode('utf-8'))  # BOM, CRLF end
  out = tmp_path / 'out.de'
  result = _run('translate.py', f'--workdir={trained}', f'--input={source}', f'--output={out}',
                '--beam_size=1')
  assert result.returncode == 0, result.stderr.decode()[-2000:]
  assert len(out.read_text(encoding='utf-8').split('\n')) == len(lines) + 1  # + final newline


@pytest.fixture(scope='module')
def translator(trained):
  return Translator(str(trained), checkpoint='latest')


@pytest.mark.parametrize('sentences,kwargs,error,match', [
    ('A dog runs.', {}, TypeError, r'a list of str, got one str: wrap'),
    (['a dog', None], {}, TypeError, r'sentences\[1\] is NoneType'),
    (['a dog', 3], {}, TypeError, r'sentences\[1\] is int'),
    ([b'a dog'], {}, TypeError, r'sentences\[0\] is bytes'),
    (['a dog'], {'batch_size': 0}, ValueError, r'batch_size must be an integer >= 1, got 0'),
    (['a dog'], {'batch_size': -1}, ValueError, r'batch_size must be an integer >= 1, got -1'),
    (['a dog'], {'max_length': -1}, ValueError, r'max_length must be None .* got -1'),
    (['a dog'], {'max_length': 0}, ValueError, r'max_length must be None .* got 0'),
    (['a dog'], {'beam_size': 0}, ValueError, r'beam_size must be an integer >= 1'),
])
def test_translate_names_the_argument_it_cannot_take(translator, sentences, kwargs, error, match):
  with pytest.raises(error, match=match):
    translator.translate(sentences, **kwargs)


@pytest.mark.parametrize('checkpoint,match', [
    ('average:0', r'average:N needs N >= 1'),
    ('average:-1', r"'average:-1': use best, latest"),
    ('average:99', r'keeps 2 intact checkpoints \(\[4, 8\]\), fewer than 99'),
    ('latest ', r"'latest ' \(it has surrounding whitespace\)"),
    ('newest', r"'newest': use best, latest, a step number, or average:N"),
])
def test_a_checkpoint_choice_that_names_nothing_is_refused(trained, checkpoint, match):
  with pytest.raises(ValueError, match=match):
    Translator(str(trained), checkpoint=checkpoint)


def test_serve_cli_names_the_flag_it_cannot_use(trained, tmp_path):
  import socket
  _one_line_error(_run('serve.py', f'--workdir={tmp_path / "nope"}', '--port=0'),
                  f'--workdir={tmp_path / "nope"}', 'no such directory')
  _one_line_error(_run('serve.py', f'--workdir={trained}', '--port=0', '--batch_rows=1,x'),
                  '--batch_rows=1,x', 'integers')
  _one_line_error(_run('serve.py', f'--workdir={trained}', '--port=0', '--beam_sizes=1'),
                  '--beam_sizes=1', "eval.beam_size (2)")
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    _one_line_error(_run('serve.py', f'--workdir={trained}', f'--port={port}'),
                    f'--port={port}', 'cannot listen there')
