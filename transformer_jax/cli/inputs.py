"""Inputs of the command-line tools (translate.py, scripts/): each failure is an
absl `app.UsageError` that names the flag and says what to do."""
from __future__ import annotations

import os

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


def check_output_path(path: str, flag: str) -> None:
  """Before any work: --`flag`'s directory must exist and the path must not be a directory."""
  if path == '-':
    return
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise app.UsageError(f'--{flag}={path}: directory {directory} does not exist (create it '
                         'first)')
  if os.path.isdir(path):
    raise app.UsageError(f'--{flag}={path} is a directory: give a file path')


def load_translator(workdir: str, checkpoint: str, ema: bool):
  """The Translator of --workdir at --checkpoint; each error names the flag it is about."""
  from transformer_jax.checkpointing import check_checkpoint_choice
  from transformer_jax.decoding.translator import Translator
  try:
    check_checkpoint_choice(checkpoint)
  except ValueError as e:
    raise app.UsageError(f'--checkpoint={checkpoint}: {e}') from None
  if not os.path.isdir(workdir):
    raise app.UsageError(f'--workdir={workdir}: no such directory (a work directory written '
                         'by train.py)')
  try:
    return Translator(workdir, checkpoint=checkpoint, ema=ema)
  except (FileNotFoundError, ValueError) as e:
    about_checkpoint = str(e).startswith(('checkpoint ', 'no checkpoint for step'))
    flag = f'--checkpoint={checkpoint}' if about_checkpoint else f'--workdir={workdir}'
    raise app.UsageError(f'{flag}: {e}') from None


def load_translator_from_flags(workdir: str | None, pretrained: str | None, checkpoint: str,
                               ema: bool):
  """The Translator of exactly one of --workdir (a run of train.py) or --pretrained (a Hugging
  Face Marian / OPUS-MT directory)."""
  if bool(workdir) == bool(pretrained):
    raise app.UsageError('give exactly one of --workdir (a work directory written by train.py) '
                         'or --pretrained (a Hugging Face Marian / OPUS-MT model directory)')
  if workdir:
    return load_translator(workdir, checkpoint, ema)
  return load_pretrained_translator(pretrained)


def load_pretrained_translator(directory: str):
  """Translator.from_pretrained(--pretrained); each error names the flag."""
  from transformer_jax.decoding.translator import Translator
  try:
    return Translator.from_pretrained(directory)
  except ImportError as e:
    raise app.UsageError(f'--pretrained={directory}: reading it needs the interop extra '
                         f"({e.name} is missing): pip install -e '.[interop]'") from None
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f'--pretrained={directory}: {e}') from None
