"""Properties of the encoder-decoder Transformer a user relies on.

One tiny configuration (and its pre-LN twin) serves every test so that XLA
compiles each program once; pure calls go through `nnx.split` / `nnx.merge`.
"""
import dataclasses
import functools
import math
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer_jax.nn import model as model_lib
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.masks import segments_from_tokens
from transformer_jax.nn.model import Transformer

# Parameter shapes match tests/test_copy_task.py, so one process initialises them once.
CFG = TransformerConfig(vocab_size=16, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=2,
                        num_decoder_layers=2, max_length=32, dropout_rate=0.1,
                        attention_dropout_rate=0.1, relu_dropout_rate=0.1)
BOS = 1  # any id but pad_id: a decoder input equal to pad_id counts as padding
# Row 1 of the source and of the decoder inputs ends in padding.
SRC_BS = jnp.array([[3, 7, 2, 9, 4, 11, 5], [6, 2, 8, 13, 0, 0, 0]])
DEC_IN_BT = jnp.array([[BOS, 4, 9, 3, 12], [BOS, 5, 14, 0, 0]])
DEC_OUT_BT = jnp.array([[4, 9, 3, 12, 2], [5, 14, 2, 0, 0]])
DEC_FULL_BT = jnp.array([[BOS, 4, 9, 3, 12], [BOS, 5, 14, 2, 7]])  # no padding
# Every eager call uses these [2, 7] x [2, 5] shapes: eager ops compile once per shape.


@functools.cache
def _model(**overrides) -> Transformer:
  """Shared, never mutated: seed 0 and CFG with `overrides`."""
  return Transformer(dataclasses.replace(CFG, **overrides), rngs=nnx.Rngs(0))


@functools.cache
def _pure(**overrides):
  """(apply, state) with apply(state, *args, **kwargs) == _model(**overrides)(*args, **kwargs).

  Always the same `apply` object, so every jax.jit of it (here or in a chex
  variant) shares one compilation per argument structure.
  """
  graphdef, state = nnx.split(_model(**overrides))

  def apply(state, *args, **kwargs):
    return nnx.merge(graphdef, state)(*args, **kwargs)
  return apply, state


def _jit_forward(**overrides):
  apply, state = _pure(**overrides)
  return functools.partial(jax.jit(apply), state)


def _params(model):
  return nnx.state(model, nnx.Param)


def _random_tokens(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).integers(2, CFG.vocab_size, size=shape))


class TransformerVariantsTest(chex.TestCase):
  """The same properties jitted and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_output_at_t_ignores_decoder_inputs_after_t(self):
    apply, state = _pure()
    forward = self.variant(apply)
    base = forward(state, SRC_BS, DEC_FULL_BT)
    length = DEC_FULL_BT.shape[1]
    for t in range(length - 1):
      future = _random_tokens(t, (2, length - t - 1))
      changed = forward(state, SRC_BS, DEC_FULL_BT.at[:, t + 1:].set(future))
      # Masked scores become finfo.min and their weights exactly 0: bitwise equal.
      np.testing.assert_array_equal(changed[:, :t + 1], base[:, :t + 1])
      assert not np.allclose(changed[:, t + 1:], base[:, t + 1:])

  @chex.variants(with_jit=True, without_jit=True)
  def test_tokens_in_padding_slots_change_nothing(self):
    apply, state = _pure()
    forward = self.variant(apply)
    real_BT = np.asarray(DEC_IN_BT != CFG.pad_id)
    base = forward(state, SRC_BS, DEC_IN_BT)

    # Garbage token ids in the padded slots, which the segmentation marks as padding.
    src_seg, tgt_seg = segments_from_tokens(SRC_BS), segments_from_tokens(DEC_IN_BT)
    noisy_src = jnp.where(src_seg == 0, _random_tokens(1, SRC_BS.shape), SRC_BS)
    noisy_dec = jnp.where(tgt_seg == 0, _random_tokens(2, DEC_IN_BT.shape), DEC_IN_BT)
    positions = lambda x: jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape)
    # Positions too, so that this call has the packing test's argument structure.
    noisy = forward(state, noisy_src, noisy_dec, inputs_segmentation=src_seg,
                    targets_segmentation=tgt_seg, inputs_position=positions(SRC_BS),
                    targets_position=positions(DEC_IN_BT))
    np.testing.assert_allclose(noisy[real_BT], base[real_BT], atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_pairs_equal_pairs_run_alone(self):
    """Row 0 packs pair a then pair b, row 1 packs b then a; positions restart at 0."""
    apply, state = _pure()
    forward = self.variant(apply)
    a_src, a_dec = [3, 7, 2], [BOS, 4, 9]
    b_src, b_dec = [5, 8, 11, 6], [BOS, 6]
    packed = forward(
        state,
        jnp.array([a_src + b_src, b_src + a_src]),
        jnp.array([a_dec + b_dec, b_dec + a_dec]),
        inputs_segmentation=jnp.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 2, 2, 2]]),
        targets_segmentation=jnp.array([[1, 1, 1, 2, 2], [1, 1, 2, 2, 2]]),
        inputs_position=jnp.array([[0, 1, 2, 0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2]]),
        targets_position=jnp.array([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]))
    # Alone: one pair per row, right-padded (that padding changes nothing is tested apart).
    alone = forward(state, jnp.array([a_src + [0] * 4, b_src + [0] * 3]),
                    jnp.array([a_dec + [0] * 2, b_dec + [0] * 3]))
    alone_a, alone_b = alone[0, :3], alone[1, :2]
    np.testing.assert_allclose(packed[0, :3], alone_a, atol=1e-5)
    np.testing.assert_allclose(packed[0, 3:], alone_b, atol=1e-5)
    np.testing.assert_allclose(packed[1, :2], alone_b, atol=1e-5)
    np.testing.assert_allclose(packed[1, 2:], alone_a, atol=1e-5)


def test_extra_padding_columns_change_nothing():
  real_BT = np.asarray(DEC_IN_BT != CFG.pad_id)
  base = _jit_forward()(SRC_BS, DEC_IN_BT)
  wider = _jit_forward()(jnp.pad(SRC_BS, ((0, 0), (0, 3))), jnp.pad(DEC_IN_BT, ((0, 0), (0, 3))))
  np.testing.assert_allclose(wider[:, :DEC_IN_BT.shape[1]][real_BT], base[real_BT], atol=1e-5)


def test_decoder_gradient_after_t_is_exactly_zero():
  """d logits[b, t] / d (embedded decoder input)[b', s] == 0 unless b' == b and s <= t.

  The embedded decoder input gets an additive `delta_BTD` through the positional
  encoding, the one term `Transformer.embed` adds; the encoder is run first so
  only the decoder sees it.
  """
  model = _model()
  memory = model.encode(SRC_BS)
  src_seg = segments_from_tokens(SRC_BS)
  real_encoding = model_lib.sinusoidal_encoding

  def logits_of(delta_BTD):
    shifted = lambda positions, d_model, layout: (real_encoding(positions, d_model, layout)
                                                + delta_BTD)
    with mock.patch.object(model_lib, 'sinusoidal_encoding', shifted):
      return model.decode(memory, src_seg, DEC_FULL_BT)

  batch, length = DEC_FULL_BT.shape
  jac = jax.jit(jax.jacrev(logits_of))(jnp.zeros((batch, length, CFG.d_model)))
  assert jac.shape == (batch, length, CFG.vocab_size, batch, length, CFG.d_model)
  reach = np.abs(np.asarray(jac)).max(axis=(2, 5))  # [b, t, b', s]
  allowed = np.eye(batch, dtype=bool)[:, None, :, None] & np.tri(length, dtype=bool)[None, :, None]
  assert np.all(reach[~allowed] == 0.0)
  assert np.all(reach[allowed] > 0.0)


def test_encoder_is_permutation_equivariant_only_without_positions(monkeypatch):
  model = _model()
  src = jnp.array([[3, 7, 2, 9, 4, 11, 5], [6, 2, 8, 13, 10, 12, 15]])  # no padding
  perm = np.array([3, 0, 6, 4, 1, 5, 2])
  out = model.encode(src)
  assert not np.allclose(model.encode(src[:, perm]), out[:, perm], atol=1e-2)

  # model.py binds the name at import, so patch it there.
  monkeypatch.setattr(model_lib, 'sinusoidal_encoding',
                      lambda positions, d_model, layout: jnp.zeros((*positions.shape, d_model)))
  out = model.encode(src)
  np.testing.assert_allclose(model.encode(src[:, perm]), out[:, perm], atol=1e-5)


def test_jit_and_eager_agree():
  eager = _model()(SRC_BS, DEC_IN_BT)
  np.testing.assert_allclose(_jit_forward()(SRC_BS, DEC_IN_BT), eager, atol=1e-5)


def test_same_seed_same_parameters_different_seed_different():
  same = Transformer(CFG, rngs=nnx.Rngs(0))
  other = Transformer(CFG, rngs=nnx.Rngs(1))
  chex.assert_trees_all_equal(_params(same), _params(_model()))
  for (path, a), b in zip(jax.tree.leaves_with_path(_params(_model())),
                          jax.tree.leaves(_params(other))):
    name = jax.tree_util.keystr(path)
    if 'norm' in name or 'b1_F' in name or 'b2_D' in name:
      continue  # LayerNorm scale 1, bias 0 and FFN biases 0 whatever the seed
    assert not np.any(np.asarray(a) == np.asarray(b)), name


def test_bfloat16_compute_is_close_to_float32():
  """bf16 (8-bit mantissa) through 2+2 layers: relative L2 error under 2% (measured 0.5%)."""
  bf16 = _model(dtype='bfloat16')
  chex.assert_trees_all_equal(_params(bf16), _params(_model()))  # params stay float32
  chex.assert_trees_all_equal_dtypes(_params(bf16), _params(_model()))
  low = _jit_forward(dtype='bfloat16')(SRC_BS, DEC_IN_BT)
  high = _jit_forward()(SRC_BS, DEC_IN_BT)
  assert low.dtype == jnp.float32  # logits are cast up for the loss
  assert np.all(np.isfinite(low))
  rel = np.linalg.norm(low - high) / np.linalg.norm(high)
  assert 0 < rel < 0.02, rel


def test_pre_ln_and_post_ln_differ_and_pre_ln_has_final_norms():
  post, pre = _model(), _model(pre_ln=True)
  assert not hasattr(post, 'encoder_norm') and not hasattr(post, 'decoder_norm')
  assert isinstance(pre.encoder_norm, model_lib.LayerNorm)
  assert isinstance(pre.decoder_norm, model_lib.LayerNorm)
  count = lambda m: sum(x.size for x in jax.tree.leaves(_params(m)))
  assert count(pre) - count(post) == 2 * 2 * CFG.d_model  # two norms, scale and bias
  post_logits, pre_logits = post(SRC_BS, DEC_IN_BT), pre(SRC_BS, DEC_IN_BT)
  assert np.all(np.isfinite(pre_logits))
  assert not np.allclose(pre_logits, post_logits, atol=1e-2)


def test_dropout_depends_only_on_the_key():
  # 'rbg' keys: the model takes any key, and eager threefry would compile one kernel
  # per dropout shape, three times this test's CPU time.
  key = lambda seed: jax.random.key(seed, impl='rbg')
  model = _model()
  plain = model(SRC_BS, DEC_IN_BT)
  key0 = model(SRC_BS, DEC_IN_BT, dropout_rng=key(0))
  np.testing.assert_array_equal(model(SRC_BS, DEC_IN_BT, dropout_rng=key(0)), key0)
  assert not np.allclose(key0, plain, atol=1e-3)
  assert not np.allclose(model(SRC_BS, DEC_IN_BT, dropout_rng=key(1)), key0, atol=1e-3)
  np.testing.assert_array_equal(model(SRC_BS, DEC_IN_BT), plain)


def _loss(model):
  """Mean cross-entropy over non-padding targets."""
  logits = model(SRC_BS, DEC_IN_BT)
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), DEC_OUT_BT[..., None], axis=-1)[..., 0]
  real = DEC_OUT_BT != CFG.pad_id
  return -(log_p * real).sum() / real.sum()


def test_remat_gives_same_loss_and_gradients():
  results = []
  for remat in (False, True):  # one layer each side keeps the two compiles short
    model = _model(remat=remat, num_encoder_layers=1, num_decoder_layers=1)
    graphdef, state = nnx.split(model)
    loss = lambda params: _loss(nnx.merge(graphdef, params))
    assert ('remat' in str(jax.make_jaxpr(loss)(state))) == remat  # the remat2 primitive
    # Run once: XLA's -O0 halves the compile time and optimises nothing we compare.
    compiled = jax.jit(jax.value_and_grad(loss)).lower(state).compile(
        compiler_options={'xla_backend_optimization_level': 0})
    results.append(compiled(state))
  (loss_plain, grads_plain), (loss_remat, grads_remat) = results
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
  chex.assert_trees_all_close(grads_remat, grads_plain, rtol=1e-5, atol=1e-7)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads_plain))


def test_parameter_count_of_the_paper_base_model():
  """63,045,632 parameters: the paper's base model (Table 3 reports ~65M).

  - one embedding 37000·512 shared by source, target and the output softmax (tied);
  - per attention block W^Q, W^K, W^V, W^O, each 512·512, without biases;
  - per feed-forward block W1 512·2048 + b1 2048 + W2 2048·512 + b2 512;
  - per sub-layer one post-LN LayerNorm with scale and bias (2·512);
  - 6 encoder layers (self-attention, FFN) and 6 decoder layers (self-attention,
    cross-attention, FFN); post-LN has no final norms.
  nnx.eval_shape builds the parameters abstractly: no memory, no compute.
  """
  cfg = TransformerConfig(vocab_size=37000)
  assert (cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.num_encoder_layers,
          cfg.num_decoder_layers, cfg.pre_ln) == (512, 8, 2048, 6, 6, False)
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(_params(abstract)))
  d, f = 512, 2048
  attention, ffn, norm = 4 * d * d, d * f + f + f * d + d, 2 * d
  assert 6 * (attention + ffn + 2 * norm) + 6 * (2 * attention + ffn + 3 * norm) + 37000 * d \
      == 63_045_632
  assert count == 63_045_632


@pytest.mark.parametrize('pre_ln', [False, True], ids=['post_ln', 'pre_ln'])
def test_cached_decoding_equals_teacher_forcing(pre_ln):
  model = _model(pre_ln=pre_ln)
  full = model(SRC_BS, DEC_FULL_BT)
  graphdef, state = nnx.split(model)

  @jax.jit
  def decode_one(state, tokens_B, step, cache):
    return nnx.merge(graphdef, state).decode_step(tokens_B, step, cache)

  src_seg = segments_from_tokens(SRC_BS)
  length = DEC_FULL_BT.shape[1]
  cache = model.init_cache(model.encode(SRC_BS, src_seg), src_seg, length + 3)  # spare slots
  for t in range(length):
    logits_BV, cache = decode_one(state, DEC_FULL_BT[:, t], jnp.int32(t), cache)
    np.testing.assert_allclose(logits_BV, full[:, t], atol=1e-5, err_msg=f'step {t}')


def test_returned_attention_weights():
  logits, att = _model()(SRC_BS, DEC_FULL_BT, return_attention=True)
  np.testing.assert_array_equal(logits, _model()(SRC_BS, DEC_FULL_BT))
  assert set(att) == {'encoder_self', 'decoder_self', 'cross'}
  assert len(att['encoder_self']) == CFG.num_encoder_layers
  assert len(att['decoder_self']) == len(att['cross']) == CFG.num_decoder_layers
  (batch, src_len), tgt_len = SRC_BS.shape, DEC_FULL_BT.shape[1]
  src_pad_B11S = np.asarray(SRC_BS == CFG.pad_id)[:, None, None, :]
  for cross in att['cross']:
    cross = np.asarray(cross)
    assert cross.shape == (batch, CFG.num_heads, tgt_len, src_len)
    np.testing.assert_allclose(cross.sum(-1), 1.0, rtol=1e-6)
    assert np.all(cross[np.broadcast_to(src_pad_B11S, cross.shape)] == 0.0)
  for enc in att['encoder_self']:
    enc = np.asarray(enc)
    real_query = ~np.asarray(SRC_BS == CFG.pad_id)
    for b in range(batch):
      rows = enc[b][:, real_query[b]]  # [H, real queries, S]
      np.testing.assert_allclose(rows.sum(-1), 1.0, rtol=1e-6)
      assert np.all(rows[..., ~real_query[b]] == 0.0)
  future = ~np.tri(tgt_len, dtype=bool)
  for dec in att['decoder_self']:
    assert np.all(np.asarray(dec)[..., future] == 0.0)


_BAD_CONFIGS = [
    ('num_heads', dict(d_model=10, num_heads=3)),
    ('d_model', dict(d_model=7, num_heads=1)),  # odd: no sinusoidal encoding
    ('dropout_rate', dict(dropout_rate=1.5)),
    ('attention_dropout_rate', dict(attention_dropout_rate=-0.1)),
    ('dtype', dict(dtype='float8')),
    ('param_dtype', dict(param_dtype='int8')),
    ('attention_impl', dict(attention_impl='flash')),
    ('vocab_size', dict(vocab_size=0)),
    ('num_decoder_layers', dict(num_decoder_layers=-1)),
]


@pytest.mark.parametrize('field, overrides', _BAD_CONFIGS, ids=[f for f, _ in _BAD_CONFIGS])
def test_config_rejects_bad_values_naming_the_field(field, overrides):
  with pytest.raises(ValueError, match=rf'\b{field}\b'):  # 'dtype' does not match 'param_dtype'
    dataclasses.replace(CFG, **overrides)
