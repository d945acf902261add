"""Evaluation batches: every validation pair exactly once, in order, one pair per row, with the
same keys as the training batches (pipeline.py) plus which row is which example.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses

from absl import logging
import numpy as np

from transformer_jax.data.pipeline import SEQUENCE_KEYS, check_languages
from transformer_jax.data.vocab import Vocab


@dataclasses.dataclass
class EvalBatches:
  """Evaluation data: every example exactly once, in source order.

  `batches[i]` holds the training keys, each [batch_size, max_length] int32 with
  one sentence per row (segmentation 1 on its tokens), plus `example_mask`
  [batch_size] (1 = real row, 0 = padding row of the last batch) and
  `example_index` [batch_size] (row's index into `sources` / `references`, -1 if padding).
  """
  batches: list[dict[str, np.ndarray]]
  sources: list[str]
  references: list[str]
  num_truncated: int


def make_eval_batches(source: Sequence[Mapping[str, str]], vocab: Vocab, *, source_lang: str,
                      target_lang: str, batch_size: int, max_length: int) -> EvalBatches:
  """Fixed-shape batches of `source` in order, one pair per row, the last one padded.

  A side longer than max_length - 1 tokens is truncated before EOS (BOS) is added,
  so its loss covers a prefix; truncated pairs are counted and logged. References
  stay untruncated for BLEU.
  """
  check_languages(source, source_lang, target_lang)
  pairs = [source[i] for i in range(len(source))]
  sources = [pair[source_lang] for pair in pairs]
  references = [pair[target_lang] for pair in pairs]
  keep = max_length - 1  # Room for EOS (inputs, targets) or BOS (decoder_inputs).
  source_ids, target_ids = vocab.encode_batch(sources), vocab.encode_target_batch(references)
  num_truncated = sum(len(s) > keep or len(t) > keep for s, t in zip(source_ids, target_ids))
  if num_truncated:
    logging.warning('Truncated %d of %d evaluation pairs to max_length=%d tokens.',
                    num_truncated, len(pairs), max_length)
  padded_size = -(-len(pairs) // batch_size) * batch_size
  # Token columns padded with the vocabulary's pad id: decoding derives the source mask from it.
  columns = {key: np.full((padded_size, max_length), vocab.pad_id if key in SEQUENCE_KEYS else 0,
                          np.int32) for key in (
      *SEQUENCE_KEYS, 'inputs_segmentation', 'inputs_position',
      'targets_segmentation', 'targets_position')}
  for row, (src, tgt) in enumerate(zip(source_ids, target_ids)):
    inputs, tgt = src[:keep] + [vocab.eos_id], tgt[:keep]
    columns['inputs'][row, :len(inputs)] = inputs
    columns['inputs_segmentation'][row, :len(inputs)] = 1
    columns['inputs_position'][row, :len(inputs)] = np.arange(len(inputs))
    columns['decoder_inputs'][row, :len(tgt) + 1] = [vocab.bos_id] + tgt
    columns['targets'][row, :len(tgt) + 1] = tgt + [vocab.eos_id]
    columns['targets_segmentation'][row, :len(tgt) + 1] = 1
    columns['targets_position'][row, :len(tgt) + 1] = np.arange(len(tgt) + 1)
  example_index = np.full(padded_size, -1, np.int32)
  example_index[:len(pairs)] = np.arange(len(pairs))
  columns['example_index'] = example_index
  columns['example_mask'] = (example_index >= 0).astype(np.int32)
  batches = [{key: value[start:start + batch_size] for key, value in columns.items()}
             for start in range(0, padded_size, batch_size)]
  return EvalBatches(batches, sources, references, num_truncated)
