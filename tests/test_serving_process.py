"""`serve.py` as users run it: a real uvicorn process on 127.0.0.1, a real headless Chromium
(Debian's chromium + chromium-driver, which .ci/run installs: missing is a failure, not a skip),
a bounded load test, and SIGTERM while requests are in flight."""
import asyncio
import os
from pathlib import Path
import random
import shutil
import time

import httpx
import psutil
import pytest

from serve_process import REPO, ServeProcess
from transformer_jax.decoding.translator import Translator

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
ARTIFACTS = Path(os.environ.get('TEST_ARTIFACTS_DIR', REPO / 'test-artifacts'))
POOL = ['A dog.', 'A man is riding a bike.', 'Two children play in the park near a tree.',
        'A woman in a red coat walks her dog along the beach at sunset.', 'Hello!', '',
        'People are sitting outside a cafe.', 'A group of men play soccer on a green field.']


@pytest.fixture(scope='module')
def server(untrained_run, compile_cache):
  process = ServeProcess(untrained_run, compile_cache)
  try:
    process.wait_ready()
    yield process
  finally:
    process.close()


@pytest.fixture(scope='module')
def expected(untrained_run):
  """The library's translation of every pool sentence at the run's defaults (beam 2)."""
  return dict(zip(POOL, Translator(str(untrained_run)).translate(POOL)))


def test_the_page_translates_and_draws_the_attention_in_a_real_browser(server):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), (
      'the browser test needs Debian\'s chromium and chromium-driver: apt-get install -y '
      'chromium chromium-driver (.ci/run does)')
  os.environ['SE_OFFLINE'] = 'true'  # selenium must not try to download a browser or driver
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
               '--no-first-run', '--disable-background-networking', '--disable-sync',
               '--disable-component-update', '--window-size=1400,1000'):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    sentence = 'A man is riding a bike.'
    driver.get(server.url + '/')
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#beam option'))
    driver.find_element(By.ID, 'source').send_keys(sentence)
    driver.find_element(By.ID, 'translate').click()
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-state') == 'done'
        or d.find_element(By.ID, 'error').text)
    assert driver.find_element(By.ID, 'error').text == ''
    api = httpx.post(server.url + '/v1/translate', json={'texts': [sentence]}).json()
    translation = api['translations'][0]['text']
    assert driver.find_element(By.ID, 'translation').text == translation.strip()
    attention = httpx.post(server.url + '/v1/attention',
                           json={'source': sentence, 'target': translation}).json()
    s, t = len(attention['source_tokens']), len(attention['target_tokens'])
    assert len(driver.find_elements(By.CSS_SELECTOR, '#cross .cell')) == s * t
    assert len(driver.find_elements(By.CSS_SELECTOR, '#encoder .cell')) == s * s
    assert len(driver.find_elements(By.CSS_SELECTOR, '#nbest li')) == 2  # beam 2, n-best 2
    layers = driver.find_elements(By.CSS_SELECTOR, '#layer option')
    heads = driver.find_elements(By.CSS_SELECTOR, '#head option')
    assert (len(layers), len(heads)) == (attention['layers']['decoder'], attention['heads'] + 1)
    # Hovering a target token marks the source tokens it attends to (at least its strongest).
    row = driver.find_elements(By.CSS_SELECTOR, '#cross .rowlabel')[1]
    ActionChains(driver).move_to_element(row).perform()
    assert driver.find_elements(By.CSS_SELECTOR, '#cross .col.hl')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / 'serve_page.png'))
  finally:
    driver.quit()


async def _client(url, rng, requests, expected, results):
  async with httpx.AsyncClient(base_url=url, timeout=120) as http:
    for _ in range(requests):
      texts = rng.sample(POOL, rng.randint(1, 3))
      response = await http.post('/v1/translate', json={'texts': texts})
      results.append((response.status_code, texts, response.json()))


async def _round(url, seed, clients, requests, expected):
  results = []
  await asyncio.gather(*(_client(url, random.Random(seed * 1000 + c), requests, expected,
                                 results) for c in range(clients)))
  return results


def test_under_load_every_request_gets_its_translation_and_memory_stays_flat(server, expected):
  rss_mb = []
  for round_ in range(4):
    results = asyncio.run(_round(server.url, round_, clients=32, requests=3, expected=expected))
    assert len(results) == 96  # none lost
    for status, texts, body in results:
      assert status == 200, body
      assert [t['text'] for t in body['translations']] == [expected[t] for t in texts]
    rss_mb.append(psutil.Process(server.process.pid).memory_info().rss / 2**20)
  # Round 0 warms the allocator; after it the process must not keep growing.
  assert rss_mb[-1] <= rss_mb[1] * 1.05 + 20, rss_mb
  metrics = httpx.get(server.url + '/metrics').text
  assert not [line for line in metrics.splitlines()
              if line.startswith('transformer_jax_requests_total{path="/v1/translate",status="5')]
  batches = [line for line in metrics.splitlines()
             if line.startswith('transformer_jax_batch_sentences_count')]
  sentences = int(next(line for line in metrics.splitlines()
                       if line.startswith('transformer_jax_sentences_total')).split()[1])
  assert int(batches[0].split()[1]) < sentences  # concurrent requests shared batches


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(untrained_run, compile_cache,
                                                            expected):
  process = ServeProcess(untrained_run, compile_cache)
  try:
    process.wait_ready()

    async def load():
      async with httpx.AsyncClient(base_url=process.url, timeout=120) as http:
        async def one(texts):
          response = await http.post('/v1/translate', json={'texts': texts})
          return response.status_code, texts, response.json(), time.monotonic()
        tasks = [asyncio.create_task(one(POOL[i % 8:i % 8 + 3])) for i in range(96)]
        # Stop once the first is answered: by then every request is sent, most still wait.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        sent_signal = time.monotonic()
        process.terminate()
        return await asyncio.gather(*tasks), sent_signal

    results, sent_signal = asyncio.run(load())
    assert process.process.wait(60) == 0, '\n'.join(process.lines[-30:])
  finally:
    process.close()
  for status, texts, body, _ in results:
    assert status == 200, body
    assert [t['text'] for t in body['translations']] == [expected[t] for t in texts]
  assert sum(done > sent_signal for *_, done in results) > 10  # they really were in flight
  assert sum('request id=' in line for line in process.lines) == 96  # one log line each


def test_sigterm_while_it_compiles_exits_0_without_waiting_for_every_shape(untrained_run,
                                                                           tmp_path):
  process = ServeProcess(untrained_run, tmp_path / 'empty_cache')  # nothing cached: compiles
  try:
    process._wait_for(r'(Application startup complete)', 120)  # the warm-up has begun
    process.terminate()
    assert process.process.wait(60) == 0, '\n'.join(process.lines[-30:])
  finally:
    process.close()
  assert any('warm-up stopped' in line for line in process.lines), process.lines[-30:]
