"""`cot-distill bench NAME`: benchmarks that print figures and same-run ratios.

Each benchmark is a module in `cot_distill.benchmarks` exposing
`register(subparsers)`; they never assert timings, they report them.
"""

from __future__ import annotations

import importlib

BENCHMARK_MODULES = ("annotate", "seqio", "decode", "train")


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "bench", help="run a benchmark and print its figures")
  bench_subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
  bench_subparsers.required = True
  for name in BENCHMARK_MODULES:
    importlib.import_module(f"cot_distill.benchmarks.{name}").register(
        bench_subparsers)
