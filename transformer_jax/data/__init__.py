"""Multi30k data: TFDS builder (no TensorFlow), joint SentencePiece vocab, grain pipelines."""

from transformer_jax.data.multi30k import (
    MANUAL_DIR_ENV,
    DecodedSource,
    Multi30kDataError,
    Multi30kFileNotFoundError,
    load_multi30k,
    prepare_multi30k,
)
from transformer_jax.data.pipeline import (
    LANGUAGE_PAIRS,
    EvalBatches,
    LengthFilterStats,
    check_language_pair,
    make_eval_batches,
    make_train_iterator,
    tokenize_pair,
    tokenized_pairs,
)
from transformer_jax.data.vocab import Vocab, load_or_train_vocab, train_vocab

__all__ = [
    'MANUAL_DIR_ENV', 'DecodedSource', 'Multi30kDataError', 'Multi30kFileNotFoundError',
    'load_multi30k', 'prepare_multi30k',
    'LANGUAGE_PAIRS', 'EvalBatches', 'LengthFilterStats', 'check_language_pair',
    'make_eval_batches', 'make_train_iterator', 'tokenize_pair', 'tokenized_pairs',
    'Vocab', 'load_or_train_vocab', 'train_vocab',
]
