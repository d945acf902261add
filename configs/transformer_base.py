"""The paper's base model and schedule (Table 3) on WMT14 en→de, for accelerators.

d_model 512, 8 heads, d_ff 2048, 6+6 layers, P_drop 0.1, ε_ls 0.1,
~25k target tokens per batch, warmup 4000, the rsqrt schedule (scale 1), a
shared 37k vocabulary (here a joint SentencePiece of 32k), beam 4, α 0.6.
Data: TFDS catalog `wmt14_translate/de-en` (set data.dataset = 'wmt14').
"""
from configs import multi30k


def get_config():
  config = multi30k.get_config()
  config.num_train_steps = 100_000
  config.batch_tokens = 25_600
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.data.dataset = 'wmt14'
  config.data.vocab_size = 32_000
  config.data.max_length = 256
  config.model.d_model = 512
  config.model.num_heads = 8
  config.model.d_ff = 2048
  config.model.num_encoder_layers = 6
  config.model.num_decoder_layers = 6
  config.model.dropout_rate = 0.1
  config.ema_decay = 0.0  # the paper averages the last 5 checkpoints instead
  config.average_last_n = 5
  config.model.dtype = 'bfloat16'
  config.optimizer.schedule = 'rsqrt'
  config.optimizer.learning_rate_scale = 1.0
  config.optimizer.warmup_steps = 4000
  config.optimizer.cooldown_steps = 0
  config.optimizer.grad_clip_norm = 0.0
  config.time_limit_minutes = 0.0
  config.eval.batch_size = 256
  config.eval.max_decode_length = 256
  config.eval.num_bleu_sentences = 0
  return config
