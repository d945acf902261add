"""The one decoder interface: a jitted `decode(params, inputs_BS) -> DecodeResult`.

    decode = make_decoder(graphdef, beam_size=4, alpha=0.6, max_length=64)
    result = decode(params, inputs_BS)        # tokens_BL, scores_B, lengths_B, num_steps

The method is named, or chosen from the beam size (1: greedy, more: beam search);
`decoder_from_config` takes the settings from a run's `eval` section. Every caller (the
trainer's BLEU, the Translator, translate.py, the benchmarks) decodes through here, and
every method returns the same `DecodeResult`.

Token conventions: source rows are `tokens + [eos]` padded with 0; decoding starts from
bos; outputs exclude bos, include eos when produced, and are 0 after it.
Shape suffixes: B sentences, S source length, L max length.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx

# The built-in methods register themselves when imported; a new method's module goes here.
from transformer_jax.decoding import beam_search as _beam_search  # noqa: F401
from transformer_jax.decoding import greedy as _greedy  # noqa: F401
from transformer_jax.decoding.methods import DecodeResult, get_method
from transformer_jax.sharding import to_host

__all__ = ['DecodeResult', 'choose_method', 'decode', 'make_decoder', 'decoder_from_config',
           'decode_batches']


def choose_method(beam_size: int, method: str | None = None) -> str:
  """`method` when given, else 'greedy' for beam size 1 and 'beam_search' for more."""
  if method is not None:
    return method
  return 'greedy' if beam_size == 1 else 'beam_search'


def decode(model, inputs_BS, *, max_length: int, beam_size: int = 1, alpha: float = 0.6,
           method: str | None = None, **kwargs) -> DecodeResult:
  """Translations of inputs_BS [B, S] by the chosen method (traceable; not jitted)."""
  fn = get_method(choose_method(beam_size, method))
  return fn(model, inputs_BS, max_length=max_length, beam_size=beam_size, alpha=alpha, **kwargs)


def make_decoder(graphdef: nnx.GraphDef, *, max_length: int, beam_size: int = 1,
                 alpha: float = 0.6, method: str | None = None,
                 **kwargs) -> Callable[..., DecodeResult]:
  """`decode` jitted as `decoder(params, inputs_BS) -> DecodeResult`.

      graphdef, params = nnx.split(model, nnx.Param)   # or nnx.split(model)

  The settings are fixed at construction, so jit compiles once per input shape
  (batch, source length). The weights are arguments, not constants baked into the
  executable: one compilation serves every checkpoint of the same graphdef.
  """
  get_method(choose_method(beam_size, method))  # an unknown method fails here, not in jit

  @jax.jit
  def decoder(params, inputs_BS):
    return decode(nnx.merge(graphdef, params), inputs_BS, max_length=max_length,
                  beam_size=beam_size, alpha=alpha, method=method, **kwargs)

  return decoder


def decoder_from_config(graphdef: nnx.GraphDef, eval_config) -> Callable[..., DecodeResult]:
  """The decoder a run's validation BLEU is measured with (config section `eval`)."""
  return make_decoder(graphdef, max_length=eval_config.max_decode_length,
                      beam_size=eval_config.beam_size, alpha=eval_config.alpha,
                      method=eval_config.get('method') or None)


def decode_batches(decoder: Callable[..., DecodeResult], params,
                   inputs: Sequence[np.ndarray]) -> list[list[int]]:
  """Token ids of every row of every batch of source ids, in order."""
  pending = [decoder(params, x) for x in inputs]  # dispatch all before the first fetch
  rows = []
  for result in pending:
    rows.extend(np.asarray(to_host(result.tokens_BL)).tolist())
  return rows
