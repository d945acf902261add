"""The paper's big model on WMT14 English→German (Vaswani et al. 2017, Table 3 "big").

    WMT14_DIR=~/wmt14 python train.py --config wmt14_en_de_big --workdir runs/wmt14_big

As wmt14_en_de_base (data, vocabulary, batch, schedule shape, evaluation), with the big model:
d_model 1024, 16 heads, d_ff 4096, dropout 0.3 (the paper's en→de big), 300k steps. The
paper reports 28.4 tokenised BLEU on newstest2014.
"""
from transformer_jax.configs import wmt14_en_de_base


def get_config():
  config = wmt14_en_de_base.get_config()
  config.num_train_steps = 300_000
  model = config.model
  model.d_model, model.num_heads, model.d_ff = 1024, 16, 4096
  model.dropout_rate = 0.3
  return config
