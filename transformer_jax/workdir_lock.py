"""<workdir>/lock: one training run per work directory."""
from __future__ import annotations

import json
import os
import socket
import time

from transformer_jax.workdir import WorkDirError, make_directory

LOCK_FILE = 'lock'


class WorkDirLock:
  """<workdir>/lock, holding the pid and host of the run that trains in it.

  A second run on the same directory stops with a message naming the holder; a lock left by
  a process that no longer exists (killed, host rebooted: same host, dead pid) is taken over.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.me = {'pid': os.getpid(), 'host': socket.gethostname()}
    self.held = False

  def acquire(self) -> 'WorkDirLock':
    make_directory(os.path.dirname(self.path))
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is not None and not self._is_stale(holder):
          raise WorkDirError(
              f'{os.path.dirname(self.path)} is in use by another run (pid {holder["pid"]} on '
              f'{holder["host"]}, since {holder.get("since", "?")}): wait for it or stop it. If '
              f'that process is gone, delete {self.path}') from None
        try:  # stale (or unreadable twice): take it over
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump({**self.me, 'since': time.strftime('%Y-%m-%d %H:%M:%S')}, f)
      self.held = True
      return self
    raise WorkDirError(f'could not take the lock {self.path}: another run keeps taking it')

  def _holder(self) -> dict | None:
    for _ in range(2):  # a holder may be between creating the file and writing it
      try:
        with open(self.path) as f:
          return json.load(f)
      except FileNotFoundError:
        return {}  # released meanwhile: not stale, not held; the next attempt creates it
      except ValueError:
        time.sleep(0.1)
    return None

  def _is_stale(self, holder: dict) -> bool:
    if not holder:
      return True
    if holder.get('host') != self.me['host']:
      return False  # another host's process cannot be checked from here
    try:
      os.kill(int(holder['pid']), 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      return False
    return int(holder['pid']) == self.me['pid']  # our own leftover (same process): reuse

  def release(self) -> None:
    if self.held:
      self.held = False
      try:
        with open(self.path) as f:
          mine = json.load(f).get('pid') == self.me['pid']
      except (OSError, ValueError):
        mine = False
      if mine:
        os.remove(self.path)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
