"""Config checks before any work: unknown keys, invalid values naming the key, a changed model
refused on resume, and the paper's base model building and tracing."""
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import config_lib, configs
from transformer_jax.training import loop as trainer
from transformer_jax.workdir import WorkDir
from transformer_jax.training.train_step import TrainState
from run_helpers import REPO, make_config, train


def test_unknown_config_key_fails_before_any_work(corpus, tmp_path):
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, 'train.py', '--config', 'configs/tiny.py', '--workdir',
       str(tmp_path / 'run'), '--config.nonexistent=1',
       f'--config.data.data_dir={tmp_path / "tfds"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'nonexistent' in result.stderr
  assert time.monotonic() - start < 60
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'tfds').exists()


@pytest.mark.parametrize('key,value', [
    ('model.dropout_rate', 1.5),
    ('ema_decay', 1.0),
    ('data.source_lang', 'fr'),
    ('batch_tokens', 16),  # smaller than data.max_length = 32
    ('num_train_steps', 0),
    ('optimizer.schedule', 'cosine'),
    ('model.num_heads', 3),  # d_model 32 is not divisible by 3
])
def test_invalid_values_raise_config_error_naming_the_key(corpus, tmp_path, key, value):
  config = make_config(corpus, **{key.replace('.', '__'): value})
  name = key.split('.')[-1]
  with pytest.raises(config_lib.ConfigError, match=name):
    config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match=name):  # before anything is written
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_cooldown_longer_than_training_is_only_an_error_for_the_cooldown_schedule(corpus):
  config = make_config(corpus, num_train_steps=5, optimizer__cooldown_steps=10)
  config_lib.validate(config)  # 'rsqrt' ignores cooldown_steps
  config.optimizer.schedule = 'rsqrt_cooldown'
  with pytest.raises(config_lib.ConfigError, match='cooldown_steps'):
    config_lib.validate(config)


def test_resuming_with_a_different_model_is_refused(straight_run, corpus, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_run[0], workdir)
  WorkDir(str(workdir)).write_or_check_config(make_config(corpus, num_train_steps=99))
  with pytest.raises(config_lib.ConfigError, match=r"\['model\.d_model'\]"):
    train(corpus, workdir, model__d_model=64)


def _paper_base_config():
  """The paper's base model and schedule (Table 3) over the default config's data, with a
  joint 32k vocabulary and rows of 256 tokens. (WMT14 configs come with its dataset.)"""
  config = configs.get_config('multi30k')
  config.batch_tokens, config.num_train_steps = 25_600, 100_000
  config.data.vocab_size, config.data.max_length = 32_000, 256
  config.eval.max_decode_length = 256
  model = config.model
  model.d_model, model.num_heads, model.d_ff, model.dropout_rate = 512, 8, 2048, 0.1
  model.num_encoder_layers = model.num_decoder_layers = 6
  config.optimizer.schedule, config.optimizer.warmup_steps = 'rsqrt', 4000
  config.optimizer.learning_rate_scale, config.optimizer.cooldown_steps = 1.0, 0
  return config


def test_the_papers_base_model_builds_and_its_step_traces():
  """The base model validates, has the paper's parameter count, and its train step traces."""
  from transformer_jax.training.train_step import make_optimizer, train_step

  config = _paper_base_config()
  config_lib.validate(config)
  vocab_size, d, f, layers = config.data.vocab_size, 512, 2048, 6
  tx, schedule = make_optimizer(config.optimizer, d_model=d, total_steps=config.num_train_steps)
  graphdef, abstract = config_lib.abstract_model(config, vocab_size)
  state = jax.eval_shape(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                              opt_state=tx.init(p)), abstract)
  shapes = [x.shape for x in jax.tree.leaves(abstract)]
  encoder_layer = 4 * d * d + 2 * d * f + f + d + 2 * 2 * d  # attention, FFN, 2 LayerNorms
  decoder_layer = 8 * d * d + 2 * d * f + f + d + 3 * 2 * d  # + cross-attention, 3rd LayerNorm
  expected = vocab_size * d + layers * (encoder_layer + decoder_layer)
  assert sum(int(np.prod(s)) for s in shapes) == expected  # ~60.5M with a shared 32k vocab
  assert (vocab_size, d) in shapes
  rows, length = config.batch_tokens // config.data.max_length, config.data.max_length
  batch = {k: jax.ShapeDtypeStruct((rows, length), jnp.int32) for k in (
      'inputs', 'inputs_segmentation', 'inputs_position', 'decoder_inputs', 'targets',
      'targets_segmentation', 'targets_position')}
  new_state, metrics = jax.eval_shape(
      lambda s, b: train_step(s, b, jax.random.key(0), graphdef=graphdef, tx=tx,
                              schedule=schedule, label_smoothing=config.label_smoothing),
      state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert metrics['loss_sum'].shape == () and metrics['loss_sum'].dtype == jnp.float32
  assert float(schedule(config.optimizer.warmup_steps - 1)) == pytest.approx(
      (d * config.optimizer.warmup_steps) ** -0.5)
