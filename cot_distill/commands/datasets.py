"""`cot-distill datasets ...`: list, show, check, generate and download data.

    cot-distill datasets list [--data-dir DIR]
    cot-distill datasets show NAME [--split S] [--limit N] [--json]
    cot-distill datasets leakage [--datasets A B ...] [--file X.jsonl] [--compact] [--by-split]
    cot-distill datasets generate {coin_flip,last_letters} --n N --steps K --seed S \\
        --split SPLIT --out FILE.jsonl [--exclude OTHER.jsonl]
    cot-distill datasets download NAME|all [--data-dir DIR] [--force]
    cot-distill datasets prepare NAME...|all --tfds-dir DIR [--data-dir DIR]

--data-dir defaults to env COT_DISTILL_DATA_DIR, then the download cache.
Data errors (missing file, malformed line) print `path:line: message` and
exit 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
from typing import Sequence

from cot_distill import errors
from cot_distill.data import registry
from cot_distill.data.errors import DataFormatError, MissingDataError
from cot_distill.data.example import Example

_GENERATORS = ("coin_flip", "last_letters")


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "datasets", help="list, show, check for leakage, generate or download benchmarks",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  actions = parser.add_subparsers(dest="datasets_action", metavar="ACTION")
  actions.required = True

  def with_data_dir(action: argparse.ArgumentParser) -> argparse.ArgumentParser:
    action.add_argument(
        "--data-dir", default=None,
        help=f"benchmark files (default: ${registry.DATA_DIR_ENV}, else "
             f"{registry.default_cache_dir()})")
    return action

  with_data_dir(actions.add_parser(
      "list", help="datasets with splits, counts (from the files), answer type, licence"))
  show = with_data_dir(actions.add_parser("show", help="print examples of one split"))
  show.add_argument("name", choices=list(registry.DATASETS))
  show.add_argument("--split", default=None, help="default: the dataset's first split")
  show.add_argument("--limit", type=int, default=5)
  show.add_argument("--offset", type=int, default=0)
  show.add_argument("--json", action="store_true", help="one JSON object per line")
  leakage = with_data_dir(actions.add_parser(
      "leakage", help="overlap of normalised questions between splits/datasets"))
  leakage.add_argument("--datasets", nargs="+", choices=list(registry.DATASETS),
                       default=None, help="default: all")
  leakage.add_argument("--file", action="append", default=[],
                       help="JSONL of examples (e.g. generated) to check as well; repeatable")
  leakage.add_argument("--compact", action="store_true", help="also ignore spaces")
  leakage.add_argument("--by-split", action="store_true",
                       help="compare datasets split by split, not as wholes")
  leakage.add_argument("--json", action="store_true", help="print the report as JSON")
  generate = actions.add_parser("generate", help="write a generated symbolic split as JSONL")
  generate.add_argument("task", choices=_GENERATORS)
  generate.add_argument("--n", type=int, required=True, help="number of examples")
  generate.add_argument("--steps", type=int, default=4, help="people / words per question")
  generate.add_argument("--seed", type=int, default=0)
  generate.add_argument("--split", default="train")
  generate.add_argument("--out", required=True, help="output .jsonl (written atomically)")
  generate.add_argument("--exclude", action="append", default=[],
                        help="JSONL of examples whose questions must not recur; repeatable")
  download = with_data_dir(actions.add_parser(
      "download", help="fetch the original files (pinned commits, SHA-256 checked)"))
  download.add_argument("name", choices=list(registry.DATASETS) + ["all"])
  download.add_argument("--force", action="store_true", help="re-download present files")
  prepare = with_data_dir(actions.add_parser(
      "prepare", help="build the TFDS datasets (cot_distill_benchmarks/NAME) offline"))
  prepare.add_argument("names", nargs="+", choices=list(registry.DATASETS) + ["all"],
                       metavar="NAME", help="registry names, or all")
  prepare.add_argument("--tfds-dir", required=True, help="TFDS data_dir to write to")
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  handlers = {"list": _list, "show": _show, "leakage": _leakage,
              "generate": _generate, "download": _download, "prepare": _prepare}
  try:
    return handlers[args.datasets_action](args)
  except (DataFormatError, MissingDataError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  except (KeyError, ValueError) as error:  # unknown dataset or split
    print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
    return 2


def split_counts(name: str, data_dir: str | None) -> dict[str, int | str]:
  """Examples per split, or the error text when a split cannot be read."""
  counts: dict[str, int | str] = {}
  for split in registry.splits(name):
    try:
      counts[split] = len(registry.load(name, split, data_dir))
    except MissingDataError as error:
      counts[split] = f"missing: {error.path}"
    except DataFormatError as error:
      counts[split] = f"error: {error}"
  return counts


def _list(args: argparse.Namespace) -> int:
  print(f"data dir: {registry.resolve_data_dir(args.data_dir)}")
  limit = registry.max_examples_from_env()
  if limit is not None:
    print(f"(every split cut to its first {limit} examples by ${registry.MAX_EXAMPLES_ENV})")
  print(f"{'dataset':26s} {'split':12s} {'count':>6s}  {'answer type':16s} licence")
  problems = missing = 0
  for name, info in registry.DATASETS.items():
    for row, (split, count) in enumerate(split_counts(name, args.data_dir).items()):
      expected = info.expected_counts[split]
      if limit is not None:
        expected = min(expected, limit)
      note = ""
      if isinstance(count, str):
        problems += 1
        missing += count.startswith("missing")
        count, note = "-", f"  [{count}]"
      elif count != expected:
        problems += 1
        note = f"  [expected {expected}]"
      first = row == 0
      print(f"{name if first else '':26s} {split:12s} {count!s:>6s}  "
            f"{info.answer_type.value if first else '':16s} "
            f"{info.licence if first else ''}{note}".rstrip())
  if problems:
    print(f"{problems} split(s) missing or not matching the pinned counts", file=sys.stderr)
  if missing:
    print(f"To get the files: `cot-distill datasets download all --data-dir "
          f"{registry.resolve_data_dir(args.data_dir)}` (or a dataset name instead of "
          f"all), or point --data-dir / ${registry.DATA_DIR_ENV} at a copy of them.",
          file=sys.stderr)
  return 1 if problems else 0


def format_example(example: Example) -> str:
  """A human-readable block: id, answer, question, choices, rationale, meta."""
  lines = [f"{example.id}  [{example.answer_type.value}]  answer: {example.answer}",
           _indented("question", example.question)]
  if example.choices:
    lines.append("  choices: " + "  ".join(f"({label}) {text}" for label, text in example.choices))
  if example.gold_rationale:
    lines.append(_indented("rationale", example.gold_rationale))
  if example.meta:
    lines.append("  meta: " + json.dumps(dict(example.meta), ensure_ascii=False))
  return "\n".join(lines)


def _indented(label: str, text: str) -> str:
  body = text.strip().replace("\n", "\n" + " " * (len(label) + 4))
  return f"  {label}: {body}"


def _show(args: argparse.Namespace) -> int:
  split = args.split or registry.splits(args.name)[0]
  examples = registry.load(args.name, split, args.data_dir)
  selected = examples[args.offset:args.offset + args.limit]
  for example in selected:
    if args.json:
      print(json.dumps(example.to_dict(), ensure_ascii=False))
    else:
      print(format_example(example) + "\n")
  if not args.json:
    print(f"({len(selected)} of {len(examples)} examples in {args.name}/{split})")
  return 0


def read_examples_jsonl(path: str | os.PathLike[str]) -> list[Example]:
  """Examples (or CoT records, a superset) from a JSONL file."""
  from cot_distill.data import readers  # pylint: disable=import-outside-toplevel
  examples = []
  for record in readers.read_jsonl(path):
    try:
      examples.append(Example.from_dict(record.data))
    except (ValueError, TypeError) as error:
      raise record.error(f"not an Example record: {error}") from None
  return examples


def _leakage(args: argparse.Namespace) -> int:
  from cot_distill.data import leakage  # pylint: disable=import-outside-toplevel
  extra = {}
  for path in args.file:
    extra.update(leakage.group_examples(read_examples_jsonl(path)))
  report = leakage.check_datasets(args.datasets, args.data_dir, extra=extra,
                                  compact=args.compact, by_split=args.by_split)
  print(json.dumps(report.to_dict(), indent=1) if args.json else report.render())
  return 0


def write_jsonl_atomically(path: str | os.PathLike[str], examples: Sequence[Example]) -> None:
  """Writes to a temporary file next to `path`, then renames it into place."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as out:
      for example in examples:
        out.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def _generate(args: argparse.Namespace) -> int:
  from cot_distill.data import symbolic  # pylint: disable=import-outside-toplevel
  exclude = [example for path in args.exclude for example in read_examples_jsonl(path)]
  generator = (symbolic.generate_coin_flip if args.task == "coin_flip"
               else symbolic.generate_last_letters)
  try:
    examples = generator(args.n, args.steps, args.seed, args.split, exclude=exclude)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  write_jsonl_atomically(args.out, examples)
  print(f"wrote {len(examples)} {examples[0].dataset if examples else args.task} examples "
        f"({args.steps} steps, seed {args.seed}, split {args.split}) to {args.out}")
  return 0


def _remove_empty_folders(folders: Sequence[pathlib.Path]) -> None:
  """Removes the folders a failed download created, deepest first, if empty."""
  for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
    try:
      folder.rmdir()
    except OSError:
      pass  # not empty (or not ours to remove)


def _download(args: argparse.Namespace) -> int:
  import httpx  # pylint: disable=import-outside-toplevel
  from cot_distill.data import download  # pylint: disable=import-outside-toplevel
  names = list(registry.DATASETS) if args.name == "all" else [args.name]
  root = registry.resolve_data_dir(args.data_dir)
  for name in names:
    info = registry.get_info(name)
    folders = {root / pathlib.PurePosixPath(data_file.relative_path).parent
               for data_file in info.files}
    folders |= {parent for folder in folders for parent in folder.parents
                if root in parent.parents or parent == root}
    new_folders = [folder for folder in folders if not folder.exists()]
    try:
      paths = download.download(name, args.data_dir, force=args.force)
    except httpx.TransportError as error:
      _remove_empty_folders(new_folders)
      layout = ", ".join(data_file.relative_path for data_file in info.files)
      raise errors.UserError(
          f"datasets download {name}: cannot reach the source ({error}); no network? "
          f"Copy the files into a folder yourself ({layout}) and pass it with "
          f"--data-dir or ${registry.DATA_DIR_ENV}; `cot-distill datasets list "
          f"--data-dir DIR` checks them.") from error
    except Exception as error:  # HTTP status, checksum: report, go on
      _remove_empty_folders(new_folders)
      print(f"error: {name}: {error}", file=sys.stderr)
      return 1
    print(f"{name}: {len(paths)} file(s) in {root}")
  return 0


def _prepare(args: argparse.Namespace) -> int:
  """What `tfds build` does for our builder, without the TFDS CLI.

  The `tfds` script of tensorflow-datasets 4.9.10 imports apache_beam at
  start-up (for its convert_format command) even to build, and Beam is not
  a dependency of this project.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from cot_distill.data import tfds_builders  # pylint: disable=import-outside-toplevel
  names = list(registry.DATASETS) if "all" in args.names else list(dict.fromkeys(args.names))
  source = registry.resolve_data_dir(args.data_dir)
  for name in names:
    builder = tfds.builder(f"{tfds_builders.BUILDER_NAME}/{name}", data_dir=args.tfds_dir,
                           source_dir=str(source))
    builder.download_and_prepare()
    counts = ", ".join(f"{split}={info.num_examples}"
                       for split, info in builder.info.splits.items())
    print(f"{tfds_builders.BUILDER_NAME}/{name}:{tfds_builders.DATASET_VERSION} "
          f"in {builder.data_dir}: {counts}")
  return 0
