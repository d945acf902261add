"""Data: the dataset registry, datasets (datasets/), the SentencePiece vocabulary, and the
grain pipelines that pack batches.

Floor 0 of the package, beside nn/. Names import on first use, so that config validation
can ask the registry without loading TFDS or grain.
"""
import importlib

_LAZY = {
    'DatasetSpec': 'registry', 'register_dataset': 'registry', 'get_dataset': 'registry',
    'dataset_names': 'registry', 'load_splits': 'registry',
    'EvalBatches': 'eval_batches', 'LengthFilterStats': 'pipeline',
    'check_languages': 'pipeline', 'make_eval_batches': 'eval_batches',
    'make_train_iterator': 'pipeline',
    'tokenize_pair': 'pipeline', 'tokenized_pairs': 'pipeline',
    'Vocab': 'vocab', 'load_or_train_vocab': 'vocab', 'train_vocab': 'vocab',
}
__all__ = sorted(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
