"""SIGTERM/SIGINT as a flag the training loop checks between steps (it then saves and exits)."""
from __future__ import annotations

import signal


class StopSignal:
  """Context manager: while inside, SIGTERM and SIGINT set `received` instead of killing."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
