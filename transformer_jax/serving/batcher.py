"""Dynamic batching: sentences of concurrent requests decoded together, answered one by one.

Every sentence of every request becomes an `Item` with its own future. One worker task takes
the oldest waiting item, waits under load (when the last batch had company, or others wait
already) at most `max_wait_ms` from going idle for as many sentences as the server held at the
last batch, and decodes together every waiting item with the same
beam size and α, up to the engine's largest batch for the longest source among them. Sources of
different lengths share a batch, padded to the longest, as `Translator.translate` pads its
batches: on a CPU a batch costs a fixed ~20 ms plus a few ms a row, so two half batches cost
more than the padding of one.
The decode runs on one worker thread, so the event loop keeps accepting and answering.

Back-pressure: at most `max_queue` sentences wait; beyond that `translate` raises `QueueFull`
(the server answers 429 with Retry-After). A request that is not answered within its budget
raises `DeadlineExceeded` (504); its items still waiting are dropped, not decoded.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from typing import Callable

from transformer_jax.serving.engine import Engine, Translation


class QueueFull(Exception):
  """More sentences are waiting than the server holds (`max_queue`)."""


class DeadlineExceeded(Exception):
  """The request was not answered within its time budget."""


@dataclasses.dataclass(frozen=True)
class BatcherSettings:
  max_wait_ms: float = 5.0     # how long an idle worker waits for more sentences
  max_queue: int = 1024        # sentences waiting, all requests together
  timeout_s: float = 30.0      # a request's budget, from arrival to answer
  batching: bool = True        # False: every request is decoded alone (the benchmark's baseline)

  def check(self) -> None:
    if not self.max_wait_ms >= 0:
      raise ValueError(f'max_wait_ms must be >= 0, got {self.max_wait_ms}')
    if self.max_queue < 1:
      raise ValueError(f'max_queue must be >= 1, got {self.max_queue}')
    if not self.timeout_s > 0:
      raise ValueError(f'timeout_s must be > 0, got {self.timeout_s}')


@dataclasses.dataclass
class Item:
  ids: list[int]
  key: tuple  # (beam size, alpha): items that may share a batch
  request: int
  future: asyncio.Future
  enqueued: float
  started: float | None = None
  decode_s: float = 0.0


@dataclasses.dataclass
class RequestTiming:
  queue_ms: float   # the longest any of the request's sentences waited for its batch
  decode_ms: float  # the longest decode of a batch that held one of them


class Batcher:
  """Owns the worker task and thread; `start()` inside the server's event loop."""

  def __init__(self, engine: Engine, settings: BatcherSettings = BatcherSettings(),
               on_batch: Callable[[int, int], None] | None = None):
    settings.check()
    self.engine = engine
    self.settings = settings
    self.on_batch = on_batch  # called with (sentences, rows) of every decoded batch
    self._waiting: collections.deque[Item] = collections.deque()
    self._wakeup: asyncio.Event | None = None
    self._worker: asyncio.Task | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='decode')
    self._next_request = 0
    self._recent_load = 1  # sentences in the server (waiting or taken) at the last batch

  # -- lifecycle -----------------------------------------------------------
  def start(self) -> None:
    self._wakeup = asyncio.Event()
    self._worker = asyncio.get_running_loop().create_task(self._run(), name='batcher')

  async def stop(self) -> None:
    """Ends the worker after the batch it is decoding; waiting sentences fail."""
    if self._worker is not None:
      self._worker.cancel()
      try:
        await self._worker
      except asyncio.CancelledError:
        pass
    while self._waiting:
      item = self._waiting.popleft()
      if not item.future.done():
        item.future.set_exception(RuntimeError('the server is shutting down'))
    self._executor.shutdown(wait=True)

  @property
  def queued(self) -> int:
    return len(self._waiting)

  async def run_in_worker(self, fn, *args):
    """Runs fn on the decoding thread (so it never runs beside a batch)."""
    return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

  # -- requests ------------------------------------------------------------
  async def translate(self, sources: list[list[int]], beam_size: int,
                      alpha: float) -> tuple[list[Translation | None], RequestTiming]:
    """Translations of non-empty `sources` (None for an empty one), in order."""
    live = [ids for ids in sources if ids]
    if len(self._waiting) + len(live) > self.settings.max_queue:
      raise QueueFull(f'{len(self._waiting)} sentences are waiting (the limit is '
                      f'{self.settings.max_queue}); retry shortly')
    loop = asyncio.get_running_loop()
    self._next_request += 1
    now = time.perf_counter()
    items = []
    for ids in live:
      key = (beam_size, float(alpha))
      if not self.settings.batching:
        key += (self._next_request,)  # a key of its own: the request is decoded alone
      items.append(Item(ids, key, self._next_request, loop.create_future(), now))
    self._waiting.extend(items)
    self._wakeup.set()
    try:
      results = await asyncio.wait_for(asyncio.gather(*(i.future for i in items)),
                                       self.settings.timeout_s)
    except asyncio.TimeoutError:
      request = items[0].request if items else None
      self._waiting = collections.deque(i for i in self._waiting if i.request != request)
      raise DeadlineExceeded(f'not answered within {self.settings.timeout_s:g}s') from None
    answers = iter(results)
    timing = RequestTiming(
        queue_ms=max(((i.started - i.enqueued) * 1e3 for i in items), default=0.0),
        decode_ms=max((i.decode_s * 1e3 for i in items), default=0.0))
    return [next(answers) if ids else None for ids in sources], timing

  # -- the worker ----------------------------------------------------------
  def _take_batch(self) -> list[Item]:
    """The oldest waiting item and the waiting items that may join it: same beam size and α,
    the batch within the rows its longest source allows."""
    oldest = self._waiting[0]
    same = [i for i in self._waiting if i.key == oldest.key]
    # When more wait than fit, the oldest goes with those nearest its length (a stable sort:
    # arrival order among equals), as offline batches are sorted: a batch runs as many steps
    # as its longest translation needs, so mixing lengths wastes the short ones' rows.
    same[1:] = sorted(same[1:], key=lambda i: abs(len(i.ids) - len(oldest.ids)))
    batch, longest = [], 0
    for item in same:
      length = max(longest, len(item.ids))
      if len(batch) < self.engine.max_rows(self.engine.source_bucket(length), oldest.key[0]):
        batch.append(item)
        longest = length
    chosen = set(map(id, batch))
    self._waiting = collections.deque(i for i in self._waiting if id(i) not in chosen)
    return batch

  def _full_batch_waiting(self) -> bool:
    key = self._waiting[0].key
    same = [i for i in self._waiting if i.key == key]
    longest = max(len(i.ids) for i in same)
    return len(same) >= self.engine.max_rows(self.engine.source_bucket(longest), key[0])

  def _enough_waiting(self) -> bool:
    """A full batch waits, or as many sentences as were in the server at the last batch."""
    key = self._waiting[0].key
    return (self._full_batch_waiting()
            or sum(i.key == key for i in self._waiting) >= self._recent_load)

  async def _run(self) -> None:
    idle_since = time.perf_counter()
    while True:
      while not self._waiting:
        self._wakeup.clear()
        await self._wakeup.wait()
      # Under load, wait (at most max_wait_ms from when the worker went idle) for as many
      # sentences as the server held at the last batch. With closed-loop clients the ones just
      # answered come back within a few ms; not waiting for them would split the load into a
      # large batch and a small one for good (32 clients: batches of 31 and 1, alternately).
      # A lone client (concurrency 1) never waits: it could only pay for the wait.
      under_load = self._recent_load > 1 or len(self._waiting) > 1
      if self.settings.batching and self.settings.max_wait_ms > 0 and under_load:
        deadline = (max(idle_since, self._waiting[0].enqueued)
                    + self.settings.max_wait_ms / 1e3)
        while not self._enough_waiting() and time.perf_counter() < deadline:
          self._wakeup.clear()
          try:
            await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
          except asyncio.TimeoutError:
            break
          if not self._waiting:
            break
        if not self._waiting:
          continue
      batch = self._take_batch()
      self._recent_load = len(batch) + len(self._waiting)
      started = time.perf_counter()
      for item in batch:
        item.started = started
      beam_size, alpha = batch[0].key[:2]
      try:
        translations = await self.run_in_worker(
            self.engine.translate_batch, [i.ids for i in batch], beam_size, alpha)
      except Exception as e:  # a failed batch fails its requests, not the server
        for item in batch:
          if not item.future.done():
            item.future.set_exception(e)
        idle_since = time.perf_counter()
        continue
      idle_since = time.perf_counter()
      decode_s = idle_since - started
      if self.on_batch is not None:
        self.on_batch(len(batch), self.engine.rows_bucket(len(batch)))
      for item, translation in zip(batch, translations):
        item.decode_s = decode_s
        if not item.future.done():  # its request may have timed out meanwhile
          item.future.set_result(translation)
