"""The `cot-distill` command.

Each subcommand lives in its own module under `cot_distill.commands` and
exposes `register(subparsers)`. Modules import heavy libraries (JAX,
TensorFlow) inside their handlers, so `cot-distill --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Order is the order of the method: data -> teacher -> training -> evaluation.
COMMAND_MODULES = (
    "datasets",
    "answers",
    "teacher",
    "annotate",
    "train",
    "plan",
    "evaluate",
    "export",
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
                      help="log at DEBUG level, library start-up notices included")
  parser.add_argument("--debug", action="store_true",
                      help="show the traceback of a user error (wrong name, "
                           "bad file) instead of one paragraph")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name in COMMAND_MODULES:
    module = importlib.import_module(f"cot_distill.commands.{name}")
    module.register(subparsers)
  return parser


# Commands that run JAX/TensorFlow: their libraries are loaded up front with
# the C++ start-up notices hidden (see console.load_native_libraries_quietly).
NATIVE_COMMANDS = frozenset({"train", "plan", "evaluate", "demo", "bench", "export"})


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  from cot_distill import console  # pylint: disable=g-import-not-at-top
  console.configure_logging(args.verbose)

  def run() -> int:
    if args.command in NATIVE_COMMANDS:
      console.load_native_libraries_quietly(args.verbose)
    return args.func(args)

  return console.run_reporting_user_errors(run, debug=args.debug)


if __name__ == "__main__":
  sys.exit(main())
