# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Self-attention, step by step
#
# One attention layer of the Transformer ("Attention Is All You Need", Vaswani et al. 2017), built
# up on a three-word sentence: each step written out in NumPy and, where the library has it,
# done again with its pure functions (`transformer_jax.nn.positions`, `.attention`, `.masks`). At
# the end the library's `SelfAttention` module, whose weights we use throughout, must give
# the same numbers.
#
# Tensor names carry their shape: T query positions, S key positions, D model width, H heads,
# K per-head width (D = H·K), B batch.

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
import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from transformer_jax.nn import attention, masks, positions
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.attention_layers import CrossAttention, SelfAttention
from transformer_jax.nn.layers import LayerNorm

jax.config.update('jax_default_matmul_precision', 'highest')  # exact float32 matmuls on TPU too
np.set_printoptions(precision=3, suppress=True)


def softmax(scores, axis=-1):
  """exp(s_i) / Σ_j exp(s_j); subtracting the max changes nothing but avoids overflow."""
  e = np.exp(scores - scores.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def table(a_RC, rows, cols):
  """Prints a small matrix with row and column labels."""
  print(' ' * 10 + ''.join(f'{c:>9}' for c in cols))
  for name, row in zip(rows, np.asarray(a_RC)):
    print(f'{name:>10}' + ''.join(f'{v:9.3f}' for v in row))


def heatmap(ax, a_YX, ylabels, xlabels, title, annotate=True, cmap='viridis'):
  """One heat map of values in [0, 1]: rows are queries (y), columns keys (x)."""
  a_YX = np.asarray(a_YX, np.float32)
  ax.imshow(a_YX, cmap=cmap, vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(xlabels)), xlabels)
  ax.set_yticks(range(len(ylabels)), ylabels)
  ax.set_title(title, fontsize=10)
  for (y, x), v in np.ndenumerate(a_YX if annotate else ()):
    ax.text(x, y, f'{v:.2f}', ha='center', va='center', fontsize=8, color='k' if v > 0.6 else 'w')


# %% [markdown]
# ## 1. Word embeddings
#
# Whitespace tokenisation into a toy vocabulary; each token id selects a row of the embedding
# matrix $E \in \mathbb{R}^{V \times d_\text{model}}$, multiplied by $\sqrt{d_\text{model}}$
# (§3.4). The library initialises $E \sim \mathcal{N}(0, 1/d_\text{model})$, so scaled embeddings
# have unit-variance entries, the same scale as the positional encodings added next.

# %%
D_MODEL, NUM_HEADS = 8, 2
vocab = {'<pad>': 0, "Let's": 1, 'go': 2, '!': 3, 'Allons-y': 4}
tokens = "Let's go !".split()
ids_T = np.array([vocab[w] for w in tokens])
rng = np.random.default_rng(0)
embedding_VD = rng.standard_normal((len(vocab), D_MODEL), np.float32) * D_MODEL ** -0.5
emb_TD = embedding_VD[ids_T] * D_MODEL ** 0.5
print('token ids:', ids_T)
table(emb_TD, tokens, [f'd{i}' for i in range(D_MODEL)])

# %% [markdown]
# ## 2. Sinusoidal positional encodings
#
# Attention by itself is blind to order, so position is added to the embedding (§3.5):
#
# $$PE_{(pos, 2i)} = \sin\!\left(pos / 10000^{2i/d_\text{model}}\right), \qquad
#   PE_{(pos, 2i+1)} = \cos\!\left(pos / 10000^{2i/d_\text{model}}\right).$$
#
# Each channel pair is a clock at its own frequency, from one turn every $2\pi$ positions down to
# one every $2\pi\cdot 10000$, so $PE_{pos+k}$ is a rotation (a linear function) of $PE_{pos}$.

# %%
pe_LD = np.asarray(positions.sinusoidal_table(64, 64))
fig, (ax_map, ax_curves) = plt.subplots(1, 2, figsize=(11, 3.2), layout='constrained')
ax_map.imshow(pe_LD.T, aspect='auto', cmap='RdBu', vmin=-1, vmax=1)
ax_map.set(xlabel='position', ylabel='channel', title='PE, 64 positions × 64 channels')
for channel in (0, 1, 6, 20, 40):
  ax_curves.plot(pe_LD[:, channel], label=f'channel {channel}')
ax_curves.set(xlabel='position', title='a few channels')
ax_curves.legend(fontsize=8, loc='lower left')
plt.show()

x_TD = emb_TD + np.asarray(positions.sinusoidal_table(len(tokens), D_MODEL))
print('x = embedding·√d + PE:')
table(x_TD, tokens, [f'd{i}' for i in range(D_MODEL)])

# %% [markdown]
# ## 3. Queries, keys and values
#
# Self-attention projects the *same* vectors three ways: $Q = XW^Q$, $K = XW^K$, $V = XW^V$.
# We take the projections from a freshly initialised library module: it stores them fused as one
# tensor `w_qkv_D3HK` of shape [D, 3, H, K] (axis 1: query, key, value), and the output
# projection as `w_o_HKD` [H, K, D].

# %%
cfg = TransformerConfig(vocab_size=len(vocab), d_model=D_MODEL, num_heads=NUM_HEADS,
                        attention_impl='xla')
mha = SelfAttention(cfg, rngs=nnx.Rngs(1))
w_qkv_D3HK, w_o_HKD = np.asarray(mha.w_qkv_D3HK[...]), np.asarray(mha.w_o_HKD[...])
print('w_qkv_D3HK', w_qkv_D3HK.shape, '  w_o_HKD', w_o_HKD.shape, '  d_k =', cfg.head_dim)

q_THK = np.einsum('td,dhk->thk', x_TD, w_qkv_D3HK[:, 0])
k_THK = np.einsum('td,dhk->thk', x_TD, w_qkv_D3HK[:, 1])
v_THK = np.einsum('td,dhk->thk', x_TD, w_qkv_D3HK[:, 2])
# First one head (head 0); step 6 runs all of them.
q_TK, k_SK, v_SK = q_THK[:, 0], k_THK[:, 0], v_THK[:, 0]
for name, a in (('q (head 0)', q_TK), ('k (head 0)', k_SK), ('v (head 0)', v_SK)):
  print(name)
  table(a, tokens, [f'k{i}' for i in range(cfg.head_dim)])

# %% [markdown]
# ## 4. Scores, and why they are scaled by $\sqrt{d_k}$
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right)V
#   \qquad\text{(eq. 1)}$$
#
# Entry $(t, s)$ of $QK^\top$ says how well query $t$ matches key $s$. If $q$ and $k$ have
# independent unit-variance components, $q\cdot k = \sum_{i=1}^{d_k} q_i k_i$ has variance $d_k$
# (footnote 4 of the paper): wider heads give larger scores, the softmax saturates onto one key,
# and its gradient $w(1-w)$ vanishes. Dividing by $\sqrt{d_k}$ restores unit variance.

# %%
scores_TS = q_TK @ k_SK.T
print('Q·Kᵀ (head 0):')
table(scores_TS, tokens, tokens)

rows, widths = [], (4, 16, 64, 256, 1024)
for d_k in widths:
  q_NK = rng.standard_normal((2000, 1, d_k), np.float32)
  k_NSK = rng.standard_normal((2000, 10, d_k), np.float32)  # 10 keys per query
  dots_NS = (q_NK * k_NSK).sum(-1)
  max_raw = softmax(dots_NS).max(-1).mean()
  max_scaled = softmax(dots_NS / np.sqrt(d_k)).max(-1).mean()
  rows.append((d_k, dots_NS.var(), (dots_NS / np.sqrt(d_k)).var(), max_raw, max_scaled))
print(f"{'d_k':>6} {'var(q·k)':>10} {'var(q·k/√d_k)':>14} {'max w, raw':>11} "
      f"{'max w, scaled':>14}")
for d_k, var_raw, var_scaled, max_raw, max_scaled in rows:
  print(f'{d_k:6d} {var_raw:10.1f} {var_scaled:14.2f} {max_raw:11.3f} {max_scaled:14.3f}')

fig, ax = plt.subplots(figsize=(5, 3), layout='constrained')
ax.semilogx(widths, [r[3] for r in rows], 'o-', label='softmax(q·k)')
ax.semilogx(widths, [r[4] for r in rows], 's-', label='softmax(q·k / √d_k)')
ax.axhline(0.1, color='grey', lw=0.8, ls=':')
ax.set(xlabel='d_k', ylabel='mean largest weight (10 keys)', ylim=(0, 1.05))
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Unscaled, the largest of ten weights heads for 1 as $d_k$ grows (a hard, gradient-starved
# argmax); scaled, it stays put, whatever the head width (the dotted line is uniform attention).
#
# ## 5. Softmax weights and the weighted sum of values
#
# Each row of weights is a probability distribution over the keys; the output for query $t$ is
# the average of the values under it: $z_t = \sum_s w_{ts} v_s$.

# %%
weights_TS = softmax(scores_TS / np.sqrt(cfg.head_dim))
np.testing.assert_allclose(weights_TS.sum(-1), 1.0, rtol=1e-6)
z_TK = weights_TS @ v_SK

fig, ax = plt.subplots(figsize=(3.2, 3.2), layout='constrained')
heatmap(ax, weights_TS, tokens, tokens, 'softmax(QKᵀ/√d_k), head 0')
ax.set(xlabel='key', ylabel='query')
plt.show()
print('rows sum to one:', weights_TS.sum(-1))
print('z = weights · V (head 0):')
table(z_TK, tokens, [f'k{i}' for i in range(cfg.head_dim)])

# The library's pure function (batch and head axes added) gives the same.
z_lib_TK = attention.dot_product_attention(q_TK[None, :, None], k_SK[None, :, None],
                                           v_SK[None, :, None])[0, :, 0]
np.testing.assert_allclose(z_lib_TK, z_TK, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ## 6. Several heads
#
# $$\mathrm{MultiHead}(Q, K, V) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\,W^O,
#   \qquad \mathrm{head}_i = \mathrm{Attention}(QW_i^Q, KW_i^K, VW_i^V).$$
#
# The $h$ projections $W_i^Q \in \mathbb{R}^{d_\text{model} \times d_k}$ side by side are one
# $d_\text{model} \times d_\text{model}$ matrix: project once, then `split_heads` cuts the width
# into $h$ slices of $d_k = d_\text{model}/h$; `merge_heads` concatenates them back before $W^O$.
# Each head attends on its own, in its own subspace.

# %%
W_q_DD, W_k_DD, W_v_DD = (w_qkv_D3HK[:, i].reshape(D_MODEL, D_MODEL) for i in range(3))
W_o_DD = w_o_HKD.reshape(D_MODEL, D_MODEL)
q_BTHK = attention.split_heads((x_TD @ W_q_DD)[None], NUM_HEADS)
k_BTHK = attention.split_heads((x_TD @ W_k_DD)[None], NUM_HEADS)
v_BTHK = attention.split_heads((x_TD @ W_v_DD)[None], NUM_HEADS)
np.testing.assert_allclose(q_BTHK[0], q_THK, rtol=1e-5, atol=1e-6)  # same as the per-head einsum

z_BTHK, weights_BHTS = attention.dot_product_attention(q_BTHK, k_BTHK, v_BTHK,
                                                       return_weights=True)
concat_BTD = attention.merge_heads(z_BTHK)
y_hand_TD = np.asarray(concat_BTD @ W_o_DD)[0]
print('split:', q_BTHK.shape, '-> per-head outputs', z_BTHK.shape, '-> merged', concat_BTD.shape,
      '-> ·W^O', y_hand_TD.shape)

fig, axes = plt.subplots(1, NUM_HEADS, figsize=(3.2 * NUM_HEADS, 3.2), layout='constrained')
for h, ax in enumerate(axes):
  heatmap(ax, weights_BHTS[0, h], tokens, tokens, f'head {h}')
plt.show()

# %% [markdown]
# ## 7. Masks
#
# A mask says which keys a query may see (True = may attend); masked scores are set to a huge
# negative number before the softmax, so they get exactly zero weight.
#
# * **Causal mask** (§3.2.3): in the decoder, position $t$ may only look at positions $\le t$, so
#   that training on a whole target sentence at once cannot peek at the words it must predict.
# * **Padding mask**: sentences of a batch are padded to one length; no one attends to `<pad>`.
#   A padding *query* row is fully masked and its output ignored by the loss.
#
# Both are [B, 1, T, S] booleans (the 1 broadcasts over heads); `combine_masks` ANDs them.

# %%
causal_11TT = masks.causal_mask(len(tokens))
batch = [tokens, ['go', '!', '<pad>']]
ids_BT = np.array([[vocab[w] for w in row] for row in batch])
padding_B1TT = masks.padding_mask(ids_BT, ids_BT, pad_id=vocab['<pad>'])
decoder_B1TT = masks.combine_masks(padding_B1TT, causal_11TT)

panels = [(causal_11TT[0, 0], tokens, 'causal'),
          (padding_B1TT[0, 0], batch[0], 'padding, sentence 1'),
          (padding_B1TT[1, 0], batch[1], 'padding, sentence 2'),
          (decoder_B1TT[1, 0], batch[1], 'causal ∧ padding, sentence 2')]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout='constrained')
for ax, (mask_TS, labels, title) in zip(axes, panels):
  heatmap(ax, mask_TS, labels, labels, title, annotate=False, cmap='Blues')
fig.suptitle('masks: blue = may attend (rows: queries, columns: keys)')
plt.show()

# Causal self-attention of our sentence: the upper triangle gets zero weight.
_, causal_weights_BHTS = attention.dot_product_attention(q_BTHK, k_BTHK, v_BTHK, causal_11TT,
                                                         return_weights=True)
assert np.all(np.asarray(causal_weights_BHTS)[0, :, ~np.asarray(causal_11TT[0, 0])] == 0.0)
fig, axes = plt.subplots(1, NUM_HEADS, figsize=(3.2 * NUM_HEADS, 3.2), layout='constrained')
for h, ax in enumerate(axes):
  heatmap(ax, causal_weights_BHTS[0, h], tokens, tokens, f'causal, head {h}')
plt.show()

# %% [markdown]
# ## 8. Cross-attention
#
# In each decoder layer a second attention takes its **queries from the decoder** (the target
# sentence so far) and its **keys and values from the encoder output** (the source sentence): row
# $t$ of the weights says which source words target position $t$ reads. Here the target is the
# French "Allons-y !" and, standing in for the encoder output, our embedded source `x_TD`; the
# projections are drawn at random like the module's. (The library's cross-attention module,
# `CrossAttention(cfg)`, stores $W^Q$ as `w_q_DHK` and the fused
# $W^K, W^V$ as `w_kv_D2HK`, so a decoder projects the encoder output once per sentence.)

# %%
target = ['Allons-y', '!']
y_in_TD = (embedding_VD[[vocab[w] for w in target]] * D_MODEL ** 0.5
           + np.asarray(positions.sinusoidal_table(len(target), D_MODEL)))
w_q_DHK, w_k_DHK, w_v_DHK = (
    rng.standard_normal((D_MODEL, NUM_HEADS, cfg.head_dim), np.float32) * D_MODEL ** -0.5
    for _ in range(3))
q_cross_BTHK = np.einsum('td,dhk->thk', y_in_TD, w_q_DHK)[None]  # from the decoder
k_cross_BSHK = np.einsum('sd,dhk->shk', x_TD, w_k_DHK)[None]     # from the encoder
v_cross_BSHK = np.einsum('sd,dhk->shk', x_TD, w_v_DHK)[None]
z_cross_BTHK, cross_weights_BHTS = attention.dot_product_attention(
    q_cross_BTHK, k_cross_BSHK, v_cross_BSHK, return_weights=True)
print('decoder queries', q_cross_BTHK.shape, ' encoder keys/values', k_cross_BSHK.shape,
      ' -> weights', cross_weights_BHTS.shape, '[B, H, target, source]')
hand_BHTS = softmax(np.einsum('bthk,bshk->bhts', q_cross_BTHK, k_cross_BSHK)
                    / np.sqrt(cfg.head_dim))
np.testing.assert_allclose(cross_weights_BHTS, hand_BHTS, rtol=1e-5, atol=1e-6)

fig, axes = plt.subplots(1, NUM_HEADS, figsize=(3.2 * NUM_HEADS, 2.6), layout='constrained')
for h, ax in enumerate(axes):
  heatmap(ax, cross_weights_BHTS[0, h], target, tokens, f'cross-attention, head {h}')
  ax.set(xlabel='source (keys)', ylabel='target (queries)')
plt.show()

# %% [markdown]
# The weights are untrained, so they show no alignment yet; after training (notebook 02) the rows
# of a cross-attention map follow the source words being translated.
#
# ## 9. Residual connection and layer normalisation
#
# Every sub-layer (attention, feed-forward) is wrapped as
# $$\mathrm{LayerNorm}(x + \mathrm{Sublayer}(x)) \qquad \text{(§5.4, "post-LN")},$$
# $$\mathrm{LayerNorm}(h) = \gamma \odot \frac{h - \mu(h)}{\sqrt{\sigma^2(h) + \epsilon}} + \beta,$$
# with mean and variance over the $d_\text{model}$ channels of each position. The residual path
# lets gradients and the input pass straight through a deep stack; the normalisation keeps every
# position's vector at zero mean and unit variance. (`TransformerConfig(pre_ln=True)` moves the
# LayerNorm in front of the sub-layer, $x + \mathrm{Sublayer}(\mathrm{LayerNorm}(x))$, which trains
# more stably without warm-up.)

# %%
h_TD = x_TD + y_hand_TD
norm = LayerNorm(cfg, rngs=nnx.Rngs(0))  # γ = 1, β = 0 at initialisation
out_TD = norm(h_TD[None])[0]
mean_T1, var_T1 = h_TD.mean(-1, keepdims=True), h_TD.var(-1, keepdims=True)
out_hand_TD = (h_TD - mean_T1) / np.sqrt(var_T1 + norm.eps) * norm.scale[...] + norm.bias[...]
np.testing.assert_allclose(out_TD, out_hand_TD, rtol=1e-5, atol=1e-5)
table(np.stack([h_TD.mean(-1), h_TD.std(-1), out_TD.mean(-1), out_TD.std(-1)], -1), tokens,
      ['mean x+y', 'std x+y', 'mean LN', 'std LN'])

# %% [markdown]
# ## 10. The library's `SelfAttention` gives the same numbers
#
# Everything above used the module's own weights; now we call the module itself, without and with
# the causal mask, and compare outputs and per-head weights with the hand computation.

# %%
y_BTD, module_weights_BHTS = mha(x_TD[None], None, return_weights=True)
np.testing.assert_allclose(y_BTD[0], y_hand_TD, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(module_weights_BHTS, weights_BHTS, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(module_weights_BHTS[0, 0], weights_TS, rtol=1e-5, atol=1e-6)

y_causal_BTD, module_causal_BHTS = mha(x_TD[None], causal_11TT, return_weights=True)
z_causal_BTHK = attention.dot_product_attention(q_BTHK, k_BTHK, v_BTHK, causal_11TT)
np.testing.assert_allclose(y_causal_BTD[0], (attention.merge_heads(z_causal_BTHK) @ W_o_DD)[0],
                           rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(module_causal_BHTS, causal_weights_BHTS, rtol=1e-5, atol=1e-6)
print('CHECK PASSED: SelfAttention reproduces the hand computation '
      '(outputs and per-head weights, with and without the causal mask).')
