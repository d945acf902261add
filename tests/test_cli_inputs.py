"""The input checks of translate.py and scripts/: errors that name the flag."""
from absl import app
import pytest

from transformer_jax.cli.inputs import load_translator, read_sources_and_references


def test_sources_and_references_must_align(tmp_path):
  source, reference = tmp_path / 'val.en', tmp_path / 'val.de'
  source.write_text('a dog\na cat\n', encoding='utf-8')
  reference.write_text('ein Hund\n', encoding='utf-8')
  with pytest.raises(app.UsageError, match=r'--reference=.*val.de has 1 lines but --input has 2'):
    read_sources_and_references(str(source), str(reference))
  reference.write_text('ein Hund\neine Katze\n', encoding='utf-8')
  assert read_sources_and_references(str(source), str(reference)) == (
      ['a dog', 'a cat'], ['ein Hund', 'eine Katze'])
  assert read_sources_and_references(str(source), None) == (['a dog', 'a cat'], None)


def test_missing_files_name_their_flag(tmp_path):
  with pytest.raises(app.UsageError, match='--input: .*missing.en: file not found'):
    read_sources_and_references(str(tmp_path / 'missing.en'), None)
  (tmp_path / 'val.en').write_text('a dog\n', encoding='utf-8')
  with pytest.raises(app.UsageError, match='--reference: .*missing.de: file not found'):
    read_sources_and_references(str(tmp_path / 'val.en'), str(tmp_path / 'missing.de'))


def test_a_directory_that_is_not_a_run_is_refused_naming_workdir(tmp_path):
  with pytest.raises(app.UsageError, match=r'--workdir=.*not a transformer_jax work directory'):
    load_translator(str(tmp_path), 'latest', True)
