"""A model trained here written as a Hugging Face Marian directory.

    export_translator(Translator('runs/multi30k_en_de'), 'exports/m30k-marian')
    # or: python scripts/export_marian.py --workdir runs/multi30k_en_de --out exports/m30k-marian

The directory loads with `MarianMTModel.from_pretrained` and `MarianTokenizer.from_pretrained`
and converts with CTranslate2 (`interop/ctranslate2.py`). Our interleaved sin/cos positions
are exported as Marian's sin|cos halves by permuting every d_model axis (exact); the one
difference left is LayerNorm's epsilon, which Marian fixes at 1e-5 (ours 1e-6 by default): a
relative change of ~1e-6 in the logits (docs/INTEROP.md). The directory is written beside
`out` and renamed into place, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import tempfile

import numpy as np

from transformer_jax import config_lib
from transformer_jax.data.marian_vocab import MarianVocab
from transformer_jax.errors import UserError
from transformer_jax.interop import marian_format

MIN_POSITIONS = 512  # transformers builds a position table this long; ours has no limit


class ExportError(UserError):
  """The export cannot be written where it was asked to go."""


def export_translator(translator, out: str, *, overwrite: bool = False) -> Path:
  """Writes the Translator's model and tokenizer as a Marian directory at `out`."""
  from flax import nnx
  from safetensors.numpy import save_file
  out = Path(out).absolute()
  if out.exists() and not (out.is_dir() and (overwrite or not any(out.iterdir()))):
    raise ExportError(f'{out} exists and is not an empty directory: choose a new --out, or '
                      'pass --overwrite to replace it')
  config, vocab = translator.config, translator.vocab
  cfg = config_lib.model_config(config, vocab.size, **config_lib.special_ids(vocab))
  m = config.model
  hf_config = marian_format.marian_config(
      cfg, max_positions=max(MIN_POSITIONS, cfg.max_length),
      dropout={'dropout': m.dropout_rate, 'attention_dropout': m.attention_dropout_rate,
               'activation_dropout': m.relu_dropout_rate})
  tree = jax_to_numpy(nnx.to_pure_dict(translator.params))
  tensors = marian_format.marian_from_params(tree, cfg)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
  try:
    _write_json(staging / 'config.json', hf_config)
    _write_json(staging / 'generation_config.json', _generation_config(cfg, config))
    save_file(tensors, os.fspath(staging / 'model.safetensors'), metadata={'format': 'pt'})
    _write_tokenizer(staging, vocab, config)
    if out.exists():
      shutil.rmtree(out)
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return out


def jax_to_numpy(tree):
  if isinstance(tree, dict):
    return {k: jax_to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def _write_json(path: Path, value) -> None:
  path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + '\n', encoding='utf-8')


def _generation_config(cfg, config) -> dict:
  # bad_words_ids: padding is never generated, as our decoders never generate it.
  return {'decoder_start_token_id': cfg.bos_id, 'bos_token_id': cfg.bos_id,
          'eos_token_id': cfg.eos_id, 'pad_token_id': cfg.pad_id, 'forced_eos_token_id': None,
          'bad_words_ids': [[cfg.pad_id]], 'num_beams': config.eval.beam_size,
          'max_length': config_lib.max_length(config)}


def _write_tokenizer(directory: Path, vocab, config) -> None:
  """source.spm, target.spm, vocab.json and tokenizer_config.json for MarianTokenizer."""
  if isinstance(vocab, MarianVocab):
    for f in vocab.files:
      shutil.copyfile(f, directory / f.name)
  else:  # the joint SentencePiece model serves both sides; its ids are vocab.json's
    for name in ('source.spm', 'target.spm'):
      shutil.copyfile(vocab.path, directory / name)
    _write_json(directory / 'vocab.json', {vocab.id_to_piece(i): i for i in range(vocab.size)})
  piece = vocab.id_to_piece
  _write_json(directory / 'tokenizer_config.json', {
      'tokenizer_class': 'MarianTokenizer', 'source_lang': config.data.source_lang,
      'target_lang': config.data.target_lang, 'separate_vocabs': False,
      'model_max_length': config_lib.max_length(config), 'eos_token': piece(vocab.eos_id),
      'unk_token': piece(vocab.unk_id), 'pad_token': piece(vocab.pad_id)})
