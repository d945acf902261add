"""The HTTP API through the ASGI app (Starlette's TestClient, which is httpx): the answers equal
the library's, every bad input gets its status and a message naming the field, and the
batcher gathers concurrent requests, pushes back when full and gives up at the deadline."""
import json
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastapi.testclient import TestClient

from transformer_jax.decoding.attention_maps import attention_maps, model_from_translator
from transformer_jax.decoding.beam_search import length_penalty
from transformer_jax.decoding.translator import Translator
from transformer_jax.serving.app import ServerSettings, create_app
from transformer_jax.serving.batcher import BatcherSettings
from transformer_jax.serving.engine import Engine, EngineSettings

from toy_corpus import real_multi30k_dir, real_pairs

LIMITS = dict(max_texts=16, max_chars=2000, max_body_bytes=4096)


@pytest.fixture(scope='module')
def translator(untrained_run):
  return Translator(str(untrained_run))


@pytest.fixture(scope='module')
def engine(translator):
  """Beam sizes 1 and 2 (the run's eval.beam_size), batches of 1, 4 or 8, compiled once."""
  engine = Engine(translator, EngineSettings(beam_sizes=(1, 2), batch_rows=(1, 4, 8)))
  engine.warmup()
  return engine


def client(engine, **settings):
  batcher = settings.pop('batcher', BatcherSettings())
  return TestClient(create_app(engine, ServerSettings(batcher=batcher, **{**LIMITS, **settings})))


def wait_ready(c):
  for _ in range(600):
    if c.get('/readyz').status_code == 200:
      return
    time.sleep(0.1)
  raise AssertionError(c.get('/readyz').json())


def sentences():
  """Mixed lengths (one over the model's 31 source tokens, so truncated), and an empty one."""
  if real_multi30k_dir():
    texts = [en for en, _ in real_pairs('val', 12, max_words=7)]
  else:
    texts = [' '.join(['a red dog runs'] * n)[:60] for n in range(1, 13)]
  return texts + ['', ' '.join(['the ball'] * 40)]


def forced_log_prob(model, source_ids, tokens, ends_with_eos, eos_id, bos_id):
  """log P(tokens [+ eos] | source) by one teacher-forced pass."""
  targets = list(tokens) + ([eos_id] if ends_with_eos else [])
  decoder_inputs = [bos_id] + targets[:-1]
  logits = model(np.asarray([source_ids], np.int32), np.asarray([decoder_inputs], np.int32))
  log_probs = jax.nn.log_softmax(jnp.asarray(logits[0], jnp.float32), axis=-1)
  return float(sum(log_probs[t, y] for t, y in enumerate(targets)))


@pytest.mark.parametrize('beam_size,alpha', [(1, 0.6), (2, 0.6), (2, 1.5)])
def test_translations_equal_the_translators(engine, translator, beam_size, alpha):
  texts = sentences()
  expected = translator.translate(texts, beam_size=beam_size, alpha=alpha)
  with client(engine) as c:
    wait_ready(c)
    response = c.post('/v1/translate', json={'texts': texts, 'beam_size': beam_size,
                                             'alpha': alpha, 'n_best': beam_size})
  assert response.status_code == 200, response.text
  body = response.json()
  got = body['translations']
  assert [t['text'] for t in got] == expected
  assert len(set(expected)) > 3  # the untrained model's answers differ: the check can fail
  assert [t['truncated'] for t in got] == [False] * (len(texts) - 1) + [True]
  assert body['num_truncated'] == 1 and body['beam_size'] == beam_size and body['alpha'] == alpha
  assert got[-2] == {'text': '', 'score': 0.0, 'truncated': False, 'n_best': []}
  for t in got[:-2]:
    assert t['n_best'][0] == {'text': t['text'], 'score': t['score']}
    scores = [h['score'] for h in t['n_best']]
    assert scores == sorted(scores, reverse=True) and len(scores) == beam_size


def test_scores_are_the_models_log_probabilities_over_the_length_penalty(engine, translator):
  """Every n-best entry: log P(Y | X) by a teacher-forced pass, / lp(|Y|) (greedy: lp = 1)."""
  model = model_from_translator(translator)
  vocab = translator.vocab
  texts = [t for t in sentences() if t][:6]
  sources = [engine.encode(t).ids for t in texts]
  by_bucket = {}
  for ids in sources:
    by_bucket.setdefault(engine.source_bucket(len(ids)), []).append(ids)
  for beam_size, alpha in [(1, 0.0), (2, 0.0), (2, 0.8)]:
    for bucket, group in by_bucket.items():
      max_len = engine.decode_length(bucket)
      for ids, translation in zip(group, engine.translate_batch(group, beam_size, alpha)):
        for hyp in translation.n_best:
          ended = len(hyp.tokens) < max_len
          log_p = forced_log_prob(model, ids, hyp.tokens, ended, vocab.eos_id, vocab.bos_id)
          length = len(hyp.tokens) + 1 if ended else max_len
          penalty = 1.0 if beam_size == 1 else float(length_penalty(length, alpha))
          np.testing.assert_allclose(hyp.score, log_p / penalty, rtol=2e-4, atol=2e-4)


def test_attention_equals_attention_maps_and_each_row_sums_to_one(engine, translator):
  model = model_from_translator(translator)
  source = sentences()[3]
  with client(engine) as c:
    wait_ready(c)
    own = c.post('/v1/attention', json={'source': source}).json()
    translated = c.post('/v1/translate', json={'texts': [source]}).json()['translations'][0]
    given = c.post('/v1/attention', json={'source': source, 'target': 'Ein Hund läuft.'}).json()
  # Its own translation is forced as the decoder produced it (token ids, not re-tokenised text).
  best = engine.translate_batch([engine.encode(source).ids], engine.default_beam_size,
                                engine.default_alpha)[0].best
  assert own['target'] == translated['text'] != ''
  forced = best.tokens[:engine.max_length - 1]  # the model has max_length positions
  assert own['target_tokens'] == ['<s>'] + [translator.vocab.id_to_piece(i) for i in forced]
  _, weights = model(np.asarray([engine.encode(source).ids]),
                     np.asarray([[translator.vocab.bos_id] + forced]), return_attention=True)
  own_expected = {'source_tokens': given['source_tokens'], 'target_tokens': own['target_tokens'],
                  **{k: np.stack([np.asarray(w[0]) for w in ws]) for k, ws in weights.items()}}
  assert given['output_tokens'] == given['target_tokens'][1:] + ['</s>']
  given_expected = attention_maps(model, translator.vocab, source, 'Ein Hund läuft.')
  for body, expected in ((own, own_expected), (given, given_expected)):
    assert body['source_tokens'] == expected['source_tokens']
    assert body['target_tokens'] == expected['target_tokens']
    for name in ('encoder_self', 'decoder_self', 'cross'):
      weights = np.asarray(body[name])
      np.testing.assert_allclose(weights, expected[name], atol=1e-5)
      np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    s, t = len(body['source_tokens']), len(body['target_tokens'])
    assert np.asarray(body['cross']).shape == (body['layers']['decoder'], body['heads'], t, s)


BAD = [  # (path, raw body or JSON value, status, what the message must name)
    ('/v1/translate', b'{"texts": [', 422, 'not JSON'),
    ('/v1/translate', b'{"texts": ["\xff"]}', 422, 'not UTF-8'),
    ('/v1/translate', {}, 422, 'texts: is required'),
    ('/v1/translate', {'texts': 'one text'}, 422, 'texts:'),
    ('/v1/translate', {'texts': ['fine', 7]}, 422, 'texts[1]'),
    ('/v1/translate', {'texts': ['a'], 'colour': 'red'}, 422, 'colour: is not a field'),
    ('/v1/translate', {'texts': []}, 422, 'texts: is empty'),
    ('/v1/translate', b'{"texts": ["ok", "\\ud800 lone"]}', 422, 'texts[1]: character 0 is a lone'),
    ('/v1/translate', {'texts': ['a'] * 17}, 413, 'the limit is 16'),
    ('/v1/translate', {'texts': ['a' * 1500, 'b' * 600]}, 413, '2100 characters'),
    ('/v1/translate', {'texts': ['a' * 5000]}, 413, 'bytes'),
    ('/v1/translate', {'texts': ['a'], 'beam_size': 3}, 422, 'beam_size: 3 is not served'),
    ('/v1/translate', {'texts': ['a'], 'beam_size': 1.5}, 422, 'beam_size'),
    ('/v1/translate', {'texts': ['a'], 'beam_size': True}, 422, 'beam_size'),
    ('/v1/translate', {'texts': ['a'], 'alpha': -0.1}, 422, 'alpha: -0.1 is out of range'),
    ('/v1/translate', {'texts': ['a'], 'alpha': 2.5}, 422, 'alpha'),
    ('/v1/translate', {'texts': ['a'], 'alpha': 'high'}, 422, 'alpha'),
    ('/v1/translate', {'texts': ['a'], 'beam_size': 2, 'n_best': 3}, 422, 'n_best: 3'),
    ('/v1/translate', {'texts': ['a'], 'n_best': 0}, 422, 'n_best: 0'),
    ('/v1/attention', {'source': '  '}, 422, 'source: is empty'),
    ('/v1/attention', {'source': ['a']}, 422, 'source'),
    ('/v1/attention', {'source': 'a', 'target': 5}, 422, 'target'),
]


def test_every_bad_input_gets_its_status_and_a_message_naming_the_field(engine):
  with client(engine) as c:
    wait_ready(c)
    good = c.post('/v1/translate', json={'texts': ['A dog runs.']}).json()
    for path, body, status, message in BAD:
      raw = body if isinstance(body, bytes) else json.dumps(body).encode()
      response = c.post(path, content=raw, headers={'Content-Type': 'application/json'})
      assert response.status_code == status, (body, response.text)
      assert response.json()['status'] == status and message in response.json()['error'], (
          body, response.json())
      again = c.post('/v1/translate', json={'texts': ['A dog runs.']})
      assert again.status_code == 200 and again.json() == good
    assert c.get('/nope').status_code == 404
    assert c.get('/v1/translate').status_code == 405
    metrics = c.get('/metrics').text
  assert 'transformer_jax_requests_total{path="/v1/translate",status="413"} 3' in metrics
  assert f'transformer_jax_requests_total{{path="/v1/translate",status="200"}} {len(BAD) + 1}' in (
      metrics)


def test_model_health_and_readiness(engine):
  with client(engine) as c:
    assert c.get('/healthz').json() == {'status': 'ok'}
    wait_ready(c)
    info = c.get('/v1/model').json()
    page = c.get('/')
  assert info['decoding']['beam_sizes'] == [1, 2] and info['decoding']['beam_size'] == 2
  assert info['max_length'] == 32 and info['vocab']['size'] == engine.vocab.size
  assert info['buckets'] == {'source_lengths': [16, 32], 'batch_rows': [1, 4, 8],
                             'max_batch_tokens': 4096, 'max_decoder_rows': 64}
  assert 'step' in info['checkpoint'] and info['config']['model']['d_model'] == 32
  assert page.status_code == 200 and 'id="cross"' in page.text


class Gate:
  """Holds the engine's decode until opened; counts the batches and their sentences."""

  def __init__(self, engine, monkeypatch):
    self.opened, self.entered, self.batches = threading.Event(), threading.Event(), []
    decode = engine.translate_batch

    def held(sources, beam_size, alpha):
      self.batches.append(len(sources))
      self.entered.set()
      assert self.opened.wait(60)
      return decode(sources, beam_size, alpha)
    monkeypatch.setattr(engine, 'translate_batch', held)


def post_in_thread(c, body, out):
  thread = threading.Thread(target=lambda: out.append(c.post('/v1/translate', json=body)))
  thread.start()
  return thread


def wait_until(predicate):
  for _ in range(500):
    if predicate():
      return
    time.sleep(0.01)
  raise AssertionError('timed out')


@pytest.mark.parametrize('batching', [True, False])
def test_requests_that_wait_together_are_decoded_together_unless_batching_is_off(
    engine, translator, monkeypatch, batching):
  gate = Gate(engine, monkeypatch)
  texts = ['A dog.', 'A cat runs.', 'Two men.', 'A red ball.']
  assert all(len(engine.encode(t).ids) <= 16 for t in texts)  # one source bucket: one batch
  with client(engine, batcher=BatcherSettings(batching=batching, max_wait_ms=1)) as c:
    wait_ready(c)
    first, rest = [], []
    threads = [post_in_thread(c, {'texts': [texts[0]]}, first)]
    assert gate.entered.wait(30)  # the first request is decoding; three more arrive meanwhile
    threads += [post_in_thread(c, {'texts': [t]}, rest) for t in texts[1:]]
    wait_until(lambda: c.app.state.batcher.queued == 3)
    gate.opened.set()
    for thread in threads:
      thread.join(60)
  assert gate.batches == ([1, 3] if batching else [1, 1, 1, 1])
  answers = sorted(r.json()['translations'][0]['text'] for r in first + rest)
  assert answers == sorted(translator.translate(texts))


def test_a_full_queue_answers_429_and_a_late_request_504_and_the_server_recovers(
    engine, monkeypatch):
  gate = Gate(engine, monkeypatch)
  texts = ['A dog.', 'A cat.', 'A man.', 'A woman.']
  settings = BatcherSettings(max_queue=4, timeout_s=3.0)
  with client(engine, batcher=settings) as c:
    wait_ready(c)
    answers, threads = [], []
    threads.append(post_in_thread(c, {'texts': texts}, answers))  # decoding (held)
    assert gate.entered.wait(30)
    threads.append(post_in_thread(c, {'texts': texts}, answers))  # waits: the queue is full
    wait_until(lambda: c.app.state.batcher.queued == 4)
    full = c.post('/v1/translate', json={'texts': ['One more.']})
    assert full.status_code == 429 and full.headers['Retry-After'] == '1'
    assert '4 sentences are waiting' in full.json()['error']
    for thread in threads:
      thread.join(60)  # both held requests run out of their 3 s budget
    assert [r.status_code for r in answers] == [504, 504]
    assert 'not answered within 3s' in answers[0].json()['error']
    gate.opened.set()
    wait_until(lambda: c.app.state.batcher.queued == 0)
    after = c.post('/v1/translate', json={'texts': texts})
    assert after.status_code == 200 and len(after.json()['translations']) == 4
