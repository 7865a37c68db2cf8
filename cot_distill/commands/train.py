"""`cot-distill train` (= `python -m cot_distill.train`): train with gin configs.

    cot-distill train --gin_file=gin/models/t5_1_1_tiny.gin \\
        --gin_file=gin/runs/finetune_cot.gin \\
        --gin.MIXTURE_OR_TASK_NAME="'cot_distill.coin_flip_gen.gold.cot'" \\
        --gin.MODEL_DIR="'runs/coin_flip_cot_tiny'" --gin.TRAIN_STEPS=200

Flags follow T5X's: `--gin_file` (repeatable, later files override earlier
ones), `--gin.MACRO=VALUE` (a gin binding `MACRO = VALUE`, applied after all
files; values are gin literals, so strings need inner quotes),
`--gin_bindings` (any binding), `--gin_search_paths` (for `include`).
`$COT_DISTILL_GIN_BINDINGS` (one gin line per line) is applied last.
Exit status 0 when the run reached TRAIN_STEPS, 143 when it stopped on
SIGTERM after saving a checkpoint (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from cot_distill import errors

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect.
_GIN_MACRO_FLAG = "--gin."
GIN_BINDINGS_ENV = "COT_DISTILL_GIN_BINDINGS"


class GinFlagParser(argparse.ArgumentParser):
  """argparse plus T5X's `--gin.NAME=VALUE` flags (collected as bindings).

  argparse cannot declare a flag family, so those arguments are taken out
  before parsing and stored in `args.gin_macro_flags`.
  """

  def parse_known_args(self, args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    macros = [arg for arg in args if arg.startswith(_GIN_MACRO_FLAG)]
    rest = [arg for arg in args if not arg.startswith(_GIN_MACRO_FLAG)]
    namespace, extras = super().parse_known_args(rest, namespace)
    namespace.gin_macro_flags = (getattr(namespace, "gin_macro_flags", None)
                                 or []) + macros
    return namespace, extras


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_gin_arguments(parser)
  parser.add_argument("--coordinator_address", default=None,
                      help="multi-host: host:port of process 0")
  parser.add_argument("--num_processes", type=int, default=None,
                      help="multi-host: number of processes")
  parser.add_argument("--process_id", type=int, default=None,
                      help="multi-host: this process's index")


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
  """T5X's gin flags (`cot-distill plan` takes them too)."""
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file; repeat for several (later ones win)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding, e.g. 'trainer.train.seed = 3'")
  parser.add_argument("--gin_search_paths", default="",
                      help="comma-separated folders for gin `include`s "
                           "(the repository root and the working directory "
                           "are always searched)")
  parser.set_defaults(gin_macro_flags=[])


def macro_bindings(flags: Sequence[str]) -> list[str]:
  """['--gin.TRAIN_STEPS=10'] -> ['TRAIN_STEPS = 10']."""
  bindings = []
  for flag in flags:
    name, separator, value = flag[len(_GIN_MACRO_FLAG):].partition("=")
    if not separator or not name:
      raise errors.ConfigurationError(f"{flag}: write gin macro flags as --gin.NAME=VALUE")
    bindings.append(f"{name} = {value}")
  return bindings


def parse_gin(files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings, the way T5X's gin_utils does."""
  import gin  # pylint: disable=import-outside-toplevel
  repo_root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  for path in [*search_paths, os.getcwd(), repo_root]:
    if path:
      gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings(list(files), list(bindings),
                                      finalize_config=False)


class _LibraryChatterFilter(logging.Filter):
  """Drops orbax's per-save INFO lines (a dozen per checkpoint)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING
            or "/orbax/" not in record.pathname.replace(os.sep, "/"))


def environment_bindings() -> list[str]:
  """Gin lines from $COT_DISTILL_GIN_BINDINGS, applied after every flag.

  One line per binding (or `include 'file.gin'`). It lets a script shrink a
  documented command without editing it (CI runs the README's base-size
  command with a tiny model this way); the run's config.gin records the
  result, and the log says that the variable was used.
  """
  text = os.environ.get(GIN_BINDINGS_ENV, "")
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if lines:
    logging.info("$%s adds %d gin line(s) after the command line: %s",
                 GIN_BINDINGS_ENV, len(lines), "; ".join(lines))
  return lines


def gin_bindings(args: argparse.Namespace) -> list[str]:
  """Every binding of the command line, in the order they apply:
  --gin_bindings, then --gin.MACRO flags, then the environment's."""
  return [*args.gin_bindings, *macro_bindings(args.gin_macro_flags),
          *environment_bindings()]


def check_task_name() -> None:
  """An unknown MIXTURE_OR_TASK_NAME is a user error with close matches."""
  import difflib  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  try:
    name = gin.query_parameter("%MIXTURE_OR_TASK_NAME")
  except ValueError:
    return  # not set through the macro: the trainer reports what is missing
  if not isinstance(name, str):
    return
  import cot_distill_tasks  # pylint: disable=import-outside-toplevel,unused-import
  known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  if name in known:
    return
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
  ours = [task for task in known if task.startswith("cot_distill.")]
  hint = (f"did you mean {', '.join(close)}?" if close else
          f"{len(ours)} cot_distill tasks are registered, e.g. {', '.join(ours[:4])}")
  raise errors.UserError(
      f"MIXTURE_OR_TASK_NAME {name!r} is not a registered SeqIO task or mixture; "
      f"{hint} (tasks/README.md lists them all)")


def run(args: argparse.Namespace) -> int:
  for handler in logging.getLogger().handlers:
    handler.addFilter(_LibraryChatterFilter())
  if not args.gin_file:
    raise errors.UserError(
        "cot-distill train: give at least one --gin_file (e.g. "
        "--gin_file=gin/models/t5_1_1_tiny.gin --gin_file=gin/runs/finetune_cot.gin)")
  import gin  # pylint: disable=import-outside-toplevel
  from cot_distill import cpu_runtime  # pylint: disable=import-outside-toplevel
  from cot_distill.train import trainer  # pylint: disable=import-outside-toplevel
  # Gin first: it only imports modules and binds values (no JAX backend
  # starts), and the process-wide CPU settings below read its
  # `cpu_fast_paths`, so a config that turns the fast paths off also keeps
  # JAX's default asynchronous dispatch.
  parse_gin(args.gin_file, gin_bindings(args),
            [path for path in args.gin_search_paths.split(",") if path])
  cpu_runtime.prefer_synchronous_dispatch()
  from cot_distill.train import multihost  # pylint: disable=import-outside-toplevel
  multihost.initialize(args.coordinator_address, args.num_processes,
                       args.process_id)
  from cot_distill import console  # pylint: disable=import-outside-toplevel
  console.report_backends()
  check_task_name()
  # Process-wide, so made here and not by the library.
  with cpu_runtime.retained_memory() as retained:
    if retained:
      logging.info("CPU steps reuse their host memory (cot_distill.cpu_runtime)")
    result = gin.get_configurable(trainer.train)()
  logging.info("finished at step %d in %s%s", result.step, result.model_dir,
               " (preempted)" if result.preempted else "")
  return PREEMPTED_EXIT_CODE if result.preempted else 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "train", help="train a T5 student with gin configs (T5X-style flags)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  # Subparsers are built by the CLI's parser class; switch this one to the
  # class that understands --gin.NAME=VALUE.
  parser.__class__ = GinFlagParser
  add_arguments(parser)
  parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
  parser = GinFlagParser(prog="python -m cot_distill.train",
                         description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  parser.add_argument("-v", "--verbose", action="store_true",
                      help="log at DEBUG level, library start-up notices included")
  parser.add_argument("--debug", action="store_true",
                      help="show the traceback of a user error")
  args = parser.parse_args(argv)
  from cot_distill import console  # pylint: disable=import-outside-toplevel
  console.configure_logging(args.verbose)

  def start() -> int:
    console.load_native_libraries_quietly(args.verbose)
    return run(args)

  return console.run_reporting_user_errors(start, debug=args.debug)
