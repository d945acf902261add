"""Which checkpoints are intact, and what to do with one that is not.

Orbax finalises a step by renaming its temporary directory, so a listed step was complete
when written; a disk error, a truncated copy or a stray edit can still damage it later.
After orbax finishes a step, a manifest of its files (size and CRC-32 each) is written to
<workdir>/checkpoint_manifests/<step>.json; `problem(step)` compares the files with it (and
reads the meta JSON). A step saved before manifests existed is checked by its meta only.

A damaged step is moved to <workdir>/corrupt_checkpoints/ (renamed, never deleted) when
the work directory is writable; a read-only one is only skipped.
"""
from __future__ import annotations

import json
import os
import time
import zlib

from transformer_jax.errors import UserError
from transformer_jax.text_files import write_text_atomically

MANIFEST_DIR = 'checkpoint_manifests'
QUARANTINE_DIR = 'corrupt_checkpoints'
_META_FILE = os.path.join('meta', 'metadata')  # orbax's JsonSave of the `meta` item
_CHUNK = 1 << 20


class CheckpointError(UserError):
  """No intact checkpoint fits what was asked, or a checkpoint cannot be written."""


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(step_dir: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), step_dir)
                for d, _, fs in os.walk(step_dir) for f in fs)


class Integrity:
  """Manifests and checks for the steps under `<workdir>/checkpoints`."""

  def __init__(self, checkpoints_dir: str):
    self.checkpoints_dir = checkpoints_dir
    workdir = os.path.dirname(checkpoints_dir)
    self.manifest_dir = os.path.join(workdir, MANIFEST_DIR)
    self.quarantine_dir = os.path.join(workdir, QUARANTINE_DIR)
    self._verified: dict[int, str | None] = {}

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.checkpoints_dir, str(step))

  def _manifest_path(self, step: int) -> str:
    return os.path.join(self.manifest_dir, f'{step}.json')

  def write_manifest(self, step: int) -> None:
    """Records the files of finalised `step` (call once orbax has finished writing it)."""
    step_dir = self._step_dir(step)
    if os.path.exists(self._manifest_path(step)) or not os.path.isdir(step_dir):
      return
    files = {name: [os.path.getsize(os.path.join(step_dir, name)),
                    _crc32(os.path.join(step_dir, name))] for name in _files(step_dir)}
    os.makedirs(self.manifest_dir, exist_ok=True)
    write_text_atomically(self._manifest_path(step), json.dumps({'step': step, 'files': files}))
    self._verified[step] = None

  def problem(self, step: int) -> str | None:
    """None if `step` is intact, else what is wrong with it (checked once per process)."""
    if step not in self._verified:
      self._verified[step] = self._check(step)
    return self._verified[step]

  def _check(self, step: int) -> str | None:
    step_dir = self._step_dir(step)
    try:
      with open(self._manifest_path(step)) as f:
        expected = json.load(f)['files']
    except FileNotFoundError:
      expected = None  # saved before manifests existed: the meta is all there is to check
    except (ValueError, KeyError):
      return f'its manifest {self._manifest_path(step)} is unreadable'
    if expected is not None:
      for name, (size, crc) in expected.items():
        path = os.path.join(step_dir, name)
        if not os.path.isfile(path):
          return f'{path} is missing'
        if os.path.getsize(path) != size:
          return f'{path} has {os.path.getsize(path)} bytes, {size} when saved'
        if _crc32(path) != crc:
          return f'{path} differs from what was saved (CRC-32)'
    try:
      with open(os.path.join(step_dir, _META_FILE)) as f:
        json.load(f)
    except (OSError, ValueError) as e:
      return f'its meta {os.path.join(step_dir, _META_FILE)} is unreadable ({e})'
    return None

  def quarantine(self, step: int) -> str | None:
    """Moves damaged `step` out of the checkpoints; returns where, or None if read-only."""
    target = os.path.join(self.quarantine_dir, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    try:
      os.makedirs(self.quarantine_dir, exist_ok=True)
      os.rename(self._step_dir(step), target)
    except OSError:
      return None
    if os.path.exists(self._manifest_path(step)):
      os.replace(self._manifest_path(step), target + '.manifest.json')
    return target
