"""Import parity: a random OPUS-MT-like MarianMTModel (2+2 layers, d 64, SiLU, biases, random
final_logits_bias, pad last) read by this project gives transformers' logits, its greedy and
beam-search outputs, and MarianTokenizer's ids and text. Offline: nothing is downloaded."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

# The interop extra (in dev): imported, not importorskip'd, so that without it these fail.
import torch  # noqa: E402
import transformers  # noqa: E402

from marian_fixture import (corpus, padded_batch, random_marian,  # noqa: E402
                            varied_marian_options)
from transformer_jax import Translator  # noqa: E402
from transformer_jax.decoding.decoder import make_decoder  # noqa: E402
from transformer_jax.interop.marian_format import MarianFormatError  # noqa: E402
from transformer_jax.interop.marian_import import load_pretrained  # noqa: E402

MAX_NEW = 24


@pytest.fixture(scope='module')
def marian(tmp_path_factory):
  directory = tmp_path_factory.mktemp('opus_mt_like')
  model, tokenizer = random_marian(directory, **varied_marian_options())
  return directory, model, tokenizer


@pytest.fixture(scope='module')
def ours(marian):
  translator = Translator.from_pretrained(str(marian[0]))
  return translator


def _sources(count, offset=0):
  return [e for e, _ in corpus()[offset:offset + count]]


def test_logits_equal_transformers_on_a_padded_batch(marian, ours):
  _, model, tokenizer = marian
  pairs = corpus()[:8]
  vocab = ours.vocab
  src_ids, src_mask = padded_batch([vocab.encode(e) + [vocab.eos_id] for e, _ in pairs],
                                   vocab.pad_id)
  dec_ids, dec_mask = padded_batch(
      [[vocab.bos_id] + vocab.encode_target(d)[:3 + i] for i, (_, d) in enumerate(pairs)],
      vocab.pad_id)
  assert (src_mask == 0).any() and (dec_mask == 0).any()  # both sides have padding
  with torch.no_grad():
    ref = model(input_ids=torch.tensor(src_ids), attention_mask=torch.tensor(src_mask),
                decoder_input_ids=torch.tensor(dec_ids)).logits.numpy()
  got = np.asarray(nnx.merge(ours.graphdef, ours.params)(jnp.asarray(src_ids, jnp.int32),
                                                          jnp.asarray(dec_ids, jnp.int32)))
  real = dec_mask.astype(bool)  # transformers computes padded decoder rows too; we mask them
  assert np.abs(got - ref)[real].max() <= 1e-5 * np.abs(ref[real]).max()


def _ours_tokens(translator, sources, beam_size, alpha=0.0):
  vocab = translator.vocab
  ids, _ = padded_batch([vocab.encode(s) + [vocab.eos_id] for s in sources], vocab.pad_id)
  decode = make_decoder(translator.graphdef, max_length=MAX_NEW, beam_size=beam_size,
                        alpha=alpha)
  tokens = np.asarray(decode(translator.params, jnp.asarray(ids, jnp.int32)).tokens_BL)
  return [_until_eos(row, vocab.eos_id) for row in tokens.tolist()]


def _hf_tokens(model, tokenizer, sources, **generate):
  batch = tokenizer(sources, return_tensors='pt', padding=True)
  with torch.no_grad():
    out = model.generate(**batch, do_sample=False, max_new_tokens=MAX_NEW,
                         bad_words_ids=[[model.config.pad_token_id]], **generate)
  return [_until_eos(row[1:], model.config.eos_token_id) for row in out.tolist()]


def _until_eos(row, eos):
  return row[:row.index(eos) + 1] if eos in row else row


def test_greedy_equals_generate(marian, ours):
  _, model, tokenizer = marian
  sources = _sources(32)
  got, ref = _ours_tokens(ours, sources, 1), _hf_tokens(model, tokenizer, sources, num_beams=1)
  ended = sum(g[-1] == model.config.eos_token_id for g in got)
  assert 8 <= ended <= 24 and len({tuple(g) for g in got}) >= 10  # they differ; some run on
  assert got == ref


def test_beam4_equals_generate_on_most_inputs(marian, ours):
  """Both searches keep 2k candidates per step and rank by log-probability (α = 0 = no length
  penalty), but stop differently: transformers (early_stopping=False) keeps going while a live
  beam could still beat the worst finished one, and returns the best of its k finished
  hypotheses; ours stops once no live beam can beat the worst finished one either, so the two
  can only differ where a longer hypothesis overtakes late."""
  _, model, tokenizer = marian
  sources = _sources(32, offset=100)
  got = _ours_tokens(ours, sources, 4)
  ref = _hf_tokens(model, tokenizer, sources, num_beams=4, length_penalty=0.0)
  assert sum(g == r for g, r in zip(got, ref)) >= 0.9 * len(sources)


def test_tokenizer_ids_and_decoding_equal_marian_tokenizer(marian, ours):
  _, _, tokenizer = marian
  pairs = corpus(400)[200:]
  vocab = ours.vocab
  sources, targets = [e for e, _ in pairs], [d for _, d in pairs]
  # Characters neither SentencePiece model has seen: unknown pieces, and a language code.
  sources += ['A snowman \u2603 at Z\u00fcrich.', '>>deu<< Two dogs.', '']
  targets += ['Ein Schneemann \u2603 in Z\u00fcrich \u00e6.', 'Zwei Hunde \u4e2d.', '']
  batch = tokenizer(sources, text_target=targets)
  assert [vocab.encode(s) + [vocab.eos_id] for s in sources] == batch['input_ids']
  assert [vocab.encode_target(t) + [vocab.eos_id] for t in targets] == batch['labels']
  assert vocab.unk_id in batch['input_ids'][-3] and vocab.unk_id in batch['labels'][-3]
  for ids in batch['labels']:
    assert vocab.decode(ids) == tokenizer.decode(ids, skip_special_tokens=True,
                                                 use_source_tokenizer=False)


def test_translator_from_pretrained_translates_as_transformers_does(marian, ours):
  _, model, tokenizer = marian
  sources = _sources(12, offset=50)
  texts = ours.translate(sources, beam_size=1, max_length=MAX_NEW)
  ref = tokenizer.batch_decode(_hf_tokens(model, tokenizer, sources, num_beams=1),
                               skip_special_tokens=True)
  assert texts == ref


def test_pad_is_never_generated_even_when_the_model_prefers_it(marian):
  directory, _, _ = marian
  translator = Translator.from_pretrained(str(directory))
  params = jax.tree.map(lambda x: x, translator.params)
  pad = translator.vocab.pad_id
  params['logits_bias_V'] = params['logits_bias_V'].at[pad].add(100.0)
  translator.params = params
  for beam in (1, 4):
    for row in _ours_tokens(translator, _sources(4), beam):
      assert pad not in row and len(row) > 0


@pytest.mark.parametrize('edit,message', [
    (lambda d: (d / 'model.safetensors').unlink(), 'has no model.safetensors'),
    (lambda d: (d / 'vocab.json').unlink(), 'has no vocab.json'),
    (lambda d: _edit_config(d, activation_function='tanh'), '`activation_function`'),
    (lambda d: _edit_config(d, share_encoder_decoder_embeddings=False), 'separate source'),
    (lambda d: _edit_config(d, normalize_before=True), 'pre-LN'),
    (lambda d: _edit_config(d, vocab_size=99), 'vocab_size = 99'),
    (lambda d: (d / 'config.json').write_text('{"model_type": "marian",'), 'not valid JSON'),
])
def test_bad_pretrained_directories_fail_naming_the_file(marian, tmp_path, edit, message):
  directory = tmp_path / 'model'
  shutil.copytree(marian[0], directory)
  edit(directory)
  with pytest.raises((MarianFormatError, ValueError), match=message) as error:
    load_pretrained(directory)
  assert str(directory) in str(error.value)


def _edit_config(directory, **changes):
  config = json.loads((directory / 'config.json').read_text())
  config.update(changes)
  (directory / 'config.json').write_text(json.dumps(config))
