"""`cot-distill bench NAME`: benchmarks that print figures and same-run ratios.

Each benchmark is a module in `cot_distill.benchmarks` exposing
`register(subparsers)`; they never assert timings, they report them.
"""

from __future__ import annotations

import importlib
import os

BENCHMARK_MODULES = ("annotate", "seqio", "decode", "train", "collectives")

# $COT_DISTILL_BENCH_SMOKE=1: every benchmark runs its smallest configuration
# (same code paths, same rows and ratios, figures meaningless), so CI can run
# the README's benchmark commands as written. Flags given on the command line
# still win.
SMOKE_ENV = "COT_DISTILL_BENCH_SMOKE"
SMOKE_DEFAULTS = {
    "annotate": {"requests": 64, "concurrency": 8, "latency_ms": 5.0},
    "seqio": {"batch_size": 4, "inputs_length": 512, "targets_length": 512, "examples": 16,
              "trainer_model": "t5_1_1_tiny", "trainer_steps": 1},
    "decode": {"config": "t5_1_1_tiny", "batch_size": 2, "input_length": 8,
               "new_tokens": 4, "repeats": 1, "uncached_repeats": 0, "hf_compiled": ""},
    "train": {"model": "t5_1_1_tiny", "batch_size": 2, "input_length": 8,
              "target_length": 8, "steps": 1, "warmup": 1,
              # torch.compile takes over 20 s even for the tiny model.
              "hf_compile": "", "peak_size": 256},
    "collectives": {"programs": "train", "variants": "off"},
}


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "bench", help="run a benchmark and print its figures")
  bench_subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
  bench_subparsers.required = True
  smoke = os.environ.get(SMOKE_ENV, "") not in ("", "0")
  for name in BENCHMARK_MODULES:
    importlib.import_module(f"cot_distill.benchmarks.{name}").register(
        bench_subparsers)
    if smoke and name in SMOKE_DEFAULTS:
      bench_subparsers.choices[name].set_defaults(**SMOKE_DEFAULTS[name])
