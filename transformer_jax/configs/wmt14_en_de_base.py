"""The paper's base model on WMT14 English→German (Vaswani et al. 2017, Table 3 "base").

    bash scripts/get_wmt14.sh ~/wmt14              # on a machine with internet (~1.4 GB)
    WMT14_DIR=~/wmt14 python train.py --config wmt14_en_de_base --workdir runs/wmt14_base

What the paper did, and what this config does:
- 6+6 layers, d_model 512, 8 heads, d_ff 2048, dropout 0.1, label smoothing 0.1, post-LN.
- ~25k source + ~25k target tokens per batch: rows of 128 tokens, 200 rows = 25,600 token
  slots a side (packing leaves ~5 % padding). On 8 GPUs the paper's batch; on fewer devices
  the same global batch (JAX shards the rows over the mesh).
- Adam(0.9, 0.98, 1e-9), lr = d_model^-0.5 · min(step^-0.5, step · 4000^-1.5), 100k steps,
  no gradient clipping, no EMA.
- A 32k joint SentencePiece vocabulary (the paper: 37k shared BPE), trained on a seeded uniform
  sample of 500k training sentences (`data.input_sentence_size`: SentencePiece's peak memory is
  1.9 GB there, 3.6 GB at 1M; raise it where memory allows).
- Pairs with a side over 127 tokens, a length ratio over 3, an empty side, or an exact
  duplicate are dropped at preparation (counted in the log and in preparation.json).
- bfloat16 compute on accelerators (float32 on the CPU), float32 weights and Adam state.
- Evaluation: beam 4, α 0.6 (GNMT length penalty) on newstest2013; the average of the last 5
  checkpoints is evaluated at the end. Test: translate.py on newstest2014 (README).
Expected: the paper reports 27.3 tokenised BLEU on newstest2014 for base (28.4 big).
"""
import os

from transformer_jax.configs import multi30k

# The files scripts/get_wmt14.sh writes into $WMT14_DIR.
TRAIN_CORPORA = ('europarl-v7.de-en', 'commoncrawl.de-en', 'news-commentary-v9.de-en')
VALIDATION, TEST = 'newstest2013', 'newstest2014'


def wmt14_dir() -> str:
  return os.path.expanduser(os.environ.get('WMT14_DIR', 'wmt14'))


def _accelerator_dtype() -> str:
  import jax  # at config load: bfloat16 where the backend computes it fast
  return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'


def get_config():
  config = multi30k.get_config()
  root = wmt14_dir()
  config.num_train_steps = 100_000
  config.batch_tokens = 25_600
  config.label_smoothing = 0.1
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  config.keep_checkpoints = 5
  config.average_last_n = 5
  config.time_limit_minutes = 0.0
  config.ema_decay = 0.0

  data = config.data
  data.dataset = 'parallel_text'
  data.source_lang, data.target_lang = 'en', 'de'
  data.train_files = [(os.path.join(root, f'{c}.en'), os.path.join(root, f'{c}.de'))
                      for c in TRAIN_CORPORA]
  data.validation_files = [(os.path.join(root, f'{VALIDATION}.en'),
                            os.path.join(root, f'{VALIDATION}.de'))]
  data.validation_size = 0
  data.vocab_size = 32_000
  data.max_length = 128
  data.max_length_ratio = 3.0
  data.num_workers = -1  # one per spare core, up to 8 (none on a 2-core machine)

  model = config.model
  model.d_model, model.num_heads, model.d_ff = 512, 8, 2048
  model.num_encoder_layers = model.num_decoder_layers = 6
  model.dropout_rate = 0.1
  model.dtype = _accelerator_dtype()

  optimizer = config.optimizer
  optimizer.schedule = 'rsqrt'
  optimizer.warmup_steps = 4000
  optimizer.cooldown_steps = 0
  optimizer.learning_rate_scale = 1.0
  optimizer.grad_clip_norm = 0.0

  config.eval.batch_size = 64
  config.eval.beam_size = 4
  config.eval.alpha = 0.6
  config.eval.max_decode_length = 192
  return config
