"""The seams a newcomer extends through: the dataset registry, config -> model, the work
directory's config check, and the decoder chosen from a run's eval section."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer_jax import Transformer, config_lib, configs
from transformer_jax.data import registry
from transformer_jax.decoding import decoder as decoder_lib
from transformer_jax.decoding.methods import DecodeResult
from transformer_jax.workdir import WorkDir


def _toy_dataset(name, pairs=None):
  def load_splits(data_config, splits):
    return {split: [{'fr': 'le chat .', 'cs': 'kočka .'}] * 4 for split in splits}
  return registry.DatasetSpec(name=name, load_splits=load_splits, language_pairs=pairs,
                              prepared_dir=lambda data_config: '/nonexistent')


def test_a_registered_dataset_is_validated_and_loaded_by_name():
  registry.register_dataset(_toy_dataset('toy_fr_cs', pairs=(('fr', 'cs'),)))
  config = configs.get_config('tiny')
  config.data.dataset, config.data.source_lang, config.data.target_lang = 'toy_fr_cs', 'fr', 'cs'
  config_lib.validate(config)
  splits = registry.load_splits(config.data)
  assert set(splits) == {'train', 'validation'} and splits['train'][0]['cs'] == 'kočka .'
  config.data.source_lang, config.data.target_lang = 'cs', 'fr'
  with pytest.raises(config_lib.ConfigError, match="language pair of dataset 'toy_fr_cs'.*fr→cs"):
    config_lib.validate(config)


def test_a_dataset_without_fixed_pairs_accepts_any_and_unknown_names_list_the_registered():
  registry.register_dataset(_toy_dataset('toy_any'))
  config = configs.get_config('tiny')
  config.data.dataset, config.data.source_lang, config.data.target_lang = 'toy_any', 'xx', 'yy'
  config_lib.validate(config)
  config.data.dataset = 'wmt14'
  with pytest.raises(config_lib.ConfigError, match=r"`data.dataset` = 'wmt14'.*'multi30k'"):
    config_lib.validate(config)
  assert 'multi30k' in registry.dataset_names()
  assert registry.get_dataset('multi30k').language_pairs == (('en', 'de'), ('de', 'en'))


def test_param_dtype_and_the_max_length_come_from_the_run_config():
  config = configs.get_config('tiny')
  config.model.param_dtype = 'bfloat16'
  config.eval.max_decode_length = 48
  model_cfg = config_lib.model_config(config, vocab_size=100)
  assert model_cfg.param_dtype == 'bfloat16' and model_cfg.max_length == 48
  assert config_lib.max_length(config) == 48
  _, abstract = config_lib.abstract_model(config, 100)
  assert {x.dtype for x in jax.tree.leaves(abstract)} == {jnp.dtype('bfloat16')}


def test_a_workdir_written_before_a_key_existed_resumes_when_the_key_has_its_default(tmp_path):
  config = configs.get_config('tiny')
  workdir = WorkDir(str(tmp_path / 'run'))
  workdir.write_or_check_config(config)
  os.makedirs(os.path.join(workdir.path, 'checkpoints', '4'))  # the config is frozen from here
  old = json.loads(open(workdir.config_path).read())
  del old['model']['param_dtype']  # as session-4 runs wrote it
  open(workdir.config_path, 'w').write(json.dumps(old))
  workdir.write_or_check_config(config)  # the default: the same model
  config.model.param_dtype = 'bfloat16'
  with pytest.raises(config_lib.ConfigError, match=r"different values of \['model\.param_dtype'\]"):
    workdir.write_or_check_config(config)


def test_the_eval_section_chooses_the_decoder_and_an_unknown_method_fails_early():
  config = configs.get_config('tiny')
  cfg = config_lib.model_config(config, vocab_size=50)
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  inputs = np.array([[5, 6, 7, 3], [8, 9, 3, 0]], np.int32)
  config.eval.beam_size, config.eval.max_decode_length = 1, 6
  greedy = decoder_lib.decoder_from_config(graphdef, config.eval)(params, inputs)
  direct = decoder_lib.make_decoder(graphdef, max_length=6, method='greedy')(params, inputs)
  assert isinstance(greedy, DecodeResult)
  np.testing.assert_array_equal(greedy.tokens_BL, direct.tokens_BL)
  config.eval.method = 'no_such_method'
  with pytest.raises(ValueError, match="unknown decoding method 'no_such_method'.*beam_search"):
    decoder_lib.decoder_from_config(graphdef, config.eval)
