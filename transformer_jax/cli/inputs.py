"""Inputs of the command-line tools (translate.py, scripts/): each failure is an
absl `app.UsageError` that names the flag and says what to do."""
from __future__ import annotations

from absl import app

from transformer_jax.text_files import read_lines


def read_flag_lines(path: str, flag: str) -> list[str]:
  """The lines of the file given by --`flag` ('-' = stdin)."""
  try:
    return read_lines(path)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f'--{flag}: {e}') from None


def read_sources_and_references(input_path: str, reference_path: str | None):
  """(sources, references): --input and, if given, --reference, checked to align line by line."""
  sources = read_flag_lines(input_path, 'input')
  if not reference_path:
    return sources, None
  references = read_flag_lines(reference_path, 'reference')
  if len(references) != len(sources):
    raise app.UsageError(f'--reference={reference_path} has {len(references)} lines but '
                         f'--input has {len(sources)}: they must align line by line')
  return sources, references


def load_translator(workdir: str, checkpoint: str, ema: bool):
  """The Translator of --workdir at --checkpoint."""
  from transformer_jax.decoding.translator import Translator
  try:
    return Translator(workdir, checkpoint=checkpoint, ema=ema)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f'--workdir={workdir}: {e}') from None
