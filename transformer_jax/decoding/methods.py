"""The decoding-method registry and the one result type every method returns.

A method is a function `fn(model, inputs_BS, *, max_length, beam_size, alpha, bos_id, eos_id,
stop_early) -> DecodeResult`, registered under a name with `@register_method('name')`.
`decoder.make_decoder` looks it up; the Translator, the trainer's BLEU evaluation and
translate.py all go through `make_decoder`, so a new method is one new file (and its import
in decoder.py).

Shape suffixes: B sentences, S source length, L max length.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class DecodeResult(NamedTuple):
  """What every decoding method returns, one row per sentence."""
  tokens_BL: jax.Array  # int32: the translation, without bos, with eos when produced, 0 after it
  scores_B: jax.Array   # float32: log P(Y | X), divided by the length penalty where one applies
  lengths_B: jax.Array  # int32: tokens up to and including eos (L when there is none)
  num_steps: jax.Array  # int32 scalar: decoder steps run (< L when every sentence ended early)
  # Beam search only (None elsewhere): its k hypotheses per sentence, best first; row 0 is
  # tokens_BL / scores_B. Finished ones come first, then live ones scored with lp(L);
  # an unused slot has score -inf.
  nbest_tokens_BWL: jax.Array | None = None
  nbest_scores_BW: jax.Array | None = None


DecodeFn = Callable[..., DecodeResult]
_METHODS: dict[str, DecodeFn] = {}


def register_method(name: str) -> Callable[[DecodeFn], DecodeFn]:
  def register(fn: DecodeFn) -> DecodeFn:
    if name in _METHODS and _METHODS[name] is not fn:
      raise ValueError(f'decoding method {name!r} is already registered ({_METHODS[name]})')
    _METHODS[name] = fn
    return fn
  return register


def get_method(name: str) -> DecodeFn:
  if name not in _METHODS:
    raise ValueError(f'unknown decoding method {name!r}; registered: {sorted(_METHODS)}')
  return _METHODS[name]


def method_names() -> list[str]:
  return sorted(_METHODS)


def lengths_from_tokens(tokens_BL: jax.Array, eos_id: int) -> jax.Array:
  """[B] tokens up to and including the first eos of each row; L for a row without one."""
  is_eos_BL = tokens_BL == eos_id
  first_eos_B = jnp.argmax(is_eos_BL, axis=1).astype(jnp.int32)
  return jnp.where(is_eos_BL.any(axis=1), first_eos_B + 1, tokens_BL.shape[1]).astype(jnp.int32)
