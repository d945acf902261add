"""What a run needs before its first step: work directory, data, vocabulary, model, optimizer.

Shared by training (trainer.py) and translation (translator.py), so both read
a work directory the same way.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
from flax import nnx

from transformer_jax import config_lib
from transformer_jax.model import Transformer
from transformer_jax.text_files import write_text_atomically

CONFIG_FILE = 'config.json'
VOCAB_DIR = 'vocab'
# Sections whose change makes an existing work directory unusable.
_FROZEN_SECTIONS = ('model', 'data')
# Where the raw and prepared files live may change between runs; what they hold may not.
_MOVABLE_KEYS = {('data', 'manual_dir'), ('data', 'data_dir')}


def default_data_dir(config) -> str:
  """config.data.data_dir, else a directory under $TFDS_DATA_DIR (or ~/tensorflow_datasets).

  The default is keyed by the raw files it is built from (names and sizes), so a
  run on small fixture files never leaves a prepared dataset that a real run reuses.
  """
  if config.data.data_dir:
    return config.data.data_dir
  import hashlib
  from transformer_jax.data.multi30k import resolve_manual_dir
  base = os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')
  raw_dir = resolve_manual_dir(config.data.manual_dir or None)
  if raw_dir is None:
    return os.path.join(base, 'multi30k_download')
  listing = sorted((p.name, p.stat().st_size) for p in raw_dir.iterdir() if p.is_file())
  return os.path.join(base, 'multi30k_' + hashlib.sha1(repr(listing).encode()).hexdigest()[:10])


def write_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes <workdir>/config.json atomically; on resume, refuses a changed model/data section."""
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    for section in _FROZEN_SECTIONS:
      changed = sorted(k for k in set(old.get(section, {})) | set(new.get(section, {}))
                       if old.get(section, {}).get(k) != new.get(section, {}).get(k)
                       and (section, k) not in _MOVABLE_KEYS)
      if changed:
        raise config_lib.ConfigError(
            f'{path} was written with a different `{section}` section (keys {changed}); '
            f'resume with the same config, or train into a new --workdir')
  os.makedirs(workdir, exist_ok=True)
  write_text_atomically(path, json.dumps(new, indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} is not a transformer_jax work directory '
                            '(train into it with `python train.py --workdir ...` first)')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_sources(config, splits=('train', 'validation')):
  """Random-access {'en', 'de'} sources per split for config.data.dataset."""
  if config.data.dataset != 'multi30k':
    raise config_lib.ConfigError(
        f'config key `data.dataset` = {config.data.dataset!r}: only multi30k ships a builder here; '
        'WMT14 is read from the TFDS catalog on accelerator machines (see README)')
  from transformer_jax.data import load_multi30k
  data_dir = default_data_dir(config)
  manual_dir = config.data.manual_dir or None
  return {s: load_multi30k(s, data_dir, manual_dir) for s in splits}


def load_vocab(config, workdir: str, train_source=None, wait_for_chief: bool = False):
  """The run's vocabulary: trained from train_source if given and absent, else read.

  wait_for_chief: multi-process runs let process 0 train it; the others wait at a barrier.
  """
  from transformer_jax.data import load_or_train_vocab
  from transformer_jax.data.vocab import Vocab, MODEL_FILENAME
  path = os.path.join(workdir, VOCAB_DIR, MODEL_FILENAME)
  vocab = None
  if train_source is not None:
    vocab = load_or_train_vocab(train_source, os.path.join(workdir, VOCAB_DIR),
                                vocab_size=config.data.vocab_size,
                                languages=(config.data.source_lang, config.data.target_lang))
  if wait_for_chief:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('vocabulary written')
  if vocab is not None:
    return vocab
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: the run in {workdir} has not written its '
                            'vocabulary (it is trained at the start of train.py)')
  return Vocab(path)


def build_model(config, vocab_size: int) -> Transformer:
  return Transformer(config_lib.model_config(config, vocab_size), rngs=nnx.Rngs(config.seed))


def abstract_model(config, vocab_size: int):
  """(graphdef, abstract params) without allocating weights."""
  model = nnx.eval_shape(lambda: build_model(config, vocab_size))
  return nnx.split(model, nnx.Param)
