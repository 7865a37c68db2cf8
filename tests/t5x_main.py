"""Runs a T5X entry point: `python -m tests.t5x_main t5x.train ARGS...`.

Exactly `python -m t5x.train ARGS...`, with one import shim first: T5X's
optimizers import `jestimator`, whose last release (0.3.3) imports
`PartitionSpec` from `jax.experimental.pjit`, which current JAX no longer
has. Setting that attribute before T5X is imported is enough (see
../shared/vendor/README.md). The shim lives here, in the test harness, so
the installed T5X stays unmodified; gin/t5x/README.md tells users the same.

With COT_DISTILL_T5X_PARSE_ONLY=1 it stops right after T5X has parsed its gin
flags (`--gin_file`s with T5X's own search paths, `skip_unknown=False`) and
finalized gin (whose checks reject unknown configurables and macros still
%gin.REQUIRED), printing PARSED: how tests/test_t5x_gin.py proves that every
file in gin/t5x is one T5X accepts, without running it.
"""

from __future__ import annotations

import os
import runpy
import sys

import jax
import jax.experimental.pjit as pjit


def main() -> None:
  if len(sys.argv) < 2 or not sys.argv[1].startswith("t5x."):
    raise SystemExit("usage: python -m tests.t5x_main t5x.{train,eval,infer} ARGS...")
  if not hasattr(pjit, "PartitionSpec"):
    pjit.PartitionSpec = jax.sharding.PartitionSpec
  if os.environ.get("COT_DISTILL_T5X_PARSE_ONLY", "") not in ("", "0"):
    _stop_after_parsing()
  module = sys.argv[1]
  sys.argv = [module] + sys.argv[2:]
  # alter_sys: T5X's gin files `import __main__ as train_script` and bind
  # `train_script.train`, so the entry point must BE __main__.
  runpy.run_module(module, run_name="__main__", alter_sys=True)


def _stop_after_parsing() -> None:
  import gin  # pylint: disable=g-import-not-at-top
  from t5x import gin_utils  # pylint: disable=g-import-not-at-top
  parse = gin_utils.parse_gin_flags

  def parse_then_stop(*args, **kwargs):
    parse(*args, **kwargs)  # T5X's finalizes: unset %gin.REQUIRED raises here
    if not gin.config_is_locked():
      gin.finalize()
    print("PARSED", flush=True)
    raise SystemExit(0)

  gin_utils.parse_gin_flags = parse_then_stop


if __name__ == "__main__":
  main()
