"""`python serve.py` / `transformer-jax-serve`: serve a trained work directory (or a Hugging
Face Marian / OPUS-MT model directory, --pretrained) over HTTP.

  python serve.py --workdir runs/multi30k_en_de            # then open http://127.0.0.1:8000/
  python serve.py --pretrained opus-mt-en-de
  curl -s localhost:8000/v1/translate -H 'Content-Type: application/json' \
      -d '{"texts": ["A man is riding a bike."], "beam_size": 4, "n_best": 2}'

Every served shape is compiled before /readyz says ready (minutes on a CPU the first time; a
persistent compilation cache, --compile_cache, makes later starts fast). SIGTERM or Ctrl-C stops
accepting, answers what is in flight, and exits 0. Needs the `serve` extra:
pip install -e '.[serve]'.
"""
import logging
import os
import signal
import socket
import sys

from absl import app, flags

from transformer_jax.cli.errors import report_user_errors

flags.DEFINE_string('workdir', None, 'Work directory written by train.py.')
flags.DEFINE_string('pretrained', None, 'Instead of --workdir: a Hugging Face Marian / OPUS-MT '
                    'model directory, read offline; needs the interop extra.')
flags.DEFINE_string('checkpoint', 'best', 'best | latest | <step> | average:N')
flags.DEFINE_bool('ema', True, 'Use the EMA params when the run kept them.')
flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (0.0.0.0: every interface).')
flags.DEFINE_integer('port', 8000, 'Port to listen on; 0 = any free port (printed).',
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_list('beam_sizes', None, "Beam sizes served (compiled at start-up); default: 1 and "
                  "the run's eval.beam_size.")
flags.DEFINE_list('batch_rows', ['1', '2', '4', '8', '16', '32'],
                  'Batch sizes (sentences) compiled at start-up; a batch is padded to the next.')
flags.DEFINE_integer('max_batch_tokens', 4096, 'Rows x padded source length of the largest '
                     'batch.', lower_bound=16)
flags.DEFINE_integer('max_decoder_rows', 64, 'Rows x beam size of the largest batch (beam 4: '
                     '16 sentences).', lower_bound=1)
flags.DEFINE_float('max_wait_ms', 5.0, 'How long an idle decoder waits to fill a batch.',
                   lower_bound=0)
flags.DEFINE_bool('batching', True, '--nobatching: decode every request alone.')
flags.DEFINE_integer('max_queue', 1024, 'Sentences that may wait; beyond it: 429.', lower_bound=1)
flags.DEFINE_float('timeout_s', 30.0, "A request's time budget; beyond it: 504.", lower_bound=0.001)
flags.DEFINE_integer('max_texts', 64, 'Texts per request; beyond it: 413.', lower_bound=1)
flags.DEFINE_integer('max_chars', 20000, 'Characters per request; beyond it: 413.', lower_bound=1)
flags.DEFINE_string('compile_cache', os.path.join(
    os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'transformer_jax', 'xla'),
    "JAX's persistent compilation cache ('' = off).")
FLAGS = flags.FLAGS


def _int_list(flag: str, values) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--{flag}={",".join(values)}: give comma-separated integers') from None
  if not out or min(out) < 1:
    raise app.UsageError(f'--{flag}={",".join(values)}: every value must be >= 1')
  return out


def _listen(host: str, port: int) -> socket.socket:
  """The bound socket, so that a port in use is a clear error before the model loads."""
  try:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except socket.gaierror as e:
    raise app.UsageError(f'--host={host}: {e.strerror}') from None
  family, kind, proto, _, address = infos[0]
  sock = socket.socket(family, kind, proto)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind(address)
  except OSError as e:
    sock.close()
    raise app.UsageError(f'--host={host} --port={port}: cannot listen there ({e.strerror}); '
                         'choose another --port, or stop what holds it') from None
  sock.listen(2048)
  return sock


def main(argv):
  del argv
  try:
    import uvicorn
    from transformer_jax.serving.app import ServerSettings, create_app
  except ImportError as e:
    raise app.UsageError(f'serving needs the serve extra ({e.name} is missing): '
                         "pip install -e '.[serve]'") from None
  import jax
  from transformer_jax.cli.inputs import load_translator_from_flags
  from transformer_jax.cli.logs import quiet_libraries
  from transformer_jax.serving.batcher import BatcherSettings
  from transformer_jax.serving.engine import Engine, EngineSettings
  quiet_libraries()
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  server_log = logging.getLogger('transformer_jax.serving')
  server_log.addHandler(handler)
  server_log.setLevel(logging.INFO)
  server_log.propagate = False  # absl's root handler would print it a second time
  # Until uvicorn takes the signals over, a stop asked for while the model loads is a clean exit.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  batch_rows = _int_list('batch_rows', FLAGS.batch_rows)
  sock = _listen(FLAGS.host, FLAGS.port)
  if FLAGS.compile_cache:
    os.makedirs(FLAGS.compile_cache, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', FLAGS.compile_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  translator = load_translator_from_flags(FLAGS.workdir, FLAGS.pretrained, FLAGS.checkpoint,
                                          FLAGS.ema)
  default_beam, _ = translator.decoding_settings()
  beam_sizes = (_int_list('beam_sizes', FLAGS.beam_sizes) if FLAGS.beam_sizes
                else tuple(sorted({1, default_beam})))
  if default_beam not in beam_sizes:
    raise app.UsageError(f'--beam_sizes={",".join(map(str, beam_sizes))}: must include the '
                         f"run's eval.beam_size ({default_beam}), a request's default")
  engine = Engine(translator, EngineSettings(beam_sizes=beam_sizes, batch_rows=batch_rows,
                                             max_batch_tokens=FLAGS.max_batch_tokens,
                                             max_decoder_rows=FLAGS.max_decoder_rows))
  settings = ServerSettings(
      batcher=BatcherSettings(max_wait_ms=FLAGS.max_wait_ms, max_queue=FLAGS.max_queue,
                              timeout_s=FLAGS.timeout_s, batching=FLAGS.batching),
      max_texts=FLAGS.max_texts, max_chars=FLAGS.max_chars)
  host, port = sock.getsockname()[:2]
  what = translator.checkpoint_description
  what = f'{FLAGS.workdir} ({what})' if FLAGS.workdir else what
  print(f'serving {what} on http://{host}:{port}/'
        f' — compiling {len(engine.shapes())} shapes first (GET /readyz)', file=sys.stderr,
        flush=True)
  server_class = _graceful_server_class()
  config = uvicorn.Config(create_app(engine, settings), log_level='info', access_log=False,
                          timeout_graceful_shutdown=max(FLAGS.timeout_s, 1) + 5)
  server_class(config).run(sockets=[sock])


def _graceful_server_class():
  import uvicorn

  class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a stop asked for by SIGTERM/SIGINT exits 0.

    uvicorn shuts down gracefully on the signal (stops accepting, answers what is in flight,
    runs the app's shutdown), then re-raises it so that the process dies by it (status -15).
    A supervisor that asked for the stop should see success: forget the signal once handled.
    """

    def handle_exit(self, sig, frame):
      super().handle_exit(sig, frame)
      captured = getattr(self, '_captured_signals', None)
      if captured:
        captured.clear()

  return GracefulServer


def run() -> None:
  """The console entry point."""
  app.run(report_user_errors(main))


if __name__ == '__main__':
  run()
