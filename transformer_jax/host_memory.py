"""Keep freed host memory in the process, so a CPU train step stops page-faulting its buffers.

Why. On the CPU backend an XLA executable takes its scratch memory (≈1 GiB for a preset-S train
step) from the C allocator on every call and frees it at the end. glibc serves requests above
`M_MMAP_THRESHOLD` (at most 32 MiB) with a fresh `mmap` and returns them to the kernel on `free`,
so every step first-touches every page of that memory again: ~270,000 minor page faults and
~0.5 s of kernel time per S step on 2 cores, ~15 % of the step (docs/PERFORMANCE.md).

What. `reuse_freed_host_memory()` asks glibc (`mallopt`) for one arena (`M_ARENA_MAX` 1), no
`mmap`-backed chunks (`M_MMAP_MAX` 0) and no trimming of the heap top (`M_TRIM_THRESHOLD` at
its maximum): a freed buffer stays mapped and the next step's request reuses its pages. The cost:
the process keeps its high-water mark of host memory until it exits (the train step needs it
back one step later anyway). Numerics do not change; only where the bytes live. It covers XLA's
temp (scratch) memory; a large result that the caller drops is still faulted in anew per call
(measured: tests/test_host_memory.py), which a train step, whose state is donated, never does.

When. Before jax starts its backend (the first computation, `jax.devices()`, ...): the threads
XLA starts then attach to their own arenas, which later settings do not reach. `import jax`
alone is fine. The train CLI and the benchmarks call it first thing; a notebook calls it in its
first cell. TRANSFORMER_JAX_HOST_MALLOC=system leaves the allocator alone. Non-glibc
platforms (macOS, musl) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

OPT_OUT_ENV = 'TRANSFORMER_JAX_HOST_MALLOC'

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1


def _jax_backend_started() -> bool:
  try:
    from jax._src import xla_bridge  # private, hence the guard: no such function, assume not
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def reuse_freed_host_memory() -> bool:
  """Make glibc keep and reuse freed memory (see the module docstring). True when applied.

  Returns False, changing nothing, when TRANSFORMER_JAX_HOST_MALLOC=system, when the C library
  is not glibc, or when jax's backend has already started (then it also logs a warning: the
  setting would reach only threads started later, not XLA's).
  """
  if os.environ.get(OPT_OUT_ENV, '').strip().lower() == 'system':
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if _jax_backend_started():
    logging.warning(
        'reuse_freed_host_memory() called after jax started its backend: not applied. Call it '
        'before the first jax computation (import jax alone is fine), e.g. in the first cell.')
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  # Order matters little, but the arena limit first: a thread that allocates between the calls
  # then already shares the main arena.
  for parameter, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX)):
    if libc.mallopt(parameter, value) != 1:
      logging.warning('mallopt(%d, %d) refused; host memory settings not fully applied.',
                      parameter, value)
      return False
  return True
