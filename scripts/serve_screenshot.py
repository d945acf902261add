"""A screenshot of the serving page with a trained run (the README's docs/serve_page.png).

    python scripts/serve_screenshot.py --workdir runs/multi30k_en_de \
        [--sentence 'A man in a blue shirt is riding a bike.'] [--output docs/serve_page.png]

Starts `serve.py` on a free port, opens the page in Debian's headless Chromium
(apt-get install chromium chromium-driver), translates the sentence, hovers the second target
token, and saves the page.
"""
import argparse
import os
from pathlib import Path
import sys

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))

from serve_process import ServeProcess  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='runs/multi30k_en_de')
  parser.add_argument('--sentence', default='A man in a blue shirt is riding a bike.')
  parser.add_argument('--output', default=str(REPO / 'docs' / 'serve_page.png'))
  parser.add_argument('--compile_cache', default=str(Path.home() / '.cache/transformer_jax/xla'))
  args = parser.parse_args()
  os.environ['SE_OFFLINE'] = 'true'
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select, WebDriverWait
  server = ServeProcess(args.workdir, args.compile_cache, '--beam_sizes=1,4', shapes=())
  try:
    server.wait_ready(3600)
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
                 '--disable-background-networking', '--window-size=1100,1400'):
      options.add_argument(flag)
    driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=options)
    try:
      driver.get(server.url + '/')
      WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#beam option'))
      driver.find_element(By.ID, 'source').send_keys(args.sentence)
      driver.find_element(By.ID, 'translate').click()
      WebDriverWait(driver, 120).until(
          lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-state') == 'done')
      layers = driver.find_elements(By.CSS_SELECTOR, '#layer option')
      Select(driver.find_element(By.ID, 'layer')).select_by_index(len(layers) - 1)
      row = driver.find_elements(By.CSS_SELECTOR, '#cross .rowlabel')[2]
      ActionChains(driver).move_to_element(row).perform()
      driver.save_screenshot(args.output)
      print(f'wrote {args.output}: "{args.sentence}" -> '
            f'"{driver.find_element(By.ID, "translation").text}"')
    finally:
      driver.quit()
  finally:
    server.close()


if __name__ == '__main__':
  main()
