"""Faults a long run meets in its work directory: damaged checkpoints, a full disk, a cut
config.json, a second run, a resume with changed settings. Each rebuilt cheaply from one
tiny trained run; each asserts the message names the thing and that nothing was lost."""
import hashlib
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from transformer_jax import checkpointing, config_lib
from transformer_jax.checkpoint_integrity import CheckpointError
from transformer_jax.data.vocab import VocabularyFileError
from transformer_jax.decoding.translator import Translator
from transformer_jax.training import loop
from transformer_jax.training.metrics_writer import read_metrics
from transformer_jax.workdir import WorkDir, WorkDirError

from conftest import STEPS, make_fault_config as make_config


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _hashes(directory):
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(Path(directory).rglob('*')) if p.is_file()}


def _steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def _truncate_a_params_file(workdir, step):
  params = sorted((workdir / 'checkpoints' / str(step) / 'params').rglob('*'),
                  key=lambda p: p.stat().st_size if p.is_file() else -1)[-1]
  params.write_bytes(params.read_bytes()[:params.stat().st_size // 2])
  return params


def test_a_truncated_newest_checkpoint_is_moved_aside_and_training_resumes_from_the_last_good(
    data, run_copy, caplog):
  _truncate_a_params_file(run_copy, STEPS)
  older = _hashes(run_copy / 'checkpoints' / '4')
  summary = loop.train_and_evaluate(make_config(data, num_train_steps=STEPS + 2), str(run_copy))
  assert summary['step'] == STEPS + 2
  moved = list((run_copy / 'corrupt_checkpoints').iterdir())
  assert [p.name.split('-')[0] for p in moved if p.is_dir()] == [str(STEPS)]  # renamed, kept
  assert any(f'checkpoint {STEPS}' in r.getMessage() and 'damaged' in r.getMessage()
             for r in caplog.records)
  assert _hashes(run_copy / 'checkpoints' / '4') == older
  records = [r['step'] for r in read_metrics(str(run_copy)) if 'loss' in r]
  assert records == sorted(set(records)) == list(range(1, STEPS + 3)), 'each step logged once'


def test_the_translator_skips_a_damaged_checkpoint_and_names_it_when_asked_for(run_copy):
  _truncate_a_params_file(run_copy, STEPS)
  translator = Translator(str(run_copy), checkpoint='latest')
  assert translator.checkpoint_description.startswith('step 4')
  assert (run_copy / 'checkpoints' / str(STEPS)).is_dir(), 'translation moves nothing'
  with pytest.raises(CheckpointError, match=f'checkpoint {STEPS} in .* is damaged .*params'):
    Translator(str(run_copy), checkpoint=str(STEPS))


def test_a_garbled_meta_of_the_newest_step_does_not_block_an_older_step(run_copy):
  (run_copy / 'checkpoints' / str(STEPS) / 'meta' / 'metadata').write_text('{"step": 8, "tra')
  assert Translator(str(run_copy), checkpoint='4').checkpoint_description.startswith('step 4')
  with pytest.raises(CheckpointError, match='meta'):
    Translator(str(run_copy), checkpoint=str(STEPS))


def test_a_full_disk_stops_the_save_with_a_clear_error_and_keeps_every_checkpoint(
    data, run_copy, monkeypatch):
  before = _hashes(run_copy / 'checkpoints')
  real = shutil.disk_usage
  monkeypatch.setattr(shutil, 'disk_usage', lambda p: real(p)._replace(free=1 << 20))
  with pytest.raises(CheckpointError, match=r'not enough disk space to save checkpoint 12 in '
                     rf'{run_copy}.*needs ~\d+ MB, 1 MB are free'):
    loop.train_and_evaluate(make_config(data, num_train_steps=12), str(run_copy))
  assert {k: v for k, v in _hashes(run_copy / 'checkpoints').items() if k in before} == before
  assert not list((run_copy / 'checkpoints').glob('*tmp*'))
  assert not (run_copy / 'lock').exists(), 'the lock is released on the way out'


def test_an_enospc_from_orbax_removes_the_temporary_directory(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  (Path(checkpointer.directory) / '5.orbax-checkpoint-tmp-123').mkdir(parents=True)

  def full(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(checkpointer.manager, 'wait_until_finished', full)
  with pytest.raises(CheckpointError, match='not enough disk space'):
    checkpointer.wait()
  assert not list(Path(checkpointer.directory).glob('*tmp*'))


def test_a_cut_config_json_is_named_by_training_and_translation(data, run_copy):
  config_path = run_copy / 'config.json'
  config_path.write_text(config_path.read_text()[:40])
  with pytest.raises(WorkDirError, match=f'{config_path} is not valid JSON'):
    loop.train_and_evaluate(make_config(data), str(run_copy))
  with pytest.raises(WorkDirError, match=f'{config_path} is not valid JSON'):
    Translator(str(run_copy))


def test_a_start_that_failed_before_its_first_checkpoint_does_not_block_the_corrected_config(
    data, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(VocabularyFileError, match=r'Vocabulary size is smaller.*`data.vocab_size` = 5'):
    loop.train_and_evaluate(make_config(data, **{'data.vocab_size': 5}), str(workdir))
  assert (workdir / 'config.json').exists() and not (workdir / 'lock').exists()
  config = make_config(data, num_train_steps=4, checkpoint_every_steps=4)
  assert loop.train_and_evaluate(config, str(workdir))['step'] == 4
  assert json.loads((workdir / 'config.json').read_text())['data']['vocab_size'] == 200


def test_a_second_run_on_a_locked_workdir_stops_and_a_stale_lock_is_taken_over(data, run_copy):
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    lock = {'pid': sleeper.pid, 'host': os.uname().nodename, 'since': 'then'}
    (run_copy / 'lock').write_text(json.dumps(lock))
    with pytest.raises(WorkDirError, match=rf'in use by another run \(pid {sleeper.pid} on '):
      loop.train_and_evaluate(make_config(data, num_train_steps=STEPS + 1), str(run_copy))
    assert json.loads((run_copy / 'lock').read_text())['pid'] == sleeper.pid, 'not taken'
  finally:
    sleeper.kill()
    sleeper.wait()
  summary = loop.train_and_evaluate(make_config(data, num_train_steps=STEPS + 1), str(run_copy))
  assert summary['step'] == STEPS + 1 and not (run_copy / 'lock').exists()


def test_metrics_hold_each_step_once_after_a_resume_from_an_older_checkpoint(data, run_copy,
                                                                             trained):
  shutil.rmtree(run_copy / 'checkpoints' / str(STEPS))  # killed after logging 5..8, before saving
  loop.train_and_evaluate(make_config(data), str(run_copy))
  train = [r for r in read_metrics(str(run_copy)) if 'loss' in r]
  reference = [r for r in read_metrics(str(trained)) if 'loss' in r]
  assert [r['step'] for r in train] == list(range(1, STEPS + 1))
  assert [r['loss'] for r in train] == [r['loss'] for r in reference], 'resume is exact'


@pytest.mark.parametrize('key,value,kind', [
    ('optimizer.grad_clip_norm', 0.0, 'frozen'),  # the optimizer state's structure changes
    ('batch_tokens', 256, 'frozen'),  # the iterator's packing state would be wrong
    ('data.source_lang', 'de', 'frozen'),
    ('optimizer.learning_rate_scale', 1.0, 'guarded'),
    ('seed', 3, 'guarded'),
])
def test_a_resume_with_changed_state_settings_names_the_key(data, run_copy, key, value, kind):
  overrides = {key: value, 'num_train_steps': STEPS + 1}
  if key == 'data.source_lang':
    overrides['data.target_lang'] = 'en'
  with pytest.raises(config_lib.ConfigError, match=key.replace('.', r'\.')) as error:
    loop.train_and_evaluate(make_config(data, **overrides), str(run_copy))
  assert ('allow_resume_with_changes' in str(error.value)) == (kind == 'guarded')
  if kind == 'guarded':
    summary = loop.train_and_evaluate(
        make_config(data, allow_resume_with_changes=True, **overrides), str(run_copy))
    assert summary['step'] == STEPS + 1
