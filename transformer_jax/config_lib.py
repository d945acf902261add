"""Checks a training ConfigDict before any compute, and derives the model from it.

Light to import: the dataset registry answers what datasets and language pairs exist.
"""
from __future__ import annotations

import ml_collections

from transformer_jax.data import registry
from transformer_jax.errors import UserError
from transformer_jax.nn.config import TransformerConfig

SCHEDULES = ('rsqrt', 'rsqrt_cooldown')  # training/schedules.py implements each


class ConfigError(UserError, ValueError):
  """A config key is missing or holds an invalid value; the message names the key."""


def _require(config, key: str, ok, what: str):
  value = config
  for part in key.split('.'):
    if part not in value:
      raise ConfigError(f'config key `{key}` is missing (the default config, transformer_jax/configs/multi30k.py, lists them all)')
    value = value[part]
  if not ok(value):
    raise ConfigError(f'config key `{key}` = {value!r} is invalid: {what}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key. Cheap: nothing is built."""
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  nonneg = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
  for key in ('num_train_steps', 'batch_tokens', 'eval_every_steps', 'checkpoint_every_steps',
              'log_every_steps', 'keep_checkpoints', 'data.vocab_size', 'data.max_length',
              'model.d_model', 'model.num_heads', 'model.d_ff', 'optimizer.warmup_steps',
              'eval.batch_size', 'eval.beam_size', 'eval.max_decode_length'):
    _require(config, key, pos_int, 'must be a positive integer')
  for key in ('seed', 'average_last_n', 'model.num_encoder_layers', 'model.num_decoder_layers',
              'optimizer.cooldown_steps', 'eval.num_bleu_sentences'):
    _require(config, key, lambda v: isinstance(v, int) and v >= 0, 'must be an integer >= 0')
  for key in ('time_limit_minutes', 'optimizer.weight_decay', 'optimizer.grad_clip_norm',
              'optimizer.eps', 'eval.alpha'):
    _require(config, key, nonneg, 'must be a number >= 0')
  for key in ('label_smoothing', 'ema_decay', 'model.dropout_rate', 'model.attention_dropout_rate',
              'model.relu_dropout_rate', 'optimizer.b1', 'optimizer.b2'):
    _require(config, key, lambda v: nonneg(v) and v < 1, 'must be in [0, 1)')
  _require(config, 'optimizer.learning_rate_scale', lambda v: nonneg(v) and v > 0,
           'must be > 0')
  if not isinstance(config.get('allow_resume_with_changes', False), bool):
    raise ConfigError('config key `allow_resume_with_changes` = '
                      f'{config.allow_resume_with_changes!r} is invalid: must be True or False')
  _require(config, 'optimizer.schedule', lambda v: v in SCHEDULES, f'valid: {SCHEDULES}')
  _require(config, 'data.dataset', lambda v: v in registry.dataset_names(),
           f'registered datasets: {registry.dataset_names()}')
  _require(config, 'data.source_lang', lambda v: isinstance(v, str) and v, 'must be a language code')
  _require(config, 'data.target_lang', lambda v: isinstance(v, str) and v, 'must be a language code')
  pair = (config.data.source_lang, config.data.target_lang)
  pairs = registry.get_dataset(config.data.dataset).language_pairs
  if pairs is not None and pair not in pairs:
    raise ConfigError(f'config keys `data.source_lang`/`data.target_lang` = {pair} is not a '
                      f'language pair of dataset {config.data.dataset!r}; valid: '
                      f'{", ".join("→".join(p) for p in pairs)}')
  if config.data.get('num_workers', 0) != 0:
    _require(config, 'data.num_workers', lambda v: isinstance(v, int) and v >= -1,
             'must be an integer: 0 (read in the training process), N worker processes, or -1 '
             '(one per spare core)')
  if config.batch_tokens < config.data.max_length:
    raise ConfigError(f'config key `batch_tokens` = {config.batch_tokens} must be at least '
                      f'`data.max_length` = {config.data.max_length} (one row)')
  if (config.optimizer.schedule == 'rsqrt_cooldown'  # 'rsqrt' ignores cooldown_steps
      and config.optimizer.cooldown_steps > config.num_train_steps):
    raise ConfigError(f'config key `optimizer.cooldown_steps` = {config.optimizer.cooldown_steps} '
                      f'must not exceed `num_train_steps` = {config.num_train_steps}')
  for axis in ('data', 'fsdp', 'tensor'):
    _require(config, f'mesh.{axis}', lambda v: isinstance(v, int) and (v == -1 or v > 0),
             'must be a positive integer or -1 (the rest of the devices)')
  try:
    model_config(config, vocab_size=config.data.vocab_size)
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from None


def max_length(config: ml_collections.ConfigDict) -> int:
  """The longest sequence the model is asked to handle: a packed row or a decoded sentence."""
  return max(config.data.max_length, config.eval.max_decode_length)


# Model keys added after runs were written without them: absent = the paper's choice.
MODEL_OPTION_DEFAULTS = {'activation': 'relu', 'attention_bias': False, 'logits_bias': False,
                         'position_layout': 'interleaved', 'layer_norm_eps': 1e-6,
                         'scale_embedding': True}


def special_ids(vocab) -> dict[str, int]:
  """The ids the model takes from its vocabulary (any tokenizer: `pad_id`, `bos_id`, `eos_id`)."""
  return {'pad_id': vocab.pad_id, 'bos_id': vocab.bos_id, 'eos_id': vocab.eos_id}


def model_config(config: ml_collections.ConfigDict, vocab_size: int, pad_id: int = 0,
                 bos_id: int = 2, eos_id: int = 3) -> TransformerConfig:
  """The TransformerConfig of `config.model`; the size and special ids are the vocabulary's."""
  m = config.model
  options = {k: m.get(k, default) for k, default in MODEL_OPTION_DEFAULTS.items()}
  return TransformerConfig(
      vocab_size=vocab_size, d_model=m.d_model, num_heads=m.num_heads, d_ff=m.d_ff,
      num_encoder_layers=m.num_encoder_layers, num_decoder_layers=m.num_decoder_layers,
      dropout_rate=m.dropout_rate, attention_dropout_rate=m.attention_dropout_rate,
      relu_dropout_rate=m.relu_dropout_rate, max_length=max_length(config),
      pre_ln=m.pre_ln, dtype=m.dtype, param_dtype=m.get('param_dtype', 'float32'),
      attention_impl=m.attention_impl, remat=m.remat, pad_id=pad_id, bos_id=bos_id,
      eos_id=eos_id, **options)


def build_model(config: ml_collections.ConfigDict, vocab_size: int, **ids):
  """The run's Transformer, initialised from `config.seed`; ids: `special_ids(vocab)`."""
  from flax import nnx
  from transformer_jax.nn.model import Transformer
  return Transformer(model_config(config, vocab_size, **ids), rngs=nnx.Rngs(config.seed))


def abstract_model(config: ml_collections.ConfigDict, vocab_size: int, **ids):
  """(graphdef, abstract params) without allocating weights."""
  from flax import nnx
  model = nnx.eval_shape(lambda: build_model(config, vocab_size, **ids))
  return nnx.split(model, nnx.Param)
