# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train, translate, look: English → German on Multi30k
#
# Trains the library's Transformer on Multi30k (29k image captions), plots its curves, translates
# with greedy and beam search, scores validation BLEU with sacreBLEU, and draws cross-attention.
# Everything comes from `transformer_jax`; the notebook only calls it.
#
# Runs anywhere: on a GPU/TPU (e.g. Colab, *Runtime → Change runtime type*) it trains the
# default model of `transformer_jax.configs.multi30k` (4,500 steps); on a CPU a 1,200-step
# schedule (roughly half an hour on two cores, going by the default config's 90 minutes for 4,500
# steps).
# Re-running resumes the run in its work directory.

# %%
# transformer_jax as installed (a wheel, `pip install`), if it is; else installed from
# $TRANSFORMER_JAX_SOURCE when set: anything pip accepts, such as a `git+https://` URL of the
# repository or a wheel's path or URL (on Colab, a cell `%env TRANSFORMER_JAX_SOURCE=...` before
# this one); else from the checkout this notebook sits in (notebooks/ beside pyproject.toml:
# `pip install -e ..`). See notebooks/README.md.
# Nothing heavy is imported before pip runs, so a fresh install needs no restart; pip keeps the
# runtime's own (GPU/TPU) jax when it is recent enough, and installs a CPU one where there is none.
import importlib
import importlib.util
import os
import site
import subprocess
import sys

if importlib.util.find_spec('transformer_jax') is None:
  CHECKOUT = os.path.abspath('..')
  IN_CHECKOUT = (os.path.isfile(os.path.join(CHECKOUT, 'pyproject.toml'))
                 and os.path.isdir(os.path.join(CHECKOUT, 'transformer_jax')))
  SOURCE = os.environ.get('TRANSFORMER_JAX_SOURCE', '').strip()
  if not SOURCE and not IN_CHECKOUT:
    raise RuntimeError(
        'transformer_jax is not installed, and this notebook is not in a checkout of it (no '
        '../pyproject.toml). Set the environment variable TRANSFORMER_JAX_SOURCE to what pip '
        'should install it from (a git+https:// URL of the repository, or the path or URL of a '
        'wheel), e.g. in a cell `%env TRANSFORMER_JAX_SOURCE=...`, then run this cell again.')
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q',
                  *([SOURCE] if SOURCE else ['-e', CHECKOUT])], check=True)
  if not SOURCE:
    sys.path.insert(0, CHECKOUT)  # an editable install's .pth is only read at start-up
  importlib.invalidate_caches()
  if importlib.util.find_spec('transformer_jax') is None and site.ENABLE_USER_SITE:
    site.addsitedir(site.getusersitepackages())  # pip's --user fallback, new since start-up
  if importlib.util.find_spec('transformer_jax') is None:
    raise RuntimeError('transformer_jax was installed but this kernel cannot import it yet: '
                       'restart the kernel (Colab: Runtime > Restart session), run this cell again')
import transformer_jax  # noqa: E402

print(f'transformer_jax {transformer_jax.__version__} from '
      f'{os.path.dirname(transformer_jax.__file__)}')

# %%
import tempfile

import jax
import matplotlib.pyplot as plt

from transformer_jax.configs import multi30k, tiny
from transformer_jax import scoring
from transformer_jax.cli.logs import quiet_libraries
from transformer_jax.data import registry
from transformer_jax.decoding import attention_maps
from transformer_jax.training import metrics_writer
from transformer_jax.training.loop import train_and_evaluate
from transformer_jax.decoding.translator import Translator
from transformer_jax.host_memory import reuse_freed_host_memory

# On CPU the train step's ~1 GiB of scratch memory would be page-faulted in again every step;
# this keeps freed memory mapped (~15 % faster steps). It must run before jax's first computation.
reuse_freed_host_memory()
SMOKE = os.environ.get('TRANSFORMER_JAX_NOTEBOOK_SMOKE') == '1'  # set by tests/test_notebooks.py
BACKEND = jax.default_backend()
FIGURE_DIR = os.environ.get('TRANSFORMER_JAX_FIGURE_DIR', 'figures')
os.makedirs(FIGURE_DIR, exist_ok=True)


def save_figure(fig, name):
  """Shows `fig` here and keeps a PNG in FIGURE_DIR."""
  fig.savefig(os.path.join(FIGURE_DIR, f'{name}.png'), dpi=110, bbox_inches='tight')
  plt.show()


print(f'backend: {BACKEND}, devices: {jax.devices()}')

# %% [markdown]
# ## Configuration
#
# The default config (`transformer_jax.configs.multi30k`: d_model 256, 3+3 layers, 4 heads,
# dropout 0.3, joint 8k SentencePiece vocabulary, the paper's warm-up/rsqrt schedule with a linear
# cool-down) on an accelerator; a shorter schedule on a CPU. The tests run this notebook with the
# tiny config on a few hundred sentence pairs (`$MULTI30K_DIR` points at them) just to check that
# it runs.
# The raw data is read from `$MULTI30K_DIR` when set, else downloaded from GitHub.

# %%
WORKDIR = os.environ.get('TRANSFORMER_JAX_NOTEBOOK_WORKDIR') or (
    tempfile.mkdtemp(prefix='m30k_') if SMOKE
    # A checkout's runs/ (git-ignored) when run from one, else runs/ here.
    else os.path.abspath(os.path.join('..' if os.path.isfile('../pyproject.toml') else '.',
                                      'runs', f'notebook_m30k_{BACKEND}')))
if SMOKE:
  config = tiny.get_config()
  config.num_train_steps = 30
  config.eval_every_steps = config.checkpoint_every_steps = 30
  config.optimizer.cooldown_steps = 10
  config.data.data_dir = os.path.join(WORKDIR, 'tfds_data')  # never reuse a real prepared copy
  num_bleu_sentences = 40
elif BACKEND == 'cpu':
  config = multi30k.get_config()
  config.num_train_steps = 1200
  config.optimizer.warmup_steps = 400
  config.optimizer.cooldown_steps = 400
  config.eval_every_steps = config.checkpoint_every_steps = 600
  config.eval.num_bleu_sentences = 256  # BLEU during training on a subset: beam search is slow
  num_bleu_sentences = 500
else:
  config = multi30k.get_config()
  num_bleu_sentences = 0  # 0 = the whole validation split
print(f'work directory: {WORKDIR}')
print(f'{config.num_train_steps} steps of {config.batch_tokens} target tokens; model',
      dict(config.model))

# %% [markdown]
# ## Train
#
# `train_and_evaluate` prepares the data, trains the vocabulary, trains with evaluation
# (validation loss and beam-search BLEU) every `eval_every_steps`, and keeps checkpoints (the last
# few and the best by BLEU) in the work directory.

# %%
quiet_libraries()
summary = train_and_evaluate(config, WORKDIR)

# %% [markdown]
# ## Curves
#
# The training loss is the label-smoothed cross-entropy (ε = 0.1), averaged over the logging
# window; validation loss and BLEU come from the evaluations. Both read back from
# `<workdir>/metrics.jsonl`.

# %%
records = metrics_writer.read_metrics(WORKDIR)
train_log = [r for r in records if 'loss' in r]
eval_log = [r for r in records if 'eval_bleu' in r]
fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(11, 3.5), layout='constrained')
ax_loss.plot([r['step'] for r in train_log], [r['loss'] for r in train_log], label='train')
ax_loss.plot([r['step'] for r in eval_log], [r['eval_loss'] for r in eval_log], 'o-',
             label='validation')
ax_loss.set(xlabel='step', ylabel='label-smoothed loss', title='loss')
ax_loss.legend()
ax_bleu.plot([r['step'] for r in eval_log], [r['eval_bleu'] for r in eval_log], 'o-')
ax_bleu.set(xlabel='step', ylabel='BLEU', title='validation BLEU (beam search)')
save_figure(fig, 'training_curves')

# %% [markdown]
# ## Translate
#
# `Translator` restores the best checkpoint and its vocabulary. Greedy decoding takes the most
# likely next piece at every step; beam search keeps the `beam_size` best partial translations,
# ranked by $\log P(y \mid x) / ((5 + |y|)/6)^\alpha$ (the GNMT length penalty, α = 0.6).

# %%
translator = Translator(WORKDIR)
print('restored', translator.checkpoint_description)
src_lang, tgt_lang = config.data.source_lang, config.data.target_lang
validation = registry.load_splits(config.data, splits=('validation',))['validation']
pairs = [validation[i] for i in range(len(validation))]
examples = pairs[:4]
greedy = translator.translate([p[src_lang] for p in examples], beam_size=1)
beam = translator.translate([p[src_lang] for p in examples], beam_size=4)
for pair, g, b in zip(examples, greedy, beam):
  print(f'source     {pair[src_lang]}\nreference  {pair[tgt_lang]}\n'
        f'greedy     {g}\nbeam 4     {b}\n')

# %% [markdown]
# ## Validation BLEU
#
# Cased, detokenised sacreBLEU against the raw references (its signature says exactly how),
# plus lowercased BLEU and chrF.

# %%
scored = pairs[:num_bleu_sentences] if num_bleu_sentences else pairs
hypotheses = translator.translate([p[src_lang] for p in scored], beam_size=4)
report = scoring.bleu_report(hypotheses, [p[tgt_lang] for p in scored])
print(f"validation BLEU = {report['bleu']:.2f} on {len(scored)} sentences "
      f"(lowercased {report['bleu_lowercase']:.2f}, chrF {report['chrf']:.2f})")
print(report['bleu_signature'])

# %% [markdown]
# ## Cross-attention
#
# The decoder's cross-attention weights for one sentence and the model's own translation of it,
# teacher-forced: rows are the decoder inputs (`<s>` + target pieces; row $t$ predicts piece
# $t+1$), columns the source pieces (+ `</s>`), one panel per head of the last decoder layer.

# %%
shortest = min(range(len(examples)), key=lambda i: len(examples[i][src_lang]))
model = attention_maps.model_from_translator(translator)
maps = attention_maps.attention_maps(model, translator.vocab, examples[shortest][src_lang],
                                     beam[shortest])
fig = attention_maps.plot_attention(maps['cross'][-1], maps['target_tokens'],
                                    maps['source_tokens'],
                                    title=f'cross-attention, decoder layer {len(maps["cross"])}')
save_figure(fig, 'cross_attention')

# %% [markdown]
# In a trained model most heads of the last layer follow the source word being translated,
# giving a roughly diagonal map that bends where German reorders English (verbs move to the end,
# compounds like *Fahrrad* gather several source pieces); some heads park their weight on the
# final `.` or `</s>` when they have nothing to add. An untrained or barely trained model (the
# test's smoke run) attends almost uniformly.
