"""Validation: loss over the eval batches and BLEU of decoded translations, for EMA and raw params.

    evaluator = Evaluator.for_run(run)
    results = evaluator.evaluate_state(state, final=False)   # eval_* (EMA) and raw_* scores

The decoder is the one a run's `eval` section names (`decoding.decoder_from_config`).
"""
from __future__ import annotations

import math
from typing import Callable

import jax

from transformer_jax import scoring, sharding
from transformer_jax.decoding.decoder import decode_batches, decoder_from_config
from transformer_jax.sharding import to_host
from transformer_jax.training.metrics import summarize


def eval_loss(eval_fn: Callable, params, batches) -> dict:
  """Token-averaged validation loss, nll, perplexity and accuracy."""
  totals = None
  for batch in batches:
    sums = eval_fn(params, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  return summarize(to_host(totals))


class Evaluator:
  """Scores params on a run's validation split.

  Args:
    eval_fn: jitted (params, batch) -> summed metrics.
    decoder: jitted (params, inputs_BS) -> DecodeResult.
    batches: the eval batches as global arrays; `references` and `vocab` turn decoded rows
      into text scored by sacreBLEU.
    num_bleu_sentences: score the first N sentences only (0: all).
  """

  def __init__(self, eval_fn, decoder, batches, references, vocab, *, batch_size: int,
               num_bleu_sentences: int = 0):
    self.eval_fn, self.decoder, self.batches = eval_fn, decoder, batches
    self.references, self.vocab = references, vocab
    self.batch_size, self.num_bleu_sentences = batch_size, num_bleu_sentences

  @classmethod
  def for_run(cls, run) -> 'Evaluator':
    batches = [sharding.global_batch(_local_rows(b), run.mesh) for b in run.eval_data.batches]
    return cls(run.eval_step, decoder_from_config(run.graphdef, run.config.eval), batches,
               run.eval_data.references, run.vocab, batch_size=run.config.eval.batch_size,
               num_bleu_sentences=run.config.eval.num_bleu_sentences)

  def loss(self, params) -> dict:
    return eval_loss(self.eval_fn, params, self.batches)

  def bleu(self, params) -> dict:
    n = self.num_bleu_sentences or len(self.references)
    inputs = [b['inputs'] for b in self.batches][:math.ceil(n / self.batch_size)]
    rows = decode_batches(self.decoder, params, inputs)
    hyps = [self.vocab.decode(r) for r in rows[:n]]
    return scoring.bleu_report(hyps, self.references[:n])

  def evaluate(self, params) -> dict:
    results = self.loss(params)
    results.update(self.bleu(params))
    return results

  def evaluate_state(self, state, *, final: bool) -> dict:
    """Scores of the params a run evaluates with (the EMA when it keeps one).

    With an EMA, the raw params' loss is added as raw_* (and their BLEU at the `final`
    evaluation): what the EMA buys is measured in every run.
    """
    results = self.evaluate(state.eval_params)
    if state.ema_params is not None:
      raw = self.evaluate(state.params) if final else self.loss(state.params)
      results.update({f'raw_{k}': v for k, v in raw.items() if 'signature' not in k})
    return results


def _local_rows(batch: dict) -> dict:
  """This process's slice of an eval batch that every process holds in full."""
  n, i = jax.process_count(), jax.process_index()
  rows = next(iter(batch.values())).shape[0] // n
  return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}
