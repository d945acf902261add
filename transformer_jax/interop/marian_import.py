"""A Hugging Face Marian directory (OPUS-MT) read into this project's model, offline.

    pre = load_pretrained('opus-mt-en-de/')   # config.json, model.safetensors | pytorch_model.bin,
                                              # source.spm, target.spm, vocab.json
    pre.config        # a full run config (model section = the checkpoint's architecture)
    pre.vocab         # MarianVocab
    pre.params        # parameter tree for nnx.replace_by_pure_dict

`Translator.from_pretrained`, `translate.py --pretrained` / `serve.py --pretrained` and
`train.py --config.init_from` all come through here.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import shutil
from typing import Any

import ml_collections
import numpy as np

from transformer_jax import config_lib
from transformer_jax.data.marian_vocab import MarianVocab
from transformer_jax.interop import marian_format
from transformer_jax.interop.marian_format import MarianFormatError

# Architecture keys an imported checkpoint decides; everything else is the run's own config.
ARCHITECTURE_KEYS = ('d_model', 'num_heads', 'd_ff', 'num_encoder_layers', 'num_decoder_layers',
                     'pre_ln', 'activation', 'attention_bias', 'logits_bias', 'position_layout',
                     'layer_norm_eps', 'scale_embedding')
DECODE_LENGTH_CAP = 256  # OPUS-MT says 512; a sentence that long is not what a batch is sized for


@dataclasses.dataclass
class Pretrained:
  directory: Path
  model_options: dict[str, Any]  # config.model values (ARCHITECTURE_KEYS)
  vocab: MarianVocab
  params: dict                   # nested dicts of float32 arrays, as nnx.to_pure_dict
  max_positions: int
  num_beams: int
  languages: tuple[str, str]

  @property
  def config(self) -> ml_collections.ConfigDict:
    """A run config for this model: the default config with the checkpoint's architecture."""
    from transformer_jax.configs import multi30k
    return with_architecture(multi30k.get_config(), self)

  def model_config(self, config: ml_collections.ConfigDict | None = None):
    config = self.config if config is None else config
    return config_lib.model_config(config, self.vocab.size, **config_lib.special_ids(self.vocab))


def with_architecture(config: ml_collections.ConfigDict,
                      pre: Pretrained) -> ml_collections.ConfigDict:
  """`config` with the model section's architecture (and the vocabulary size) of `pre`;
  regularisation, numerics and everything else stay the config's own."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key in ARCHITECTURE_KEYS:
    config.model[key] = pre.model_options[key]
  config.data.vocab_size = pre.vocab.size
  return config


def copy_tokenizer(pre: Pretrained, vocab_dir: str | os.PathLike) -> MarianVocab:
  """The pretrained tokenizer's files (and config.json, for its start token) in `vocab_dir`.

  Files already there are kept: a resumed fine-tuning run reads the copy it started with
  (and its checkpoints' vocabulary hash says whether that copy is intact).
  """
  vocab_dir = Path(vocab_dir)
  vocab_dir.mkdir(parents=True, exist_ok=True)
  for f in (*pre.vocab.files, pre.directory / 'config.json'):
    target = vocab_dir / f.name
    if not target.exists():
      staging = vocab_dir / f'.{f.name}.tmp'
      shutil.copyfile(f, staging)
      os.replace(staging, target)  # never half a file under the real name
  return MarianVocab(vocab_dir)


def _read_json(path: Path) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    raise MarianFormatError(f'{path} not found: a Marian model directory holds config.json, '
                            'model.safetensors (or pytorch_model.bin) and the tokenizer files '
                            'source.spm, target.spm, vocab.json') from None
  except ValueError as e:
    raise MarianFormatError(f'{path} is not valid JSON ({e})') from None


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
  """The checkpoint's tensors as float32 NumPy: safetensors (one file or sharded) or .bin."""
  single, index = directory / 'model.safetensors', directory / 'model.safetensors.index.json'
  if single.exists() or index.exists():
    from safetensors.numpy import load_file
    files = ([single] if single.exists() else
             sorted({directory / f for f in _read_json(index)['weight_map'].values()}))
    tensors = {}
    for f in files:
      try:
        tensors.update(load_file(os.fspath(f)))
      except Exception as e:  # safetensors raises its own SafetensorError
        raise MarianFormatError(f'{f} is not a readable safetensors file ({e})') from None
    return tensors
  binary = directory / 'pytorch_model.bin'
  if binary.exists():
    try:
      import torch
    except ImportError:
      raise MarianFormatError(f'{binary} is a torch file: `pip install torch` to read it, or '
                              'save the model as model.safetensors') from None
    state = torch.load(binary, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise MarianFormatError(f'{directory} has no model.safetensors, model.safetensors.index.json '
                          'or pytorch_model.bin: not a saved Marian model')


def _biases_present(tensors: dict[str, np.ndarray]) -> tuple[bool, bool]:
  """(any attention-projection bias is non-zero, final_logits_bias is non-zero)."""
  attention = any(np.any(v) for k, v in tensors.items()
                  if k.endswith('_proj.bias') and '_attn.' in k)
  return attention, bool(np.any(tensors.get('final_logits_bias', 0)))


def load_pretrained(directory: str | os.PathLike) -> Pretrained:
  """Reads a Marian model directory; raises MarianFormatError naming the file and the field."""
  directory = Path(directory)
  if not directory.is_dir():
    raise MarianFormatError(f'{directory} is not a directory: give the path of a saved Marian '
                            'model (e.g. a download of Helsinki-NLP/opus-mt-en-de)')
  hf = _read_json(directory / 'config.json')
  options = marian_format.model_options_from_marian(hf, str(directory / 'config.json'))
  tensors = read_tensors(directory)
  attention_bias, logits_bias = _biases_present(tensors)
  # An export of a bias-free model writes zeros; trained (e.g. fine-tuned) biases are kept.
  options['attention_bias'] |= attention_bias
  options['logits_bias'] |= logits_bias
  vocab = MarianVocab(directory)
  if vocab.size != hf['vocab_size']:
    raise MarianFormatError(f'{directory / "vocab.json"} has ids up to {vocab.size - 1} but '
                            f'config.json says vocab_size = {hf["vocab_size"]}')
  for name, hf_key in (('pad_id', 'pad_token_id'), ('eos_id', 'eos_token_id'),
                       ('bos_id', 'decoder_start_token_id')):
    if hf.get(hf_key) is not None and hf[hf_key] != getattr(vocab, name):
      raise MarianFormatError(f'{directory / "config.json"}: `{hf_key}` = {hf[hf_key]} but the '
                              f'tokenizer\'s {name} is {getattr(vocab, name)}')
  generation = {}
  if (directory / 'generation_config.json').exists():
    generation = _read_json(directory / 'generation_config.json')
  tokenizer = {}
  if (directory / 'tokenizer_config.json').exists():
    tokenizer = _read_json(directory / 'tokenizer_config.json')
  pre = Pretrained(directory, options, vocab, {}, hf.get('max_position_embeddings', 512),
                   int(generation.get('num_beams') or hf.get('num_beams') or 4),
                   (tokenizer.get('source_lang') or 'src', tokenizer.get('target_lang') or 'tgt'))
  pre.params = marian_format.params_from_marian(tensors, pre.model_config(),
                                                str(directory))
  return pre
