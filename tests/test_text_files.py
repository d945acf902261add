"""The text-file helpers behind translate.py and the scripts."""
import os

import pytest

from transformer_jax.text_files import read_lines, write_text_atomically


def test_read_lines_strips_newlines_only(tmp_path):
  path = tmp_path / 'a.txt'
  path.write_bytes('Ein Hund läuft. \n\nzwei\n'.encode('utf-8'))
  assert read_lines(str(path)) == ['Ein Hund läuft. ', '', 'zwei']


def test_read_lines_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.txt: file not found'):
    read_lines(str(tmp_path / 'missing.txt'))
  latin1 = tmp_path / 'latin1.txt'
  latin1.write_bytes('Straße\n'.encode('latin-1'))
  with pytest.raises(ValueError, match='latin1.txt: line 1 is not valid UTF-8'):
    read_lines(str(latin1))


def test_write_text_atomically_never_leaves_a_half_written_file(tmp_path, monkeypatch):
  path = tmp_path / 'out.txt'
  write_text_atomically(str(path), 'old\n')

  def failing_replace(src, dst):
    raise OSError('disk full')

  monkeypatch.setattr(os, 'replace', failing_replace)
  with pytest.raises(OSError, match='disk full'):
    write_text_atomically(str(path), 'new\n')
  assert path.read_text() == 'old\n'  # the old file is untouched until the rename
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']  # and no temporary is left
  monkeypatch.undo()
  write_text_atomically(str(path), 'new\n')
  assert path.read_text() == 'new\n' and not (tmp_path / 'out.txt.tmp').exists()
