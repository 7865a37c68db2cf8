"""Host settings that stop XLA:CPU from page-faulting its memory in every step.

Each XLA:CPU execution allocates its temporaries in one block (about 1 GB
for a T5 1.1 small training step at batch 8) with `posix_memalign` and frees
it when the step ends. glibc serves a block that large with a fresh `mmap`
and returns it with `munmap`, so every step faults its whole working set in
again: 256,000 minor page faults and ~0.5 CPU-seconds of kernel time per
step on the reference 2-core machine, ~15% of the step.

Two settings together keep that memory mapped from one step to the next:

- synchronous CPU dispatch (`jax_cpu_enable_async_dispatch=False`): the step
  runs, and allocates, on the calling thread, i.e. from glibc's main arena.
  Asynchronous dispatch allocates on a worker thread, whose arena maps large
  blocks afresh whatever `mallopt` says. The flag only exists before JAX
  starts its CPU client, so `prefer_synchronous_dispatch` must run before
  the first JAX computation; it changes nothing on TPUs or GPUs.
- `retained_memory()`: glibc's main arena grows with `brk` instead of `mmap`
  and keeps what is freed, so the next step reuses the same pages. The
  process holds its peak heap while the context is open; leaving it restores
  glibc's defaults and hands free memory back.

`cot-distill bench train` shows the effect (it applies to any large CPU
allocation made on the main thread, PyTorch's included).
Opt out of both with COT_DISTILL_RETAIN_HOST_MEMORY=0; both are also off
with `cpu_fast_paths=off` (`cot_distill.fast_paths`), and retention needs
the CPU backend.

Both settings change the whole process, so only command-line entry points
(`cot-distill train | evaluate | demo | bench`) make them; library functions
such as `trainer.train()` never do.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Iterator

from cot_distill import fast_paths

_ASYNC_DISPATCH_FLAG = "jax_cpu_enable_async_dispatch"
_OPT_OUT_VARIABLE = "COT_DISTILL_RETAIN_HOST_MEMORY"

# glibc <malloc.h>: mallopt parameters and the defaults they are restored to.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_INT_MAX = 2**31 - 1


def _opted_out() -> bool:
  return os.environ.get(_OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off")


def _async_dispatch(jax) -> bool:
  # A flag JAX defines without a `jax.config` attribute; read its value.
  return bool(jax.config.values.get(_ASYNC_DISPATCH_FLAG, True))


def prefer_synchronous_dispatch() -> bool:
  """Asks JAX to run CPU computations on the calling thread, if still possible.

  Call it before the first JAX computation (the JAX commands do, first
  thing). Returns whether synchronous dispatch is in effect: False when
  opted out, with `cpu_fast_paths=off` (as set so far: a gin file parsed
  later cannot undo it, and the flag changes nothing off CPU), or when JAX
  already started with asynchronous dispatch.
  """
  if _opted_out() or fast_paths.mode() == "off":
    return False
  import jax  # pylint: disable=import-outside-toplevel
  if not _async_dispatch(jax):
    return True
  if _backends_started():
    logging.debug("cpu_runtime: JAX already started with asynchronous CPU dispatch")
    return False
  jax.config.update(_ASYNC_DISPATCH_FLAG, False)
  return True


def _backends_started() -> bool:
  """Whether JAX already created its clients (then the flag is too late).

  JAX has no public query for this; its private one is read defensively, and
  if it moved, the answer is "not started" (the flag then may not apply).
  """
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def _glibc() -> ctypes.CDLL | None:
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  try:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None


_retaining = 0  # open `retained_memory` contexts (they may nest)


@contextlib.contextmanager
def retained_memory() -> Iterator[bool]:
  """Keeps freed host memory mapped while the context is open (see above).

  Yields whether the policy is on: only for JAX's CPU backend with
  synchronous dispatch and CPU fast paths on (`fast_paths.enabled()`), on
  glibc, and unless opted out. Nested contexts
  share one policy; the outermost restores glibc's defaults.
  """
  global _retaining  # pylint: disable=global-statement
  import jax  # pylint: disable=import-outside-toplevel
  libc = _glibc()
  active = (libc is not None and not _opted_out() and jax.default_backend() == "cpu"
            and fast_paths.enabled("cpu") and not _async_dispatch(jax))
  if active and _retaining == 0:
    active = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
  _retaining += active
  try:
    yield active
  finally:
    _retaining -= active
    if active and _retaining == 0:
      libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
      libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
      libc.malloc_trim(0)
