"""Marian / OPUS-MT tokenisation: `source.spm` and `target.spm` SentencePiece models that
split text into pieces, and one `vocab.json` that maps pieces to the model's ids.

The same rules as transformers' `MarianTokenizer` (tests/test_interop_marian.py checks them
against it): pieces missing from vocab.json are `<unk>`; a leading language code such as
`>>fra<<` is one token; sources and targets end with `</s>`; decoding stops at `</s>` and
drops `<pad>` and `<unk>` (`skip_special_tokens=True`). There is no bos: the decoder starts
from config.json's `decoder_start_token_id` when the directory has one, else from `<pad>`
(as OPUS-MT does; its pad embedding row is zero).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
import json
import os
from pathlib import Path

import sentencepiece as spm

from transformer_jax.data.vocab import VocabularyFileError

SOURCE_SPM, TARGET_SPM, VOCAB_JSON = 'source.spm', 'target.spm', 'vocab.json'
FILENAMES = (SOURCE_SPM, TARGET_SPM, VOCAB_JSON)


def _load_spm(path: Path) -> spm.SentencePieceProcessor:
  try:
    return spm.SentencePieceProcessor(model_file=os.fspath(path))
  except (RuntimeError, OSError) as e:
    raise VocabularyFileError(f'{path} is not a readable SentencePiece model ({e})') from None


def _load_pieces(path: Path) -> dict[str, int]:
  try:
    with open(path, encoding='utf-8') as f:
      pieces = json.load(f)
  except (OSError, ValueError) as e:
    raise VocabularyFileError(f'{path} is not a readable JSON vocabulary ({e})') from None
  if not isinstance(pieces, dict) or not all(
      isinstance(k, str) and isinstance(v, int) for k, v in pieces.items()):
    raise VocabularyFileError(f'{path} must map each piece (a string) to its id (an int)')
  return pieces


def _decoder_start_id(directory: Path, pad_id: int) -> int:
  config = directory / 'config.json'
  if not config.exists():
    return pad_id
  try:
    with open(config, encoding='utf-8') as f:
      start = json.load(f).get('decoder_start_token_id')
  except (OSError, ValueError) as e:
    raise VocabularyFileError(f'{config} is not valid JSON ({e})') from None
  return pad_id if start is None else int(start)


class MarianVocab:
  """Text <-> ids through a Marian directory's source.spm, target.spm and vocab.json."""

  def __init__(self, directory: str | os.PathLike, *, eos_token: str = '</s>',
               unk_token: str = '<unk>', pad_token: str = '<pad>'):
    self.directory = Path(directory)
    missing = [n for n in FILENAMES if not (self.directory / n).is_file()]
    if missing:
      raise VocabularyFileError(f'{self.directory} has no {", ".join(missing)}: a Marian '
                                f'tokenizer needs {", ".join(FILENAMES)}')
    self._source = _load_spm(self.directory / SOURCE_SPM)
    self._target = _load_spm(self.directory / TARGET_SPM)
    self._ids = _load_pieces(self.directory / VOCAB_JSON)
    for name, token in (('eos', eos_token), ('unk', unk_token), ('pad', pad_token)):
      if token not in self._ids:
        raise VocabularyFileError(f'{self.directory / VOCAB_JSON} has no {name} token '
                                  f'{token!r}')
    self._pieces = {i: p for p, i in self._ids.items()}
    self.eos_id, self.unk_id, self.pad_id = (self._ids[eos_token], self._ids[unk_token],
                                             self._ids[pad_token])
    # The decoder's start token: config.json's decoder_start_token_id (OPUS-MT: pad itself).
    self.bos_id = _decoder_start_id(self.directory, self.pad_id)
    if self.bos_id not in self._pieces:
      raise VocabularyFileError(f'{self.directory / "config.json"}: decoder_start_token_id = '
                                f'{self.bos_id} is not an id of {VOCAB_JSON}')
    self._tokens = (eos_token, unk_token, pad_token)
    self._skipped = {self.pad_id, self.unk_id}

  @property
  def size(self) -> int:
    return max(self._pieces) + 1

  @property
  def files(self) -> tuple[Path, ...]:
    return tuple(self.directory / n for n in FILENAMES)

  def _encode(self, processor, text: str) -> list[int]:
    code = []
    if text.startswith('>>') and (end := text.find('<<')) != -1:  # a target-language token
      code, text = [text[:end + 2]], text[end + 2:]
    pieces = code + processor.encode(text, out_type=str)
    return [self._ids.get(p, self.unk_id) for p in pieces]

  def encode(self, text: str) -> list[int]:
    """Source-side ids of `text`, without `</s>`."""
    return self._encode(self._source, text)

  def encode_target(self, text: str) -> list[int]:
    """Target-side ids of `text` (target.spm), without `</s>`."""
    return self._encode(self._target, text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def encode_target_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode_target(t) for t in texts]

  def decode(self, ids: Iterable[int]) -> str:
    """Target text of `ids` up to the first `</s>`; `<pad>` and `<unk>` are dropped."""
    pieces = []
    for token in ids:
      token = int(token)
      if token == self.eos_id:
        break
      if token not in self._skipped:
        pieces.append(self._pieces.get(token, self._tokens[1]))
    return self._target.decode_pieces(pieces).replace('\u2581', ' ').strip()

  def id_to_piece(self, token: int) -> str:
    return self._pieces.get(int(token), self._tokens[1])

  def normalize(self, text: str) -> str:
    """`text` as the target side sees it (the target model's normaliser, single spaces)."""
    return self._target.normalize(text).replace('\u2581', ' ').strip()

  def __getstate__(self) -> dict:
    return {'directory': self.directory}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state['directory'])

  def __repr__(self) -> str:
    return f'MarianVocab(size={self.size}, directory={os.fspath(self.directory)!r})'
