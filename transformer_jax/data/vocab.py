"""A joint SentencePiece vocabulary over the languages of a run.

One unigram model covers both languages so the encoder and decoder can share
(and tie) a single embedding table. Ids 0–3 are fixed: pad=0 (so zero-filled
arrays are padding), unk=1 (distinct from pad, so an unknown word is still
attended to and predicted rather than masked away), bos=2, eos=3.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
import os
from pathlib import Path
import tempfile

from absl import logging
import numpy as np
import sentencepiece as spm

from transformer_jax.errors import UserError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_FILENAME = 'spm.model'


class VocabularyFileError(UserError, ValueError):
  """A vocabulary file that is not a SentencePiece model with this project's special ids."""


class Vocab:
  """Text <-> token ids through a trained SentencePiece model at `path`."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    try:
      self._processor = spm.SentencePieceProcessor(model_file=os.fspath(self.path))
    except (RuntimeError, OSError) as e:  # sentencepiece raises RuntimeError on a bad file
      raise VocabularyFileError(
          f'{self.path} is not a readable SentencePiece model ({e}): restore the file, or '
          'train into a new work directory (a run\'s checkpoints need their own vocabulary)'
      ) from None
    found = (self._processor.pad_id(), self._processor.unk_id(),
             self._processor.bos_id(), self._processor.eos_id())
    if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise VocabularyFileError(
          f'{self.path} has special ids (pad, unk, bos, eos) = {found}, expected '
          f'{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; delete it to retrain.')

  @property
  def size(self) -> int:
    """Number of ids: the embedding and softmax width."""
    return self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS or EOS."""
    return self._processor.encode(text, out_type=int)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """`encode` of many texts in one C++ call."""
    return self._processor.encode(list(texts), out_type=int)

  # One model serves both sides: the target side encodes as the source does.
  encode_target = encode
  encode_target_batch = encode_batch

  @property
  def files(self) -> tuple[Path, ...]:
    """The files this vocabulary is read from (hashed into checkpoints, copied on export)."""
    return (self.path,)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first EOS; PAD and BOS are dropped."""
    kept = []
    for token in np.asarray(list(ids), dtype=np.int64).tolist():
      if token == EOS_ID:
        break
      if token not in (PAD_ID, BOS_ID):
        kept.append(token)
    return self._processor.decode(kept)

  def id_to_piece(self, token: int) -> str:
    """The subword piece of one id (for axis labels of attention maps)."""
    return self._processor.id_to_piece(int(token))

  def normalize(self, text: str) -> str:
    """`text` as the model sees it (NFKC, single spaces) = `decode(encode(text))`."""
    # SentencePiece writes spaces as U+2581 and puts one in front of the text.
    return self._processor.normalize(text).replace('\u2581', ' ').strip()

  # Pickle by path, so grain worker processes rebuild the C++ processor.
  def __getstate__(self) -> dict:
    return {'path': self.path}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state['path'])

  def __repr__(self) -> str:
    return f'Vocab(size={self.size}, path={os.fspath(self.path)!r})'


def _sentences(source: Sequence[Mapping[str, str]],
               languages: Sequence[str]) -> Iterator[str]:
  for index in range(len(source)):
    pair = source[index]
    for lang in languages:
      yield pair[lang]


def train_vocab(
    source: Sequence[Mapping[str, str]],
    model_path: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    languages: Sequence[str],
    max_sentences: int = 1_000_000,
    num_threads: int = 2,
) -> Vocab:
  """Trains a joint unigram model on `source`, written atomically to `model_path`.

  Multi30k train (58k sentences) takes ~5 s on 2 cores; `max_sentences` caps
  the sample SentencePiece draws from larger corpora.
  """
  model_path = Path(model_path)
  model_path.parent.mkdir(parents=True, exist_ok=True)
  # Written next to the target and renamed, so readers never see half a model.
  with tempfile.NamedTemporaryFile(dir=model_path.parent, prefix='.spm-', suffix='.tmp',
                                   delete=False) as model_file:
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_sentences(source, languages),
          model_writer=model_file,
          model_type='unigram',
          vocab_size=vocab_size,
          # A tiny corpus (tests) cannot fill a large vocabulary: allow fewer pieces.
          hard_vocab_limit=False,
          # NFKC + whitespace clean-up: decoded text equals the reference up to
          # e.g. NBSP -> space, which sacreBLEU's tokeniser treats alike. Cased.
          normalization_rule_name='nmt_nfkc',
          # Latin script with umlauts: keep every character, no <unk> on train.
          character_coverage=1.0,
          input_sentence_size=max_sentences,
          shuffle_input_sentence=True,
          num_threads=num_threads,
          pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
          minloglevel=2,
      )
      model_file.close()
      os.replace(model_file.name, model_path)
    except RuntimeError as e:  # sentencepiece's errors (a too small vocabulary, no text)
      raise VocabularyFileError(
          f'training the vocabulary {model_path} failed: {str(e).split("] ")[-1]} (config key '
          f'`data.vocab_size` = {vocab_size})') from None
    finally:
      if os.path.exists(model_file.name):
        os.unlink(model_file.name)
  return Vocab(model_path)


def load_or_train_vocab(
    train_source: Sequence[Mapping[str, str]],
    vocab_dir: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    languages: Sequence[str],
) -> Vocab:
  """`<vocab_dir>/spm.model` if present, else one trained on `train_source`.

  Args:
    train_source: random-access pairs, e.g. the 'train' split of `registry.load_splits`.
    vocab_dir: directory holding the model, e.g. `<workdir>/vocab`.
    vocab_size: requested number of pieces; a tiny corpus may give fewer.
    languages: which side(s) of each pair to learn from.

  An existing model is reused as is; a size mismatch only warns, since a tiny
  corpus legitimately yields fewer pieces than requested.
  """
  model_path = Path(vocab_dir) / MODEL_FILENAME
  if model_path.exists():
    vocab = Vocab(model_path)
    if vocab.size != vocab_size:
      logging.warning('Reusing %s with %d pieces although vocab_size=%d; delete it to '
                      'retrain.', model_path, vocab.size, vocab_size)
    logging.info('Reusing vocabulary %s', vocab)
    return vocab
  vocab = train_vocab(train_source, model_path, vocab_size=vocab_size, languages=languages)
  logging.info('Trained vocabulary %s', vocab)
  return vocab
