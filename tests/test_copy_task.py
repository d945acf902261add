"""A tiny Transformer learns to copy: the whole train-then-decode loop works.

Sources are 4-8 random symbols and EOS; the target is the source. Training
is teacher-forced cross-entropy over non-padding targets with Adam; evaluation
decodes greedily, one `decode_step` at a time, on held-out sequences.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn.masks import segments_from_tokens
from transformer_jax.nn.model import Transformer

PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL, VOCAB = 3, 16
MAX_LEN = 8  # symbols per sentence, not counting EOS
CFG = TransformerConfig(vocab_size=VOCAB, d_model=32, num_heads=2, d_ff=64,
                        num_encoder_layers=2, num_decoder_layers=2, max_length=16,
                        dropout_rate=0.0)
STEPS, BATCH, PEAK_LEARNING_RATE = 400, 64, 5e-3


def make_batch(rng: np.random.Generator, batch: int):
  """(source, decoder inputs, targets), each [B, MAX_LEN + 1]; targets == source.

  Source and target are 4..MAX_LEN symbols, then EOS, then padding (as in
  translation, the source ends in EOS too).
  """
  lengths = rng.integers(4, MAX_LEN + 1, size=batch)
  symbols = rng.integers(FIRST_SYMBOL, VOCAB, size=(batch, MAX_LEN + 1))
  slot = np.arange(MAX_LEN + 1)[None, :]
  source = np.where(slot < lengths[:, None], symbols, PAD)
  source[np.arange(batch), lengths] = EOS
  decoder_inputs = np.concatenate([np.full((batch, 1), BOS), source[:, :-1]], axis=1)
  return source, decoder_inputs, source


def cross_entropy(logits_BTV, targets_BT):
  """Mean -log p(target) over non-padding targets."""
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits_BTV), targets_BT[..., None], -1)[..., 0]
  real = targets_BT != PAD
  return -(log_p * real).sum() / real.sum()


def greedy_decode(graphdef, params, source_BS):
  """Argmax decoding through the cache, MAX_LEN + 1 steps: tokens [B, MAX_LEN + 1]."""
  @jax.jit
  def start(params, source_BS):
    model = nnx.merge(graphdef, params)
    segments_BS = segments_from_tokens(source_BS, PAD)
    return model.init_cache(model.encode(source_BS, segments_BS), segments_BS, MAX_LEN + 1)

  @jax.jit
  def decode_one(params, tokens_B, step, cache):
    return nnx.merge(graphdef, params).decode_step(tokens_B, step, cache)

  cache = start(params, source_BS)
  tokens_B = jnp.full((source_BS.shape[0],), BOS)
  outputs = []
  for step in range(MAX_LEN + 1):
    logits_BV, cache = decode_one(params, tokens_B, jnp.int32(step), cache)
    tokens_B = logits_BV.argmax(-1)
    outputs.append(tokens_B)
  return jnp.stack(outputs, axis=1)


def test_tiny_transformer_learns_to_copy():
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
  # Warm-up then cosine decay: constant-rate Adam on post-LN spikes now and then.
  optimizer = optax.adam(optax.warmup_cosine_decay_schedule(
      0.0, PEAK_LEARNING_RATE, warmup_steps=40, decay_steps=STEPS, end_value=1e-4))

  @jax.jit
  def train_step(params, opt_state, source, decoder_inputs, targets):
    def loss_fn(params):
      return cross_entropy(nnx.merge(graphdef, params)(source, decoder_inputs), targets)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(STEPS):
    params, opt_state, loss = train_step(params, opt_state, *make_batch(rng, BATCH))
    losses.append(loss)
  losses = np.asarray(losses)
  assert losses[:10].mean() > 2.0  # log(13) ~ 2.6 at the start
  assert losses[-10:].mean() < 0.02, losses[-10:]

  source, _, targets = make_batch(np.random.default_rng(12345), 128)  # held out
  decoded = np.asarray(greedy_decode(graphdef, params, source))
  # Every symbol and the EOS after them; what follows EOS is not looked at.
  np.testing.assert_array_equal(np.where(targets != PAD, decoded, PAD), targets)
