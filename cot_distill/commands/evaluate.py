"""`cot-distill evaluate`: score a student checkpoint on reasoning benchmarks.

    cot-distill evaluate --checkpoint runs/gsm8k_cot --tasks gsm8k,svamp \\
        --calculator --out runs/eval_gsm8k_cot
    cot-distill evaluate --checkpoint runs/mawps_fold{fold} --tasks mawps,asdiv_a \\
        --out runs/eval_mawps                            # 5-fold CV means
    cot-distill evaluate --checkpoint runs/coin_cot --examples test_ood=ood.jsonl \\
        --decode sample --num-samples 8 --temperature 0.7 --out runs/eval_sc

The checkpoint is restored onto the devices with the layout it was trained
with (model_config.json records it; `--layout`/`--num-partitions` or
`evaluate.layout` override it) and decoded there, sharded, so run this on
the slice that trained the student: every host runs the same command (with
--coordinator-address/--num-processes/--process-id where the hosts are not
found by themselves) and writes the same results to its own OUT.

A thin entry over `cot_distill.evaluation.evaluator.evaluate`, which gin can
configure too (`--gin-file`, `--gin-binding 'evaluate.batch_size = 64'`);
flags given on the command line win over gin bindings. Writes
OUT/<task>/predictions.jsonl and OUT/summary.json, and prints a table.
"""

from __future__ import annotations

import argparse
import math
import sys


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "evaluate", help="decode benchmark splits with a checkpoint and score them",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", help=(
      "MODEL_DIR of `cot-distill train`, one of its checkpoint_<step> dirs, or "
      "a T5X checkpoint dir; '{fold}' in it means one checkpoint per CV fold"))
  parser.add_argument("--tasks", help=(
      "comma-separated: dataset names (gsm8k, svamp, strategyqa, ...), "
      "dataset:split, or NAME=FILE.jsonl of Example records"))
  parser.add_argument("--examples", action="append", metavar="[NAME=]FILE.jsonl",
                      help="evaluate generated examples (repeatable)")
  parser.add_argument("--out", help="output directory")
  parser.add_argument("--split", help="split for datasets named without one "
                      "(default: test; strategyqa and commonsenseqa: dev)")
  parser.add_argument("--limit", type=int, help="first N examples per task")
  parser.add_argument("--batch-size", type=int)
  parser.add_argument("--decode", choices=("greedy", "sample", "beam"),
                      dest="decode_method")
  parser.add_argument("--num-samples", type=int,
                      help="samples per question for self-consistency")
  parser.add_argument("--temperature", type=float)
  parser.add_argument("--top-k", type=int)
  parser.add_argument("--top-p", type=float)
  parser.add_argument("--seed", type=int)
  parser.add_argument("--beam-size", type=int, help="beams kept (--decode beam)")
  parser.add_argument("--alpha", type=float,
                      help="beam search length penalty (GNMT alpha)")
  parser.add_argument("--max-input-length", type=int,
                      help="default: the training task's input length")
  parser.add_argument("--max-decode-length", type=int,
                      help="default: the training task's target length")
  parser.add_argument("--calculator", action="store_true", default=None,
                      help="also score outputs after the external calculator")
  parser.add_argument("--target-format",
                      choices=("cot", "answer_only", "multitask"),
                      help="default: from the training task in model_config.json")
  parser.add_argument("--data-dir", help="benchmark files (default: "
                      "COT_DISTILL_DATA_DIR, then the download cache)")
  parser.add_argument("--train-data", action="append", metavar="PATH",
                      help="annotation run dir or JSONL the model trained on, "
                      "for the leakage check (repeatable)")
  parser.add_argument("--label", help="the model's name in reports")
  parser.add_argument("--layout",
                      choices=("data_parallel", "model_parallel", "fsdp"),
                      help="how parameters are split over the devices "
                      "(default: as the checkpoint was trained, recorded in "
                      "its model_config.json; else data_parallel)")
  parser.add_argument("--num-partitions", type=int,
                      help="size of the model axis of the mesh (must divide "
                      "the device count; default: as trained, else 1)")
  parser.add_argument("--num-devices", type=int,
                      help="decode on the first N devices of this host only "
                      "(default: all devices of all hosts)")
  parser.add_argument("--coordinator-address", help=(
      "multi-host: host:port of process 0 (with --num-processes and "
      "--process-id; on a TPU pod slice the hosts are found without them)"))
  parser.add_argument("--num-processes", type=int)
  parser.add_argument("--process-id", type=int)
  parser.add_argument("--gin-file", action="append", default=[],
                      help="gin file configuring `evaluate` (repeatable)")
  parser.add_argument("--gin-binding", action="append", default=[],
                      help="a gin binding such as 'evaluate.batch_size = 64'")
  parser.set_defaults(func=run)


_KEYWORDS = ("checkpoint", "split", "limit", "batch_size", "decode_method",
             "num_samples", "temperature", "top_k", "top_p", "seed",
             "beam_size", "alpha",
             "max_input_length", "max_decode_length", "calculator",
             "target_format", "data_dir", "train_data", "label", "layout",
             "num_partitions", "num_devices")


def _keyword_arguments(args: argparse.Namespace) -> dict:
  """Only flags the user gave, so gin bindings fill in the rest."""
  keywords = {k: getattr(args, k) for k in _KEYWORDS
              if getattr(args, k) is not None}
  tasks = [t for t in (args.tasks or "").split(",") if t.strip()]
  tasks += list(args.examples or [])
  if tasks:
    keywords["tasks"] = tasks
  if args.out:
    keywords["out_dir"] = args.out
  return keywords


def _percent(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{100 * value:.1f}%"


def format_table(summary: dict) -> str:
  """The printed result: one line per task (and per CV dataset)."""
  from cot_distill.evaluation import statistics  # pylint: disable=g-import-not-at-top
  header = f"{'task':24s} {'n':>6s} {'accuracy [95% CI]':>24s} {'found':>7s}"
  show_calculator = summary.get("calculator")
  if show_calculator:
    header += f" {'calculator':>24s}"
  lines = [f"{summary['label']} ({summary['target_format']})", header]
  for name, task in summary["tasks"].items():
    result = statistics.accuracy_from_dict(task["accuracy"])
    line = (f"{name:24s} {result.total:6d} {result.format():>24s} "
            f"{_percent(task.get('answer_found_rate')):>7s}")
    if show_calculator:
      calculator = statistics.accuracy_from_dict(task["calculator"]["accuracy"])
      line += f" {calculator.format():>24s}"
    if task.get("faithful_accuracy"):
      faithful = statistics.accuracy_from_dict(task["faithful_accuracy"])
      line += f"  faithful CoT {faithful.format()}"
    curve = task.get("self_consistency")
    if curve:
      line += (f"  vote k={curve['k'][-1]}: {_percent(curve['accuracy'][-1])}"
               f" (one sample {_percent(task.get('sample_accuracy'))})")
    lines.append(line)
  for dataset, cv in (summary.get("cross_validation") or {}).items():
    mean = cv["fold_mean"]
    lines.append(f"{dataset + ' (CV mean)':24s} {cv['pooled']['total']:6d} "
                 f"{_percent(mean['mean']):>24s} "
                 f"(sd {100 * mean['standard_deviation']:.1f} over folds)")
  leaks = [e for e in summary.get("leakage") or [] if e["verdict"] != "ok"]
  checked = len(summary.get("leakage") or [])
  lines.append(f"leakage check: {checked} comparison(s), {len(leaks)} with "
               "overlapping questions")
  for entry in leaks:
    lines.append(f"  LEAK {entry['evaluated']} vs {entry['against']}: "
                 f"{entry['overlap']} shared question(s)")
  if summary.get("training_task_unchecked"):
    lines.append(f"  not checked: {summary['training_task_unchecked']}")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  import gin  # pylint: disable=g-import-not-at-top
  from cot_distill import cpu_runtime  # pylint: disable=g-import-not-at-top
  cpu_runtime.prefer_synchronous_dispatch()
  # Every host of the slice joins (as in `cot-distill train`) before any
  # backend starts, so the mesh spans the slice; each writes its own OUT.
  from cot_distill.train import multihost  # pylint: disable=g-import-not-at-top
  multihost.initialize(args.coordinator_address, args.num_processes,
                       args.process_id)
  from cot_distill import console  # pylint: disable=import-outside-toplevel
  console.report_backends()
  from cot_distill import vocabularies  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from cot_distill.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  if args.gin_file or args.gin_binding:
    # Not finalized (locked): modules imported later may still declare
    # configurables of their own.
    gin.parse_config_files_and_bindings(args.gin_file, args.gin_binding,
                                        finalize_config=False)
  keywords = _keyword_arguments(args)
  if not args.gin_file and not args.gin_binding:
    missing = [flag for flag, key in (("--checkpoint", "checkpoint"),
                                      ("--tasks/--examples", "tasks"),
                                      ("--out", "out_dir"))
               if key not in keywords]
    if missing:
      print(f"cot-distill evaluate: missing {', '.join(missing)}", file=sys.stderr)
      return 2
  checkpoint = keywords.get("checkpoint")
  if checkpoint and "{fold}" not in str(checkpoint):
    # Before anything is created: a missing or unreadable checkpoint is
    # one clear error, not a target-format complaint or a traceback.
    from cot_distill.evaluation import checkpoint_predictor  # pylint: disable=g-import-not-at-top
    checkpoint_predictor.check_checkpoint(checkpoint)
  with cpu_runtime.retained_memory():
    summary = evaluator.evaluate(**keywords)
  print(format_table(summary))
  print(f"predictions and summary.json in {keywords.get('out_dir', '(gin out_dir)')}")
  return 0
