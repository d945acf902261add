"""A Marian directory converted to CTranslate2, with the same translations as ours.

CTranslate2's own Marian loader (what `ct2-transformers-converter` runs) assumes OPUS-MT's
layout: the decoder starts from `<pad>`, the last id, whose embedding row is zero, so it
drops that row and starts from a zero vector. That is exact for OPUS-MT models (and for our
exports of them), and wrong for a model trained here, which starts from `<s>`'s trained
embedding. `convert` checks which case a directory is: the first it hands to the stock
loader, the second to `StartTokenMarianLoader`, which keeps every row and starts from the
model's `decoder_start_token_id`. Needs transformers, torch and ctranslate2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

MARIAN_CONFIG = 'MarianConfig'


def starts_from_zero_padding(directory: str | os.PathLike) -> bool:
  """True where the stock converter is exact: start = pad = the last id, its row zero."""
  from transformer_jax.interop.marian_import import read_tensors
  directory = Path(directory)
  config = json.loads((directory / 'config.json').read_text(encoding='utf-8'))
  start, pad = config.get('decoder_start_token_id'), config.get('pad_token_id')
  if start != pad or pad != config['vocab_size'] - 1:
    return False
  tensors = read_tensors(directory)
  embedding = next(tensors[k] for k in ('model.shared.weight', 'lm_head.weight') if k in tensors)
  return not np.any(embedding[pad])


def _start_token_loader():
  from ctranslate2.converters import transformers as ct2_transformers

  class StartTokenMarianLoader(ct2_transformers.BartLoader):
    """Marian without the zero-embedding start: every id kept, start = decoder_start_token_id."""

    @property
    def architecture_name(self):
      return 'MarianMTModel'

    def get_model_spec(self, model):
      model.config.normalize_before = False
      model.config.normalize_embedding = False
      return super().get_model_spec(model)

    def set_config(self, config, model, tokenizer):
      config.eos_token = tokenizer.eos_token
      config.unk_token = tokenizer.unk_token
      config.bos_token = tokenizer.convert_ids_to_tokens(model.config.decoder_start_token_id)
      config.decoder_start_token = config.bos_token

  return StartTokenMarianLoader()


def convert(marian_dir: str | os.PathLike, out: str | os.PathLike, *,
            quantization: str | None = None, force: bool = False) -> Path:
  """Converts the Marian directory to a CTranslate2 model directory `out`."""
  from ctranslate2.converters import transformers as ct2_transformers
  loaders = ct2_transformers._MODEL_LOADERS  # the converter's registry, keyed by config class
  stock = loaders[MARIAN_CONFIG]
  if not starts_from_zero_padding(marian_dir):
    loaders[MARIAN_CONFIG] = _start_token_loader()
  try:
    converter = ct2_transformers.TransformersConverter(os.fspath(marian_dir))
    return Path(converter.convert(os.fspath(out), quantization=quantization, force=force))
  finally:
    loaders[MARIAN_CONFIG] = stock
