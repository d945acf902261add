"""What the endpoints do, apart from HTTP: check the decoding arguments, wait for readiness,
translate through the batcher, force a target for its attention, describe the model.

Each method takes a checked body (`bodies`) and returns the JSON answer or raises `HttpError`:
a beam size that is not served, α or n_best out of range, too many texts or characters (413),
a full queue (429, Retry-After), a request over its budget (504), still compiling (503).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading

from transformer_jax.serving.batcher import (Batcher, BatcherSettings, DeadlineExceeded,
                                             QueueFull)
from transformer_jax.serving.bodies import (AttentionRequest, HttpError, TranslateRequest,
                                            check_text)
from transformer_jax.serving.engine import Engine
from transformer_jax.serving.metrics import ServerMetrics

log = logging.getLogger('transformer_jax.serving')

ALPHA_RANGE = (0.0, 2.0)  # GNMT's α; beyond 2 the penalty swamps the model


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  batcher: BatcherSettings = BatcherSettings()
  max_texts: int = 64              # texts in one request
  max_chars: int = 20_000          # characters in one request, all texts together
  max_body_bytes: int = 1 << 20    # the raw body
  warmup: bool = True              # compile every served shape at start-up (off: tests only)


class _WarmupStopped(Exception):
  """The server stopped before every shape was compiled."""


class Service:
  """One engine behind its batcher; `warm_up()` from the app's start-up, `stop()` at its end."""

  def __init__(self, engine: Engine, settings: ServerSettings):
    settings.batcher.check()
    self.engine, self.settings = engine, settings
    self.metrics = ServerMetrics()
    self.batcher = Batcher(engine, settings.batcher, on_batch=self.metrics.observe_batch)
    self.ready = not settings.warmup
    self.warmup_error = None
    self.warmup_progress = (0, 0)
    self._stopping = threading.Event()
    self._warmup = None

  # -- lifecycle -----------------------------------------------------------
  def start(self) -> None:
    self.batcher.start()
    if self.settings.warmup:
      self._warmup = asyncio.get_running_loop().create_task(self._warm())

  async def _warm(self) -> None:
    def progress(done, total):
      self.warmup_progress = (done, total)
      if self._stopping.is_set():  # a stop during warm-up need not wait for every shape
        raise _WarmupStopped()
    try:
      seconds = await self.batcher.run_in_worker(self.engine.warmup, progress)
      self.ready = True
      log.info('ready: every served shape compiled in %.1fs', seconds)
    except _WarmupStopped:
      log.info('warm-up stopped: the server is stopping')
    except Exception as e:  # readyz reports it; the process stays up to say so
      self.warmup_error = f'{type(e).__name__}: {e}'
      log.exception('warm-up failed')

  async def stop(self) -> None:
    self._stopping.set()
    if self._warmup is not None:
      await asyncio.gather(self._warmup, return_exceptions=True)  # ends after its shape
    await self.batcher.stop()

  def require_ready(self) -> None:
    if not self.ready:
      done, total = self.warmup_progress
      why = self.warmup_error or f'the model is still compiling ({done}/{total} shapes)'
      raise HttpError(503, why, {'Retry-After': '5'})

  # -- checks --------------------------------------------------------------
  def decoding_arguments(self, beam_size, alpha) -> tuple[int, float]:
    engine = self.engine
    beam_size = engine.default_beam_size if beam_size is None else beam_size
    alpha = engine.default_alpha if alpha is None else float(alpha)
    if beam_size not in engine.settings.beam_sizes:
      raise HttpError(422, f'beam_size: {beam_size} is not served; served beam sizes: '
                           f'{list(engine.settings.beam_sizes)} (serve.py --beam_sizes)')
    if not (math.isfinite(alpha) and ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]):
      raise HttpError(422, f'alpha: {alpha} is out of range [{ALPHA_RANGE[0]:g}, '
                           f'{ALPHA_RANGE[1]:g}]')
    return beam_size, alpha

  def _check_texts(self, body: TranslateRequest) -> None:
    limits = self.settings
    if not body.texts:
      raise HttpError(422, 'texts: is empty; send at least one text')
    if len(body.texts) > limits.max_texts:
      raise HttpError(413, f'texts: {len(body.texts)} texts; the limit is {limits.max_texts} '
                           'per request')
    chars = sum(map(len, body.texts))
    if chars > limits.max_chars:
      raise HttpError(413, f'texts: {chars} characters; the limit is {limits.max_chars} '
                           'per request')
    for i, text in enumerate(body.texts):
      check_text(text, f'texts[{i}]')

  # -- work ----------------------------------------------------------------
  async def _translate_ids(self, sources, beam_size, alpha, info):
    try:
      translations, timing = await self.batcher.translate(sources, beam_size, alpha)
    except QueueFull as e:
      raise HttpError(429, str(e), {'Retry-After': '1'}) from None
    except DeadlineExceeded as e:
      raise HttpError(504, str(e)) from None
    info['queue_ms'] = f'{timing.queue_ms:.1f}'
    info['decode_ms'] = f'{timing.decode_ms:.1f}'
    return translations

  async def translate(self, body: TranslateRequest, info: dict) -> dict:
    """Translations of `texts`, in order (empty text: empty translation, score 0)."""
    engine = self.engine
    self._check_texts(body)
    beam_size, alpha = self.decoding_arguments(body.beam_size, body.alpha)
    if body.n_best is not None and not 1 <= body.n_best <= beam_size:
      raise HttpError(422, f'n_best: {body.n_best} is out of range [1, beam_size={beam_size}]')
    self.require_ready()
    encoded = [engine.encode(t) for t in body.texts]
    info['texts'] = len(encoded)
    info['tokens'] = sum(len(e.ids) for e in encoded)
    translations = await self._translate_ids([e.ids for e in encoded], beam_size, alpha, info)
    out = []
    for source, translation in zip(encoded, translations):
      if translation is None:
        entry = {'text': '', 'score': 0.0, 'truncated': False}
        hyps = []
      else:
        entry = {'text': engine.detokenize(translation.best.tokens),
                 'score': translation.best.score, 'truncated': source.truncated}
        hyps = translation.n_best
      if body.n_best is not None:
        entry['n_best'] = [{'text': engine.detokenize(h.tokens), 'score': h.score}
                           for h in hyps[:body.n_best]]
      out.append(entry)
    return {'translations': out, 'beam_size': beam_size, 'alpha': alpha,
            'num_truncated': sum(e.truncated for e in encoded),
            'max_length': engine.max_length}

  async def attention(self, body: AttentionRequest, info: dict) -> dict:
    """Teacher-forced attention of (source, target); no target: the model's translation."""
    engine, budget_s = self.engine, self.settings.batcher.timeout_s
    for field in ('source', 'target'):
      text = getattr(body, field)
      if text is not None:
        check_text(text, field)
        if len(text) > self.settings.max_chars:
          raise HttpError(413, f'{field}: {len(text)} characters; the limit is '
                               f'{self.settings.max_chars}')
    source = engine.encode(body.source)
    if not source.ids:
      raise HttpError(422, 'source: is empty; send a sentence')
    self.require_ready()
    if body.target is None:
      translation, = await self._translate_ids([source.ids], engine.default_beam_size,
                                               engine.default_alpha, info)
      target_ids, target = translation.best.tokens, engine.detokenize(translation.best.tokens)
    else:
      target = body.target
      target_ids = engine.vocab.encode_target(target) if target.strip() else []
    try:
      weights = await asyncio.wait_for(
          self.batcher.run_in_worker(engine.attention, source.ids, target_ids), budget_s)
    except asyncio.TimeoutError:
      raise HttpError(504, f'not answered within {budget_s:g}s') from None
    piece = engine.vocab.id_to_piece
    decoder_inputs = weights['decoder_input_ids']
    info['tokens'] = len(source.ids) + len(decoder_inputs)
    return {'source': body.source, 'target': target, 'truncated': source.truncated,
            'source_tokens': [piece(i) for i in source.ids],
            'target_tokens': [piece(i) for i in decoder_inputs],
            # what each target row predicts: the next target token, then </s>
            'output_tokens': [piece(i) for i in weights['output_ids']],
            'layers': {'encoder': int(weights['encoder_self'].shape[0]),
                       'decoder': int(weights['cross'].shape[0])},
            'heads': int(weights['cross'].shape[1]),
            'encoder_self': weights['encoder_self'].tolist(),
            'decoder_self': weights['decoder_self'].tolist(),
            'cross': weights['cross'].tolist()}

  def model_info(self) -> dict:
    engine, settings = self.engine, self.settings
    translator = engine.translator
    return {'workdir': translator.workdir.path if translator.workdir else None,
            'checkpoint': translator.checkpoint_description,
            'config': translator.config.to_dict(),
            'vocab': {'size': engine.vocab.size, 'bos_id': engine.vocab.bos_id,
                      'eos_id': engine.vocab.eos_id},
            'max_length': engine.max_length,
            'decoding': {'beam_size': engine.default_beam_size, 'alpha': engine.default_alpha,
                         'beam_sizes': list(engine.settings.beam_sizes),
                         'alpha_range': list(ALPHA_RANGE)},
            'buckets': {'source_lengths': list(engine.source_buckets),
                        'batch_rows': list(engine.batch_rows),
                        'max_batch_tokens': engine.settings.max_batch_tokens,
                        'max_decoder_rows': engine.settings.max_decoder_rows},
            'limits': {'max_texts': settings.max_texts, 'max_chars': settings.max_chars,
                       'max_body_bytes': settings.max_body_bytes,
                       'max_queue': settings.batcher.max_queue,
                       'timeout_s': settings.batcher.timeout_s},
            'batching': {'enabled': settings.batcher.batching,
                         'max_wait_ms': settings.batcher.max_wait_ms},
            'ready': self.ready, 'compile_seconds': engine.compile_seconds}
