"""The `cot-distill` command.

Each subcommand lives in its own module under `cot_distill.commands` and
exposes `register(subparsers)`. Modules import heavy libraries (JAX,
TensorFlow) inside their handlers, so `cot-distill --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# Order is the order of the method: data -> teacher -> training -> evaluation.
COMMAND_MODULES = (
    "datasets",
    "answers",
    "teacher",
    "annotate",
    "train",
    "evaluate",
    "report",
    "demo",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="cot-distill",
      description=("Distil chain-of-thought from a teacher LLM into a T5 "
                   "student (Magister et al., 2023)."))
  parser.add_argument("-v", "--verbose", action="store_true",
                      help="log at DEBUG level")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name in COMMAND_MODULES:
    module = importlib.import_module(f"cot_distill.commands.{name}")
    module.register(subparsers)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  logging.basicConfig(
      level=logging.DEBUG if args.verbose else logging.INFO,
      format="%(asctime)s %(levelname)s %(name)s: %(message)s",
      datefmt="%H:%M:%S")
  if not args.verbose:
    # Orbax and TensorFlow log every checkpoint operation through absl at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    return int(args.func(args) or 0)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
