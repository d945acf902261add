"""The model behind the server: fixed-shape decoders and attention passes, compiled at start-up.

A request must never wait for XLA. So the engine serves a fixed set of shapes, decided when it
is built and all compiled by `warmup()`:

- translation: (beam size, batch rows, source length) for every served beam size, every row
  bucket and every source bucket (multiples of 16 up to the model's max length, as
  `Translator.translate` pads); α is an argument of the executable, not a constant, so one
  compilation serves every α. The decode length follows the source bucket exactly as the
  Translator's does, so a sentence gets the translation `Translator.translate` gives it.
- attention: (source length, target length) buckets of one teacher-forced forward pass that
  returns every layer's and head's weights.

Everything here is synchronous and runs on one thread (the batcher's worker): JAX releases
the GIL while it computes, so the server's event loop keeps answering.

Shape suffixes: B rows, S source length, T target length, L decode length, W beams.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transformer_jax.decoding.beam_search import NEG_INF
from transformer_jax.decoding.decoder import decode
from transformer_jax.decoding.translator import _bucket

LENGTH_MULTIPLE = 16  # the Translator's source-length bucket
log = logging.getLogger('transformer_jax.serving')


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  """What the engine compiles at start-up (each is a served shape; nothing else is)."""
  beam_sizes: tuple[int, ...] = (1, 4)
  batch_rows: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
  max_batch_tokens: int = 4096  # rows x padded source length of the largest batch
  # rows x beam size: a step costs about this many rows' work, and a batch runs as many steps
  # as its longest translation needs, so past ~64 rows (2-core CPU) a bigger batch mostly
  # waits for its stragglers (docs/PERFORMANCE.md#serving).
  max_decoder_rows: int = 64

  def check(self) -> None:
    for name in ('beam_sizes', 'batch_rows'):
      values = getattr(self, name)
      if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f'{name} must be a non-empty list of integers >= 1, got {values!r}')
    if self.max_decoder_rows < max(self.beam_sizes):
      raise ValueError(f'max_decoder_rows ({self.max_decoder_rows}) must hold one sentence of '
                       f'the largest beam ({max(self.beam_sizes)})')
    if self.max_batch_tokens < LENGTH_MULTIPLE:
      raise ValueError(f'max_batch_tokens must be >= {LENGTH_MULTIPLE}, got '
                       f'{self.max_batch_tokens}')


@dataclasses.dataclass
class Hypothesis:
  tokens: list[int]
  score: float


@dataclasses.dataclass
class Translation:
  """One decoded sentence: the best hypothesis, then the rest of the beam (best first)."""
  best: Hypothesis
  n_best: list[Hypothesis]


@dataclasses.dataclass
class EncodedSource:
  ids: list[int]       # tokens + eos, [] for an empty text
  truncated: bool      # the text was longer than the model's max length and was cut


class Engine:
  """A loaded model (a `Translator`'s params, vocabulary and config) serving fixed shapes."""

  def __init__(self, translator, settings: EngineSettings = EngineSettings()):
    settings.check()
    self.translator = translator
    self.vocab = translator.vocab
    self.max_length = translator.max_length
    self.settings = settings
    self.default_beam_size, self.default_alpha = translator.decoding_settings()
    if self.default_beam_size not in settings.beam_sizes:
      raise ValueError(f'beam_sizes {list(settings.beam_sizes)} must include the run\'s '
                       f'eval.beam_size ({self.default_beam_size}), the default of a request')
    self.source_buckets = tuple(range(LENGTH_MULTIPLE, _bucket(self.max_length, LENGTH_MULTIPLE)
                                      + 1, LENGTH_MULTIPLE))
    self.target_buckets = self.source_buckets
    self.batch_rows = tuple(sorted(set(settings.batch_rows)))
    self._translate_fns = {}
    self._attention_fns = {}
    self.compile_seconds = None

  # -- shapes --------------------------------------------------------------
  def source_bucket(self, length: int) -> int:
    return _bucket(length, LENGTH_MULTIPLE)

  def decode_length(self, source_bucket: int) -> int:
    """The Translator's decode length for a batch padded to `source_bucket`."""
    return min(self.max_length, _bucket(int(source_bucket * 1.5) + 10, LENGTH_MULTIPLE))

  def max_rows(self, source_bucket: int, beam_size: int) -> int:
    """The most sentences one batch holds: within the token and the decoder-row budgets."""
    fitting = [r for r in self.batch_rows if r * source_bucket <= self.settings.max_batch_tokens
               and r * beam_size <= self.settings.max_decoder_rows]
    return max(fitting) if fitting else self.batch_rows[0]

  def rows_bucket(self, n: int) -> int:
    return next(r for r in self.batch_rows if r >= n)

  def shapes(self):
    """Every (beam, rows, source bucket) served: the start-up compilation's work list."""
    return [(beam, rows, s) for beam in self.settings.beam_sizes for s in self.source_buckets
            for rows in self.batch_rows if rows <= self.max_rows(s, beam)]

  # -- tokens --------------------------------------------------------------
  def encode(self, text: str) -> EncodedSource:
    """`Translator.encode_source`: the ids the Translator would decode, and whether cut."""
    return EncodedSource(*self.translator.encode_source(text))

  def detokenize(self, ids: Sequence[int]) -> str:
    return self.vocab.decode(list(ids))

  # -- compilation ---------------------------------------------------------
  def _translate_fn(self, beam_size: int, rows: int, source_bucket: int):
    key = (beam_size, rows, source_bucket)
    if key not in self._translate_fns:
      graphdef, max_length = self.translator.graphdef, self.decode_length(source_bucket)

      def translate(params, inputs_BS, alpha):
        result = decode(nnx.merge(graphdef, params), inputs_BS, max_length=max_length,
                        beam_size=beam_size, alpha=alpha)
        if result.nbest_tokens_BWL is None:  # greedy: its one hypothesis is its n-best
          return result.tokens_BL[:, None], result.scores_B[:, None]
        return result.nbest_tokens_BWL, result.nbest_scores_BW

      inputs = jax.ShapeDtypeStruct((rows, source_bucket), jnp.int32)
      alpha = jax.ShapeDtypeStruct((), jnp.float32)
      self._translate_fns[key] = jax.jit(translate).lower(
          self.translator.params, inputs, alpha).compile()
    return self._translate_fns[key]

  def _attention_fn(self, source_bucket: int, target_bucket: int):
    key = (source_bucket, target_bucket)
    if key not in self._attention_fns:
      graphdef = self.translator.graphdef

      def attention(params, inputs_1S, decoder_inputs_1T):
        _, weights = nnx.merge(graphdef, params)(inputs_1S, decoder_inputs_1T,
                                                 return_attention=True)
        stack = lambda ws: jnp.stack([w[0] for w in ws]).astype(jnp.float32)
        return stack(weights['encoder_self']), stack(weights['decoder_self']), stack(
            weights['cross'])

      self._attention_fns[key] = jax.jit(attention).lower(
          self.translator.params, jax.ShapeDtypeStruct((1, source_bucket), jnp.int32),
          jax.ShapeDtypeStruct((1, target_bucket), jnp.int32)).compile()
    return self._attention_fns[key]

  def warmup(self, progress=None) -> float:
    """Compiles every served shape (and runs each once); returns the seconds it took."""
    start = time.perf_counter()
    work = [('translate',) + s for s in self.shapes()] + [
        ('attention', s, t) for s in self.source_buckets for t in self.target_buckets]
    for i, (kind, *shape) in enumerate(work):
      if kind == 'translate':
        beam, rows, s = shape
        fn = self._translate_fn(beam, rows, s)
        jax.block_until_ready(fn(self.translator.params, np.zeros((rows, s), np.int32),
                                 np.float32(self.default_alpha)))
      else:
        s, t = shape
        fn = self._attention_fn(s, t)
        jax.block_until_ready(fn(self.translator.params, np.zeros((1, s), np.int32),
                                 np.zeros((1, t), np.int32)))
      if progress is not None:
        progress(i + 1, len(work))
    self.compile_seconds = time.perf_counter() - start
    log.info('compiled %d translation and %d attention shapes in %.1fs',
                 len(self.shapes()), len(self.source_buckets) * len(self.target_buckets),
                 self.compile_seconds)
    return self.compile_seconds

  # -- work ----------------------------------------------------------------
  def translate_batch(self, sources: Sequence[list[int]], beam_size: int,
                      alpha: float) -> list[Translation]:
    """Decodes non-empty sources that share one source bucket, in one call of one shape."""
    source_bucket = self.source_bucket(max(len(s) for s in sources))
    if beam_size not in self.settings.beam_sizes:
      raise ValueError(f'beam size {beam_size} is not served (served: '
                       f'{list(self.settings.beam_sizes)})')
    if len(sources) > self.max_rows(source_bucket, beam_size):
      raise ValueError(f'{len(sources)} sentences of up to {source_bucket} tokens exceed the '
                       f'largest batch at beam {beam_size} '
                       f'({self.max_rows(source_bucket, beam_size)} rows)')
    rows = self.rows_bucket(len(sources))
    inputs_BS = np.full((rows, source_bucket), self.vocab.pad_id, np.int32)
    for row, ids in enumerate(sources):
      inputs_BS[row, :len(ids)] = ids
    fn = self._translate_fn(beam_size, rows, source_bucket)
    tokens_BWL, scores_BW = jax.device_get(fn(self.translator.params, inputs_BS,
                                              np.float32(alpha)))
    out = []
    for row in range(len(sources)):
      hyps = [Hypothesis(_until_eos(tokens_BWL[row, w], self.vocab.eos_id,
                                    self.vocab.pad_id),
                         float(scores_BW[row, w]))
              for w in range(tokens_BWL.shape[1]) if scores_BW[row, w] > NEG_INF]
      out.append(Translation(hyps[0], hyps))
    return out

  def attention(self, source_ids: list[int], target_ids: list[int]) -> dict:
    """Teacher-forced weights for one pair, cut to its real length (padding is masked out).

    source_ids: tokens + eos; target_ids: the target's tokens (no bos, no eos). Returns
    numpy arrays encoder_self [layers, H, S, S], decoder_self [layers, H, T, T] and
    cross [layers, H, T, S], T counting the decoder's bos input.
    """
    target_ids = list(target_ids)
    decoder_inputs = [self.vocab.bos_id] + target_ids[:self.max_length - 1]
    # What each row predicts: the next target token, and eos after the last (unless cut).
    outputs = (target_ids + [self.vocab.eos_id])[:len(decoder_inputs)]
    s, t = len(source_ids), len(decoder_inputs)
    source_bucket, target_bucket = self.source_bucket(s), self.source_bucket(t)
    inputs_1S = np.full((1, source_bucket), self.vocab.pad_id, np.int32)
    inputs_1S[0, :s] = source_ids
    decoder_inputs_1T = np.full((1, target_bucket), self.vocab.pad_id, np.int32)
    decoder_inputs_1T[0, :t] = decoder_inputs
    fn = self._attention_fn(source_bucket, target_bucket)
    enc, dec, cross = jax.device_get(fn(self.translator.params, inputs_1S, decoder_inputs_1T))
    return {'source_ids': list(source_ids), 'decoder_input_ids': decoder_inputs,
            'output_ids': outputs,
            'encoder_self': enc[:, :, :s, :s], 'decoder_self': dec[:, :, :t, :t],
            'cross': cross[:, :, :t, :s]}


def _until_eos(tokens_L: np.ndarray, eos_id: int, pad_id: int) -> list[int]:
  """A hypothesis's tokens up to (not including) eos: what vocab.decode turns into text."""
  tokens = tokens_L.tolist()
  return tokens[:tokens.index(eos_id)] if eos_id in tokens else [t for t in tokens if t != pad_id]
