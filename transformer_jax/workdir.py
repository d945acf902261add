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

from transformer_jax.config_lib import ConfigError
from transformer_jax.text_files import write_text_atomically

CONFIG_FILE = 'config.json'
VOCAB_DIR = 'vocab'
# Sections whose change makes an existing work directory unusable.
_FROZEN_SECTIONS = ('model', 'data')
# Where the raw and prepared files live may change between runs; what they hold may not.
_MOVABLE_KEYS = {('data', 'manual_dir'), ('data', 'data_dir')}
# Keys added to the config after runs were written without them: absent = this value.
_ADDED_KEY_DEFAULTS = {('model', 'param_dtype'): 'float32'}


class VocabularyMismatchError(ValueError):
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
    """Writes config.json atomically; on resume, refuses a changed model/data section."""
    new = json.loads(config.to_json())
    if os.path.exists(self.config_path):
      old = self._read_json()
      for section in _FROZEN_SECTIONS:
        changed = sorted(k for k in set(old.get(section, {})) | set(new.get(section, {}))
                         if _value(old, section, k) != _value(new, section, k)
                         and (section, k) not in _MOVABLE_KEYS)
        if changed:
          raise ConfigError(
              f'{self.config_path} was written with a different `{section}` section (keys '
              f'{changed}); resume with the same config, or train into a new --workdir')
    os.makedirs(self.path, exist_ok=True)
    write_text_atomically(self.config_path, json.dumps(new, indent=2))

  def read_config(self) -> ml_collections.ConfigDict:
    if not os.path.exists(self.config_path):
      raise FileNotFoundError(
          f'{self.config_path} not found: {self.path} is not a transformer_jax work directory '
          '(train into it with `python train.py --workdir ...` first)')
    return ml_collections.ConfigDict(self._read_json())

  def _read_json(self) -> dict:
    with open(self.config_path) as f:
      return json.load(f)

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

  def load_vocab(self):
    from transformer_jax.data.vocab import Vocab
    if not os.path.exists(self.vocab_path):
      raise FileNotFoundError(f'{self.vocab_path} not found: the run in {self.path} has not '
                              'written its vocabulary (it is trained at the start of train.py)')
    return Vocab(self.vocab_path)

  def vocab_meta(self, vocab) -> dict:
    """What a checkpoint's meta records of the vocabulary it was trained with."""
    return {'vocab_size': vocab.size, 'vocab_sha256': file_sha256(vocab.path)}

  # -- checkpoints ------------------------------------------------------------------------
  def checkpointer(self, keep: int = 5, read_only: bool = False):
    from transformer_jax.checkpointing import Checkpointer
    return Checkpointer(self.path, keep=keep, read_only=read_only)

  def check_vocab_matches(self, checkpointer, vocab, step: int) -> None:
    """Raises VocabularyMismatchError if checkpoint `step` was trained with another vocab."""
    meta = checkpointer.read_meta(step)
    expected = meta.get('vocab_sha256')
    if expected and expected != file_sha256(vocab.path):
      raise VocabularyMismatchError(
          f'{vocab.path} is not the vocabulary the checkpoints in {checkpointer.directory} '
          'were trained with (sha256 differs): restore the run\'s own vocab/spm.model')
    if meta.get('vocab_size', vocab.size) != vocab.size:
      raise VocabularyMismatchError(
          f'{vocab.path} has {vocab.size} pieces but the checkpoint was trained with '
          f'{meta["vocab_size"]}: restore the run\'s own vocab/spm.model')


def _value(config: dict, section: str, key: str):
  return config.get(section, {}).get(key, _ADDED_KEY_DEFAULTS.get((section, key)))
