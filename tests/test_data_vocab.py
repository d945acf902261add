"""The SentencePiece vocabulary: fixed special ids, decode inverts encode, trained once and
reused, picklable (grain workers get a copy)."""
import pickle

from transformer_jax.data import load_or_train_vocab
from transformer_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID


def test_special_ids_are_fixed_and_distinct(toy_vocab):
  ids = (toy_vocab.pad_id, toy_vocab.unk_id, toy_vocab.bos_id, toy_vocab.eos_id)
  assert ids == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
  assert toy_vocab.encode('\u4e00').count(UNK_ID) == 1  # unseen character -> unk, not pad
  assert 4 < toy_vocab.size <= 120


def test_decode_inverts_encode_up_to_normalisation(toy, toy_vocab):
  for en, de in toy[1]['train'] + toy[1]['val']:
    for text in (en, de):
      assert toy_vocab.decode(toy_vocab.encode(text)) == toy_vocab.normalize(text) == text
  assert toy_vocab.normalize('ein  Hund\u00a012') == 'ein Hund 12'
  ids = toy_vocab.encode('ein Hund 3.')
  assert toy_vocab.decode([BOS_ID, *ids, EOS_ID, *ids, PAD_ID]) == 'ein Hund 3.'


def test_vocab_is_reused_written_atomically_and_picklable(toy_train, toy_vocab):
  mtime = toy_vocab.path.stat().st_mtime_ns
  again = load_or_train_vocab(toy_train, toy_vocab.path.parent, vocab_size=120,
                             languages=('en', 'de'))
  assert again.path.stat().st_mtime_ns == mtime
  assert sorted(p.name for p in toy_vocab.path.parent.iterdir()) == ['spm.model']
  assert pickle.loads(pickle.dumps(toy_vocab)).encode('ein Hund') == toy_vocab.encode('ein Hund')
