"""The work directory of a run, owned in one place: config.json, the vocabulary and its
hash, and the checkpoints' meta. The trainer and the Translator both read it through here.

    <workdir>/config.json        the run's config (model and data sections frozen on resume)
    <workdir>/vocab/spm.model    the joint SentencePiece vocabulary
    <workdir>/checkpoints/<step> orbax checkpoints (checkpointing.py), each with a meta item
    <workdir>/metrics.jsonl      training and evaluation metrics (training/metrics_writer.py)
"""
from __future__ import annotations

import hashlib
import json
import os

import ml_collections

from transformer_jax.config_lib import MODEL_OPTION_DEFAULTS, ConfigError
from transformer_jax.errors import UserError
from transformer_jax.text_files import write_text_atomically

CONFIG_FILE = 'config.json'
VOCAB_DIR = 'vocab'
FINGERPRINT_FILE = 'data_fingerprint.json'
# What a checkpoint depends on: a change makes it unusable (or silently wrong) to resume.
_FROZEN_SECTIONS = ('model', 'data')
_FROZEN_KEYS = ('batch_tokens',)  # the packing state of the data iterator
_ZERO_OR_NOT_KEYS = ('optimizer.grad_clip_norm', 'optimizer.weight_decay', 'ema_decay')
# What changes the run from the resumed step on, allowed with allow_resume_with_changes.
_GUARDED_SECTIONS = ('optimizer',)
_GUARDED_KEYS = ('seed', 'ema_decay', 'label_smoothing')
# Where the raw and prepared files live may change between runs; what they hold may not.
_MOVABLE_KEYS = {('data', 'manual_dir'), ('data', 'data_dir')}
# Keys added to the config after runs were written without them: absent = this value.
_ADDED_KEY_DEFAULTS = {('model', 'param_dtype'): 'float32',
                       **{('model', k): v for k, v in MODEL_OPTION_DEFAULTS.items()}}


class WorkDirError(UserError):
  """The work directory cannot be used: not a directory, unreadable, locked, corrupt."""


class VocabularyMismatchError(UserError, ValueError):
  """The work directory's vocabulary is not the one its checkpoint was trained with."""


def file_sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


class WorkDir:
  """Paths and the checked reading and writing of one run's directory."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.config_path = os.path.join(self.path, CONFIG_FILE)
    self.vocab_dir = os.path.join(self.path, VOCAB_DIR)

  @property
  def vocab_path(self) -> str:
    from transformer_jax.data.vocab import MODEL_FILENAME
    return os.path.join(self.vocab_dir, MODEL_FILENAME)

  # -- config.json ------------------------------------------------------------------------
  def write_or_check_config(self, config: ml_collections.ConfigDict) -> None:
    """Writes config.json atomically; on resume, refuses changes that would corrupt the run.

    Once a checkpoint exists, the `model` and `data` sections, `batch_tokens` and the keys
    that shape the optimizer state are frozen; other optimizer values and the seed may change
    only with `allow_resume_with_changes=True`. Before the first checkpoint, a new config
    simply replaces the old one (a start that failed early leaves nothing to protect).
    """
    make_directory(self.path)
    new = json.loads(config.to_json())
    if os.path.exists(self.config_path) and not self.has_checkpoints():
      self._drop_a_stale_vocabulary(self._read_json(), new)
    elif os.path.exists(self.config_path):
      frozen, guarded = resume_changes(self._read_json(), new)
      if frozen:
        raise ConfigError(
            f'{self.config_path} was written with different values of {frozen}, which the '
            'checkpoints depend on: resume with the same config, or train into a new --workdir')
      if guarded and not new.get('allow_resume_with_changes', False):
        raise ConfigError(
            f'{self.config_path} was written with different values of {guarded}: resuming '
            'with them changes the run from here on; set --config.allow_resume_with_changes='
            'True if that is what you want, or train into a new --workdir')
    write_text_atomically(self.config_path, json.dumps(new, indent=2))

  def _drop_a_stale_vocabulary(self, old: dict, new: dict) -> None:
    """Before any checkpoint, a vocabulary trained for another `data` section is retrained."""
    frozen, _ = resume_changes(old, new)
    if any(k.startswith('data.') for k in frozen) and os.path.exists(self.vocab_path):
      from absl import logging
      logging.warning('%s was trained for another data section (%s) and no checkpoint uses it: '
                      'training a new one', self.vocab_path, [k for k in frozen if 'data.' in k])
      os.remove(self.vocab_path)

  def check_data_fingerprint(self, fingerprint: dict) -> None:
    """Records the raw data's fingerprint; once a checkpoint exists, refuses other data.

    The checkpoints' vocabulary and data-iterator position belong to the files the run
    started on: training on changed files would silently continue on data it is not reading.
    """
    path = os.path.join(self.path, FINGERPRINT_FILE)
    if os.path.exists(path) and self.has_checkpoints():
      try:
        with open(path) as f:
          old = json.load(f)
      except ValueError as e:
        raise WorkDirError(f'{path} is not valid JSON ({e}): restore it, or delete it to '
                           'accept the data as it is now') from None
      changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
      if changed:
        raise WorkDirError(
            f'the training data differ from those this run started on ({", ".join(changed)}: '
            f'see {path}): point data.manual_dir / the data back at the original files, or '
            'train into a new --workdir')
      return
    write_text_atomically(path, json.dumps(fingerprint, indent=2, sort_keys=True))

  def has_checkpoints(self) -> bool:
    directory = os.path.join(self.path, 'checkpoints')
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))

  def read_config(self) -> ml_collections.ConfigDict:
    if not os.path.exists(self.config_path):
      raise FileNotFoundError(
          f'{self.config_path} not found: {self.path} is not a transformer_jax work directory '
          '(train into it with `python train.py --workdir ...` first)')
    return ml_collections.ConfigDict(self._read_json())

  def _read_json(self) -> dict:
    try:
      with open(self.config_path) as f:
        return json.load(f)
    except ValueError as e:
      raise WorkDirError(
          f'{self.config_path} is not valid JSON ({e}): it was cut short or edited. Restore it; '
          'to resume with the config the run was started with, delete it and train again (it '
          'is rewritten; checks against the checkpoints still apply)') from None

  # -- the vocabulary ---------------------------------------------------------------------
  def load_or_train_vocab(self, config, train_source=None, wait_for_chief: bool = False):
    """The run's vocabulary: trained from train_source if given and absent, else read.

    wait_for_chief: multi-process runs let process 0 train it; the others wait at a barrier.
    """
    vocab = None
    if train_source is not None:
      from transformer_jax.data.vocab import load_or_train_vocab
      vocab = load_or_train_vocab(train_source, self.vocab_dir, vocab_size=config.data.vocab_size,
                                  languages=(config.data.source_lang, config.data.target_lang))
    if wait_for_chief:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices('vocabulary written')
    return vocab if vocab is not None else self.load_vocab()

  def adopt_vocab(self, prepared_vocab: str) -> None:
    """Copies the vocabulary a dataset was prepared with into the run (atomically); a run that
    already has another one is refused, since its checkpoints' ids mean other pieces."""
    import filecmp
    import shutil
    if os.path.exists(self.vocab_path):
      if not filecmp.cmp(self.vocab_path, prepared_vocab, shallow=False):
        raise WorkDirError(
            f'{self.vocab_path} differs from {prepared_vocab}, the vocabulary the training '
            'data were prepared with: train into a new --workdir (or restore the data options '
            'this run was started with)')
      return
    make_directory(self.vocab_dir)
    tmp = f'{self.vocab_path}.tmp'
    shutil.copyfile(prepared_vocab, tmp)
    os.replace(tmp, self.vocab_path)

  def load_vocab(self):
    """The run's tokenizer: the joint SentencePiece model, or a Marian one (init_from)."""
    from transformer_jax.data import marian_vocab
    from transformer_jax.data.vocab import Vocab
    if os.path.exists(os.path.join(self.vocab_dir, marian_vocab.VOCAB_JSON)):
      return marian_vocab.MarianVocab(self.vocab_dir)
    if not os.path.exists(self.vocab_path):
      raise FileNotFoundError(f'{self.vocab_path} not found: the run in {self.path} has not '
                              'written its vocabulary (it is trained at the start of train.py)')
    return Vocab(self.vocab_path)

  def vocab_meta(self, vocab) -> dict:
    """What a checkpoint's meta records of the vocabulary it was trained with."""
    return {'vocab_size': vocab.size, 'vocab_sha256': vocab_sha256(vocab)}

  def lock(self):
    """The training lock of this directory (`with workdir.lock(): ...`, or acquire/release)."""
    from transformer_jax.workdir_lock import WorkDirLock
    return WorkDirLock(self.path)

  # -- checkpoints ------------------------------------------------------------------------
  def checkpointer(self, keep: int = 5, read_only: bool = False):
    from transformer_jax.checkpointing import Checkpointer
    return Checkpointer(self.path, keep=keep, read_only=read_only)

  def check_vocab_matches(self, checkpointer, vocab, step: int) -> None:
    """Raises VocabularyMismatchError if checkpoint `step` was trained with another vocab."""
    meta = checkpointer.read_meta(step)
    expected = meta.get('vocab_sha256')
    where = ', '.join(os.fspath(f) for f in vocab.files)
    if expected and expected != vocab_sha256(vocab):
      raise VocabularyMismatchError(
          f'{where} is not the vocabulary the checkpoints in {checkpointer.directory} '
          'were trained with (sha256 differs): restore the run\'s own vocab/ files')
    if meta.get('vocab_size', vocab.size) != vocab.size:
      raise VocabularyMismatchError(
          f'{where} has {vocab.size} pieces but the checkpoint was trained with '
          f'{meta["vocab_size"]}: restore the run\'s own vocab/ files')


def vocab_sha256(vocab) -> str:
  """The vocabulary's identity: its file's sha256, or a hash of its files' hashes."""
  hashes = [file_sha256(os.fspath(f)) for f in vocab.files]
  if len(hashes) == 1:
    return hashes[0]
  return hashlib.sha256(''.join(hashes).encode()).hexdigest()


def make_directory(path: str) -> None:
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkDirError(f'work directory {path} is a file, not a directory: give --workdir a new '
                       'or an existing run directory')
  os.makedirs(path, exist_ok=True)


def _value(config: dict, section: str, key: str):
  return config.get(section, {}).get(key, _ADDED_KEY_DEFAULTS.get((section, key)))


def _get(config: dict, dotted: str):
  section, _, key = dotted.rpartition('.')
  return _value(config, section, key) if section else config.get(key)


def resume_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
  """(frozen, guarded): the dotted keys that differ between two configs, by what they break.

  frozen: the checkpoints cannot serve the new value (the model, the data, the packing, an
  optimizer or EMA state that would appear or vanish); guarded: the run would continue
  differently from how it began (learning rate, seed, ...), which the user must ask for.
  """
  def changed(section):
    keys = set(old.get(section, {})) | set(new.get(section, {}))
    return [f'{section}.{k}' for k in sorted(keys) if _value(old, section, k) !=
            _value(new, section, k) and (section, k) not in _MOVABLE_KEYS]

  frozen = [k for section in _FROZEN_SECTIONS for k in changed(section)]
  frozen += [k for k in _FROZEN_KEYS if _get(old, k) != _get(new, k)]
  frozen += [k for k in _ZERO_OR_NOT_KEYS if bool(_get(old, k)) != bool(_get(new, k))]
  guarded = [k for section in _GUARDED_SECTIONS for k in changed(section)]
  guarded += [k for k in _GUARDED_KEYS if _get(old, k) != _get(new, k)]
  return frozen, sorted(set(guarded) - set(frozen))
