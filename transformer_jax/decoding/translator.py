"""Translate with a trained work directory: `Translator(workdir).translate(['A man runs.'])`."""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import SingleDeviceSharding

from transformer_jax import config_lib, sharding
from transformer_jax.checkpointing import resolve_steps, select_params
from transformer_jax.decoding.decoder import make_decoder
from transformer_jax.workdir import VocabularyMismatchError, WorkDir  # noqa: F401 (re-exported)


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_translate_arguments(sentences, batch_size, max_length) -> None:
  """TypeError/ValueError naming the argument (and the sentence) that `translate` cannot take."""
  if isinstance(sentences, (str, bytes)):
    raise TypeError(f'sentences must be a list of str, got one {type(sentences).__name__}: '
                    'wrap a single sentence as [sentence]')
  if not isinstance(sentences, Sequence):
    raise TypeError(f'sentences must be a list of str, got {type(sentences).__name__}')
  for i, sentence in enumerate(sentences):
    if not isinstance(sentence, str):
      raise TypeError(f'sentences[{i}] is {type(sentence).__name__} ({sentence!r:.40}): every '
                      'sentence must be a str')
  if not _is_integer(batch_size) or batch_size < 1:
    raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
  if max_length is not None and (not _is_integer(max_length) or max_length < 1):
    raise ValueError(f'max_length must be None (the model\'s) or an integer >= 1, got '
                     f'{max_length!r}')


def _bucket(n: int, multiple: int = 16) -> int:
  """Pad lengths to a multiple of 16 so a file compiles a handful of shapes, not one per batch."""
  return max(multiple, math.ceil(n / multiple) * multiple)


class Translator:
  """A trained model plus its vocabulary, ready to translate lists of sentences.

  Args:
    workdir: a work directory written by train.py (config.json, vocab/, checkpoints/).
    checkpoint: 'best' (highest validation BLEU), 'latest', a step, or 'average:N'.
    ema: use the checkpoint's EMA params when the run kept them (ema_decay > 0).
  """

  def __init__(self, workdir: str, checkpoint: str = 'best', ema: bool = True):
    self.workdir = WorkDir(workdir)
    config = self.workdir.read_config()
    vocab = self.workdir.load_vocab()
    graphdef, abstract = config_lib.abstract_model(config, vocab.size,
                                                   **config_lib.special_ids(vocab))
    device = SingleDeviceSharding(jax.devices()[0])
    target = sharding.with_shardings(abstract, jax.tree.map(lambda _: device, abstract))
    checkpointer = self.workdir.checkpointer(read_only=True)
    self.workdir.check_vocab_matches(checkpointer, vocab,
                                     resolve_steps(checkpointer, checkpoint)[-1])
    params, description = select_params(checkpointer, target, checkpoint, ema)
    checkpointer.close()
    self._setup(config, vocab, graphdef, params, description)

  def _setup(self, config, vocab, graphdef, params, description: str) -> None:
    self.config, self.vocab, self.graphdef, self.params = config, vocab, graphdef, params
    self.checkpoint_description = description
    self.max_length = config_lib.max_length(self.config)
    self._decoders = {}
    self.num_truncated = 0

  @classmethod
  def from_pretrained(cls, directory: str) -> 'Translator':
    """A Hugging Face Marian model directory (e.g. OPUS-MT's), read offline.

    The directory holds config.json, model.safetensors (or pytorch_model.bin), source.spm,
    target.spm and vocab.json, as `MarianMTModel.save_pretrained` and the hub's OPUS-MT
    downloads do. Decoding defaults to its generation_config's beam size and α = 0.6.
    Needs `safetensors` (or torch for a .bin): `pip install 'transformer_jax[interop]'`.
    """
    from flax import nnx
    from transformer_jax.interop.marian_import import DECODE_LENGTH_CAP, load_pretrained
    pre = load_pretrained(directory)
    config = pre.config
    length = min(pre.max_positions, DECODE_LENGTH_CAP)
    config.data.max_length, config.eval.max_decode_length = length, length
    config.data.source_lang, config.data.target_lang = pre.languages
    config.eval.beam_size = pre.num_beams
    graphdef, params = config_lib.abstract_model(config, pre.vocab.size,
                                                 **config_lib.special_ids(pre.vocab))
    nnx.replace_by_pure_dict(params, pre.params)
    params = jax.device_put(params, SingleDeviceSharding(jax.devices()[0]))
    translator = cls.__new__(cls)
    translator.workdir = None
    translator._setup(config, pre.vocab, graphdef, params, f'pretrained {directory}')
    return translator

  def _decoder(self, beam_size: int, alpha: float, max_length: int):
    key = (beam_size, alpha, max_length)
    if key not in self._decoders:
      self._decoders[key] = make_decoder(self.graphdef, beam_size=beam_size, alpha=alpha,
                                         max_length=max_length)
    return self._decoders[key]

  def encode_source(self, sentence: str) -> tuple[list[int], bool]:
    """(token ids + EOS, whether it was cut to the model's max length); [] for a blank one."""
    if not sentence.strip():
      return [], False
    ids, keep = self.vocab.encode(sentence), self.max_length - 1
    return ids[:keep] + [self.vocab.eos_id], len(ids) > keep

  def encode_sources(self, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids + EOS per sentence; longer than the model's max length is truncated (counted)."""
    encoded = [self.encode_source(s) for s in sentences]
    truncated = sum(cut for _, cut in encoded)
    if truncated:
      logging.warning('%d of %d sentences are longer than %d tokens and were truncated',
                      truncated, len(encoded), self.max_length - 1)
    self.num_truncated = truncated
    return [ids for ids, _ in encoded]

  def decoding_settings(self, beam_size: int | None = None,
                        alpha: float | None = None) -> tuple[int, float]:
    """(beam size, α) to decode with: the arguments, or else the run's own eval settings.

    The run's `eval.beam_size`/`eval.alpha` are the ones its logged validation BLEU was
    measured with (and α may have been chosen per direction on val), so a caller who says
    nothing gets the translations that score matches.
    """
    beam_size = self.config.eval.beam_size if beam_size is None else beam_size
    alpha = self.config.eval.alpha if alpha is None else alpha
    if not _is_integer(beam_size) or beam_size < 1:
      raise ValueError(f'beam_size must be an integer >= 1 (1 = greedy), got {beam_size!r}')
    if not alpha >= 0:
      raise ValueError(f'alpha (the length penalty exponent) must be >= 0, got {alpha!r}')
    return int(beam_size), float(alpha)

  def batches(self, sources: Sequence[list[int]], batch_size: int,
              max_length: int | None = None) -> list[tuple[list[int], int, int]]:
    """How `translate` batches encoded sources: [(indices, padded source length, decode
    length)], non-empty sources sorted by length (less padding), lengths rounded up to 16 (few
    compiled shapes), the decode length capped at 1.5 · source + 10 and the model's max."""
    order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
    cap = self.max_length if max_length is None else min(max_length, self.max_length)
    batches = []
    for start in range(0, len(order), batch_size):
      idx = order[start:start + batch_size]
      src_len = _bucket(max(len(sources[i]) for i in idx))
      batches.append((idx, src_len, min(cap, _bucket(int(src_len * 1.5) + 10))))
    return batches

  def translate(self, sentences: Sequence[str], *, beam_size: int | None = None,
                alpha: float | None = None, batch_size: int = 64,
                max_length: int | None = None, progress=None) -> list[str]:
    """Translations in input order; empty inputs give empty outputs.

    `beam_size` and `alpha` default to the run's `eval.beam_size` and `eval.alpha`
    (`decoding_settings`). Sentences are sorted by length into batches (less padding)
    and put back in order. `progress`, if given, is called with the number of sentences done.
    """
    beam_size, alpha = self.decoding_settings(beam_size, alpha)
    check_translate_arguments(sentences, batch_size, max_length)
    sources = self.encode_sources(sentences)
    out = [''] * len(sources)
    for idx, src_len, decode_len in self.batches(sources, batch_size, max_length):
      inputs = np.full((batch_size, src_len), self.vocab.pad_id, np.int32)
      for row, i in enumerate(idx):
        inputs[row, :len(sources[i])] = sources[i]
      result = self._decoder(beam_size, alpha, decode_len)(self.params, inputs)
      tokens = np.asarray(jax.device_get(result.tokens_BL))
      for row, i in enumerate(idx):
        out[i] = self.vocab.decode(tokens[row].tolist())
      if progress is not None:
        progress(len(idx))
    return out
