"""Training throughput: one jitted forward + backward + Adam update on random tokens.

    python benchmarks/train_step.py [--preset S|B] [--steps N] [--warmup N] [--dtype float32]
                                    [--dropout 0.1] [--remat] [--compare-torch]
                                    [--compare-dtype bfloat16] [--system-malloc]

Presets (random tokens, every row one full sentence: segmentation 1, positions 0..L-1):
    S: vocab 8192, d_model 256, 4 heads, d_ff 1024, 3+3 layers, batch 128 x (32 src, 32 tgt)
    B: vocab 8192, d_model 512, 8 heads, d_ff 2048, 6+6 layers, batch  64 x (32 src, 32 tgt)
    M30K: configs/multi30k.py's model and packed rows: vocab 8000, S's model, 64 x (64, 64)

The step is the project's own `train_step` (label smoothing 0.1) with `make_optimizer`
(Adam 0.9/0.98/1e-9, the paper's rsqrt schedule), jitted with the state donated as in
trainer.py.

FLOPs. Matmul FLOPs only (one multiply-add = 2 FLOPs; gathers, softmax, layer norm, dropout,
the loss and the optimizer count 0). With B batch, S source and T target length, D d_model,
F d_ff, V vocab, N_e / N_d layers (heads do not matter: H·K = D):
    encoder layer   2·B·S·(3D² + D² + 2·D·F)            q/k/v + output projection + FFN
                  + 4·B·S²·D                             Q·Kᵀ scores + weights·V
    decoder layer   2·B·T·(3D² + D² + 2·D·F)            self-attention projections + FFN
                  + 4·B·T²·D                             causal self-attention (full T², not T²/2)
                  + 2·B·T·2D² + 2·B·S·2D²                cross-attention q, out / k, v projections
                  + 4·B·T·S·D                            cross-attention scores + weights·V
    output          2·B·T·D·V                            logits, tied to the embedding
    forward = N_e·encoder + N_d·decoder + output;  train step = 3 × forward
(the backward pass costs two matmuls per forward matmul: the input and the weight gradient).
`gflops` is that count over the median step time; `peak_fraction` divides it by the GFLOP/s
of a float32 2048³ jnp.dot timed in the same process, interleaved with the steps (matmul,
step[, torch step], matmul, ...), so that load from other processes hits both alike. All
times are medians over --steps rounds (three matmuls per round); `peak_fraction_vs_best`
uses the fastest matmul instead, a bound that load cannot inflate. `compile_s` is the compile
time: `jit(step).lower(...).compile()`, i.e. tracing, lowering to HLO and XLA compilation;
`first_call_s` adds the first execution (what a user waits for before step 1 is done).

--compare-torch runs torch.nn.Transformer (eager, batch_first, post-LN, same shapes) with an
embedding scaled by √D plus sinusoidal positions, the tied output projection, label-smoothed
cross-entropy and torch.optim.Adam(0.9, 0.98, 1e-9), with the same dropout rates on the same
sites; it adds `torch_tokens_per_s` and `speedup_vs_torch`. (nn.Transformer also normalises
the encoder and decoder outputs once more: two extra LayerNorms in its favour of nothing.)

--compare-dtype D builds a second step whose compute dtype is D (params stay float32) and times
it in the same rounds; `compare_speedup` is the median over rounds of (our step / D's step).

XLA flags are read when jax starts: set XLA_FLAGS in the environment before running.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from flax import nnx  # noqa: E402

from transformer_jax.host_memory import reuse_freed_host_memory  # noqa: E402
from transformer_jax.nn.config import TransformerConfig  # noqa: E402
from transformer_jax.nn.model import Transformer  # noqa: E402
from transformer_jax.training.train_step import init_train_state, make_optimizer, train_step  # noqa: E402

PRESETS = {
    'S': dict(vocab_size=8192, d_model=256, num_heads=4, d_ff=1024, num_layers=3, batch=128,
              src_len=32, tgt_len=32),
    'B': dict(vocab_size=8192, d_model=512, num_heads=8, d_ff=2048, num_layers=6, batch=64,
              src_len=32, tgt_len=32),
    # configs/multi30k.py's shapes (run with --dropout 0.3): the figure train.py's
    # target_tokens_per_s is compared with, after its padding is taken out.
    'M30K': dict(vocab_size=8000, d_model=256, num_heads=4, d_ff=1024, num_layers=3, batch=64,
                 src_len=64, tgt_len=64),
}
LABEL_SMOOTHING = 0.1
PEAK_N = 2048
MATMULS_PER_ROUND = 3  # a 2048³ matmul is ~0.2 s: more samples of the peak, little time


def optimizer_config() -> ml_collections.ConfigDict:
  """The paper's Adam and schedule, in the shape of configs/multi30k.py's `optimizer`."""
  return ml_collections.ConfigDict(dict(
      schedule='rsqrt', learning_rate_scale=1.0, warmup_steps=4000, cooldown_steps=0,
      b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip_norm=0.0))


def train_flops(p) -> float:
  """Matmul FLOPs of one train step (3 × forward); the formula is in the module docstring."""
  b, s, t, d, f, v, n = (p['batch'], p['src_len'], p['tgt_len'], p['d_model'], p['d_ff'],
                         p['vocab_size'], p['num_layers'])
  encoder = 2 * b * s * (4 * d * d + 2 * d * f) + 4 * b * s * s * d
  decoder = (2 * b * t * (4 * d * d + 2 * d * f) + 4 * b * t * t * d
             + 2 * b * t * 2 * d * d + 2 * b * s * 2 * d * d + 4 * b * t * s * d)
  output = 2 * b * t * d * v
  return 3.0 * (n * encoder + n * decoder + output)


def random_batch(p, seed: int = 0):
  """A packed-format batch of random tokens (ids ≥ 1: 0 is padding), one sentence per row."""
  k_src, k_tgt = jax.random.split(jax.random.key(seed))
  b, s, t, v = p['batch'], p['src_len'], p['tgt_len'], p['vocab_size']
  inputs = jax.random.randint(k_src, (b, s), 1, v, jnp.int32)
  targets = jax.random.randint(k_tgt, (b, t), 1, v, jnp.int32)
  decoder_inputs = jnp.concatenate([jnp.ones((b, 1), jnp.int32), targets[:, :-1]], axis=1)
  return {
      'inputs': inputs, 'inputs_segmentation': jnp.ones((b, s), jnp.int32),
      'inputs_position': jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s)),
      'decoder_inputs': decoder_inputs, 'targets': targets,
      'targets_segmentation': jnp.ones((b, t), jnp.int32),
      'targets_position': jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
  }


def model_config(p, *, dtype: str = 'float32', dropout: float = 0.1,
                 attention_dropout: float = 0.0, relu_dropout: float = 0.0,
                 remat: bool = False) -> TransformerConfig:
  """The TransformerConfig of preset `p` (one of PRESETS' values)."""
  return TransformerConfig(
      vocab_size=p['vocab_size'], d_model=p['d_model'], num_heads=p['num_heads'],
      d_ff=p['d_ff'], num_encoder_layers=p['num_layers'], num_decoder_layers=p['num_layers'],
      dropout_rate=dropout, attention_dropout_rate=attention_dropout,
      relu_dropout_rate=relu_dropout, max_length=64, dtype=dtype, remat=remat)


def make_jax_step(cfg: TransformerConfig, batch):
  """(run, lower_compile_s, compiled): run() does one update and waits for it; the state
  lives in the closure (donated). lower_compile_s: tracing + lowering + XLA compilation;
  compiled: the executable (its HLO is what profile_step.py reads)."""
  tx, schedule = make_optimizer(optimizer_config(), d_model=cfg.d_model, total_steps=100_000)
  graphdef, state = init_train_state(Transformer(cfg, rngs=nnx.Rngs(0)), tx)
  step_fn = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                      label_smoothing=LABEL_SMOOTHING), donate_argnums=0)
  dropout_key = jax.random.key(1)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch, dropout_key).compile()
  lower_compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch, dropout_key)
    jax.block_until_ready((holder[0], metrics))
    return metrics
  return run, lower_compile_s, compiled


def make_peak_matmul():
  a = jax.random.normal(jax.random.key(2), (PEAK_N, PEAK_N), jnp.float32)
  b = jax.random.normal(jax.random.key(3), (PEAK_N, PEAK_N), jnp.float32)
  matmul = jax.jit(jnp.dot)
  jax.block_until_ready(matmul(a, b))
  return lambda: jax.block_until_ready(matmul(a, b))


def make_torch_step(p, rates, batch):
  """Eager torch.nn.Transformer train step with the same shapes, dropout, loss and Adam."""
  import numpy as np
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  d, v = p['d_model'], p['vocab_size']
  core = torch.nn.Transformer(d_model=d, nhead=p['num_heads'], num_encoder_layers=p['num_layers'],
                              num_decoder_layers=p['num_layers'], dim_feedforward=p['d_ff'],
                              dropout=rates['dropout'], batch_first=True)
  for layer in list(core.encoder.layers) + list(core.decoder.layers):
    layer.dropout.p = rates['relu']  # inside the FFN; dropout1/2(/3) are the residual sites
    for attn in (getattr(layer, 'self_attn', None), getattr(layer, 'multihead_attn', None)):
      if attn is not None:
        attn.dropout = rates['attention']
  embedding = torch.nn.Embedding(v, d)
  torch.nn.init.normal_(embedding.weight, std=d ** -0.5)
  params = list(core.parameters()) + list(embedding.parameters())
  opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
  pos = torch.arange(max(p['src_len'], p['tgt_len']), dtype=torch.float32)[:, None]
  inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
  pe = torch.stack([torch.sin(pos * inv_freq), torch.cos(pos * inv_freq)], -1).reshape(-1, d)
  src, dec_in, tgt = (torch.from_numpy(np.asarray(batch[k]).astype(np.int64))
                      for k in ('inputs', 'decoder_inputs', 'targets'))
  causal = torch.nn.Transformer.generate_square_subsequent_mask(p['tgt_len'])
  core.train()

  def embed(tokens):
    x = embedding(tokens) * d ** 0.5 + pe[:tokens.shape[1]]
    return F.dropout(x, rates['dropout'], training=True)

  def run():
    opt.zero_grad(set_to_none=True)
    y = core(embed(src), embed(dec_in), tgt_mask=causal, tgt_is_causal=True)
    logits = F.linear(y, embedding.weight)
    loss = F.cross_entropy(logits.reshape(-1, v), tgt.reshape(-1),
                           label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    opt.step()
    return loss
  return run, torch.get_num_threads()


def timed(fn) -> float:
  """Wall seconds of one call of `fn`, which must block until its result is ready."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='S')
  parser.add_argument('--steps', type=int, default=10, help='timed rounds (medians)')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='float32')
  parser.add_argument('--dropout', type=float, default=0.1, help='embeddings, residual sites')
  parser.add_argument('--attention-dropout', type=float, default=0.0)
  parser.add_argument('--relu-dropout', type=float, default=0.0)
  parser.add_argument('--remat', action='store_true', help='TransformerConfig.remat')
  parser.add_argument('--compare-torch', action='store_true')
  parser.add_argument('--compare-dtype', choices=('float32', 'bfloat16', 'float16'),
                      help='also time a step with this compute dtype, interleaved in this process')
  parser.add_argument('--system-malloc', action='store_true',
                      help="leave glibc's defaults: freed step buffers go back to the kernel "
                      '(the train CLI keeps them: transformer_jax/host_memory.py)')
  args = parser.parse_args(argv)
  # Before the first computation starts jax's backend, as train.py does.
  host_memory_reused = False if args.system_malloc else reuse_freed_host_memory()

  p = PRESETS[args.preset]
  load_at_start = os.getloadavg()[0]

  def config_with(dtype: str) -> TransformerConfig:
    return model_config(p, dtype=dtype, dropout=args.dropout,
                        attention_dropout=args.attention_dropout,
                        relu_dropout=args.relu_dropout, remat=args.remat)

  batch = random_batch(p)
  jax_step, lower_compile_s, _ = make_jax_step(config_with(args.dtype), batch)
  first_call_s = lower_compile_s + timed(jax_step)  # compilation + the first execution
  for _ in range(args.warmup):
    jax_step()
  other_step = None
  if args.compare_dtype:
    other_step, _, _ = make_jax_step(config_with(args.compare_dtype), batch)
    for _ in range(args.warmup + 1):
      other_step()
  peak_rss_mb = _rss_mb()
  matmul = make_peak_matmul()

  torch_step, torch_threads = None, None
  if args.compare_torch:
    try:
      torch_step, torch_threads = make_torch_step(
          p, {'dropout': args.dropout, 'attention': args.attention_dropout,
              'relu': args.relu_dropout}, batch)
    except ImportError:
      print('torch is not installed: --compare-torch skipped')
    else:
      for _ in range(max(args.warmup, 1)):
        torch_step()

  matmul_s, step_s, torch_s, other_s, faults = [], [], [], [], []
  for _ in range(args.steps):
    matmul_s.extend(timed(matmul) for _ in range(MATMULS_PER_ROUND))
    faults_before = _minor_faults()
    step_s.append(timed(jax_step))
    faults.append(_minor_faults() - faults_before)
    if other_step is not None:
      other_s.append(timed(other_step))
    if torch_step is not None:
      torch_s.append(timed(torch_step))
  matmul_s.extend(timed(matmul) for _ in range(MATMULS_PER_ROUND))

  step = statistics.median(step_s)
  peak_gflops = 2 * PEAK_N ** 3 / statistics.median(matmul_s) / 1e9
  best_gflops = 2 * PEAK_N ** 3 / min(matmul_s) / 1e9
  gflops = train_flops(p) / step / 1e9
  tokens = p['batch'] * p['tgt_len']
  print(f'jax step s: {[round(x, 4) for x in step_s]}')
  print(f'matmul s:   {[round(x, 3) for x in matmul_s]}')
  result = {
      'preset': args.preset, 'tokens_per_s': round(tokens / step, 1),
      'step_ms': round(1e3 * step, 2), 'gflops': round(gflops, 2),
      'peak_gflops': round(peak_gflops, 2), 'peak_fraction': round(gflops / peak_gflops, 4),
      # The fastest matmul: a load-robust (conservative) peak, as contention slows the
      # two-thread matmul by up to 2x in bursts that a median of few rounds may catch.
      'peak_gflops_best': round(best_gflops, 2),
      'peak_fraction_vs_best': round(gflops / best_gflops, 4),
      'train_gflop_per_step': round(train_flops(p) / 1e9, 3),
      'compile_s': round(lower_compile_s, 2), 'first_call_s': round(first_call_s, 2),
      'peak_rss_mb': round(peak_rss_mb, 1), 'dtype': args.dtype, 'remat': args.remat,
      'dropout': args.dropout, 'attention_dropout': args.attention_dropout,
      'relu_dropout': args.relu_dropout, 'steps': args.steps,
      'backend': jax.default_backend(), 'devices': jax.device_count(),
      'cpu_count': os.cpu_count(), 'load_avg_1m_start': round(load_at_start, 2),
      'load_avg_1m_end': round(os.getloadavg()[0], 2),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax': jax.__version__,
      # Pages first touched during one step (median): ~all of its scratch memory when freed
      # buffers go back to the kernel, ~0 when they are kept (transformer_jax/host_memory.py).
      'host_memory_reused': host_memory_reused,
      'minor_faults_per_step': int(statistics.median(faults)),
  }
  if other_s:
    print(f'{args.compare_dtype} step s: {[round(x, 4) for x in other_s]}')
    other = statistics.median(other_s)
    result.update({'compare_dtype': args.compare_dtype,
                   'compare_tokens_per_s': round(tokens / other, 1),
                   'compare_step_ms': round(1e3 * other, 2),
                   # > 1: the compared dtype's step is faster; the median of per-round ratios,
                   # so a burst of load hits both sides of each ratio alike.
                   'compare_speedup': round(statistics.median(
                       a / b for a, b in zip(step_s, other_s)), 3)})
  if torch_s:
    import torch
    print(f'torch s:    {[round(x, 4) for x in torch_s]}')
    torch_step_s = statistics.median(torch_s)
    result.update({'torch_tokens_per_s': round(tokens / torch_step_s, 1),
                   'torch_step_ms': round(1e3 * torch_step_s, 2),
                   'speedup_vs_torch': round(torch_step_s / step, 3),
                   'torch_threads': torch_threads, 'torch': torch.__version__,
                   'peak_rss_mb_with_torch': round(_rss_mb(), 1)})
  print(json.dumps(result))


if __name__ == '__main__':
  main()
