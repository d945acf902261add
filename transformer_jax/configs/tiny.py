"""A tiny model for tests: trains end to end on fixture data in seconds."""
from transformer_jax.configs import multi30k


def get_config():
  config = multi30k.get_config()
  config.num_train_steps = 40
  config.batch_tokens = 512
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 20
  config.log_every_steps = 5
  config.keep_checkpoints = 3
  config.data.vocab_size = 200
  config.data.max_length = 32
  config.model.d_model = 32
  config.model.num_heads = 2
  config.model.d_ff = 64
  config.model.num_encoder_layers = 1
  config.model.num_decoder_layers = 1
  config.model.dropout_rate = 0.1
  config.optimizer.warmup_steps = 10
  config.optimizer.schedule = 'rsqrt_cooldown'
  config.optimizer.cooldown_steps = 10
  config.average_last_n = 0
  config.ema_decay = 0.9            # exercises the EMA in every training test
  config.time_limit_minutes = 0.0
  config.optimizer.learning_rate_scale = 2.0
  config.eval.batch_size = 16
  config.eval.beam_size = 2
  config.eval.max_decode_length = 32
  config.eval.num_bleu_sentences = 32
  return config
