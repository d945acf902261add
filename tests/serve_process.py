"""A real `serve.py` process on 127.0.0.1 for the browser, load and shutdown tests."""
from __future__ import annotations

import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

REPO = Path(__file__).resolve().parents[1]


class ServeProcess:
  """`python serve.py --workdir W --port 0 ...` (`--pretrained` for a Marian directory); its
  stderr is collected line by line."""

  TEST_SHAPES = ('--beam_sizes=1,2', '--batch_rows=1,4,8')  # few shapes: a quick start-up

  def __init__(self, workdir, compile_cache, *extra_flags: str, shapes=TEST_SHAPES,
               model_flag='--workdir'):
    self.lines: list[str] = []
    self.process = subprocess.Popen(
        [sys.executable, str(REPO / 'serve.py'), f'{model_flag}={workdir}', '--port=0',
         *shapes, f'--compile_cache={compile_cache}', *extra_flags],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    self.url = self._wait_for(r'on (http://127\.0\.0\.1:\d+)/', 120)

  def _read(self):
    for line in self.process.stderr:
      self.lines.append(line.rstrip('\n'))

  def _wait_for(self, pattern: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
      for line in list(self.lines):
        if (m := re.search(pattern, line)):
          return m.group(1)
      if self.process.poll() is not None:
        break
      time.sleep(0.1)
    raise AssertionError(f'serve.py did not print {pattern!r}; it printed:\n' +
                         '\n'.join(self.lines[-40:]))

  def wait_ready(self, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
      assert self.process.poll() is None, '\n'.join(self.lines[-40:])
      try:
        if httpx.get(self.url + '/readyz', timeout=5).status_code == 200:
          return
      except httpx.TransportError:
        pass
      time.sleep(0.25)
    raise AssertionError('serve.py was not ready in time:\n' + '\n'.join(self.lines[-40:]))

  def terminate(self) -> None:
    self.process.send_signal(signal.SIGTERM)

  def close(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait(30)
