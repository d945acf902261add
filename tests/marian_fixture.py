"""A small random OPUS-MT-like Marian model, built offline: two SentencePiece models trained
here, a vocab.json laid out as OPUS-MT's (eos 0, unk 1, pad last), and a MarianMTModel with
random weights, biases and final_logits_bias, saved with save_pretrained."""
import io
import json
from pathlib import Path

import numpy as np
import sentencepiece as spm

from toy_corpus import real_multi30k_dir, real_pairs, toy_pairs


def corpus(count=600):
  """(en, de) sentence pairs: real Multi30k when $MULTI30K_DIR has it, else the toy lexicon."""
  if real_multi30k_dir() is not None:
    return real_pairs('train', count)
  return toy_pairs(count, 5, min_words=3, max_words=12)


def varied_marian_options() -> dict:
  """random_marian options under which greedy translations differ from source to source and
  some (not all) end within a few dozen tokens: weights at init_std 0.2 (at transformers' 0.02
  the logits bias alone picks every token) and an EOS bias tuned to the corpus' vocabulary."""
  return dict(init_std=0.2, eos_boost=5.5 if real_multi30k_dir() is not None else 2.5)


def _train_spm(sentences, vocab_size, path: Path):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                 vocab_size=vocab_size, model_type='unigram',
                                 hard_vocab_limit=False, character_coverage=1.0,
                                 bos_id=-1, eos_id=2, unk_id=1, pad_id=0, minloglevel=2,
                                 normalization_rule_name='nmt_nfkc')
  path.write_bytes(model.getvalue())
  return spm.SentencePieceProcessor(model_file=str(path))


def write_tokenizer(directory: Path, pairs, pieces_per_side=150) -> dict[str, int]:
  """source.spm (en), target.spm (de) and vocab.json; returns vocab.json's mapping."""
  directory.mkdir(parents=True, exist_ok=True)
  source = _train_spm([e for e, _ in pairs], pieces_per_side, directory / 'source.spm')
  target = _train_spm([d for _, d in pairs], pieces_per_side, directory / 'target.spm')
  ids = {'</s>': 0, '<unk>': 1}
  for processor in (source, target):
    for i in range(processor.get_piece_size()):
      piece = processor.id_to_piece(i)
      if not processor.is_control(i) and not processor.is_unknown(i) and piece not in ids:
        ids[piece] = len(ids)
  ids['<pad>'] = len(ids)
  (directory / 'vocab.json').write_text(json.dumps(ids, ensure_ascii=False), encoding='utf-8')
  return ids


def random_marian(directory: Path, *, seed=0, layers=2, d_model=64, heads=4, ffn=128,
                  activation='swish', pairs=None, eos_boost=0.0, max_positions=128,
                  init_std=0.02):
  """Saves a random MarianMTModel and its MarianTokenizer in `directory`; returns both."""
  import torch
  from transformers import MarianConfig, MarianMTModel, MarianTokenizer
  pairs = corpus() if pairs is None else pairs
  ids = write_tokenizer(directory, pairs)
  pad = ids['<pad>']
  config = MarianConfig(
      vocab_size=len(ids), decoder_vocab_size=len(ids), d_model=d_model, encoder_layers=layers,
      decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
      encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, activation_function=activation,
      max_position_embeddings=max_positions, scale_embedding=True, pad_token_id=pad, eos_token_id=0,
      decoder_start_token_id=pad, forced_eos_token_id=None, dropout=0.1, init_std=init_std)
  torch.manual_seed(seed)
  model = MarianMTModel(config).eval()
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('layer_norm.weight'):
        p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
      elif name.endswith('.bias'):
        p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    model.model.shared.weight[pad] = 0  # OPUS-MT's pad row: the decoder's start is zero
    model.final_logits_bias.copy_(0.5 * torch.randn(model.final_logits_bias.shape,
                                                    generator=generator))
    model.final_logits_bias[0, 0] += eos_boost  # so that some random translations end
  model.save_pretrained(directory, safe_serialization=True)
  tokenizer = MarianTokenizer(str(directory / 'source.spm'), str(directory / 'target.spm'),
                              str(directory / 'vocab.json'), source_lang='en', target_lang='de')
  tokenizer.save_pretrained(directory)
  return model, tokenizer


def padded_batch(rows, pad):
  width = max(len(r) for r in rows)
  ids = np.full((len(rows), width), pad, np.int64)
  mask = np.zeros((len(rows), width), np.int64)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, 1
  return ids, mask
