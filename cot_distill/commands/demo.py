"""`cot-distill demo`: the whole method offline on CPU (see cot_distill/demo.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
  from cot_distill import demo  # pylint: disable=g-import-not-at-top  (light)
  parser = subparsers.add_parser(
      "demo",
      help="end-to-end demo: local teacher -> annotate -> filter -> train "
           "answer-only and CoT students -> evaluate -> report",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--out", default="runs/demo",
                      help="output directory (rerunning resumes)")
  parser.add_argument("--size", choices=sorted(demo.SIZES), default="default",
                      help="'default' is the README demo; 'smoke' a quick check")
  parser.add_argument("--tasks", default=",".join(demo.TASKS),
                      help="comma-separated symbolic tasks")
  parser.add_argument("--teacher-error-rate", type=float, default=0.2,
                      help="share of the local teacher's CoTs with a wrong step/answer")
  parser.add_argument("--seed", type=int, default=0)
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  from cot_distill import cpu_runtime, demo  # pylint: disable=g-import-not-at-top
  cpu_runtime.prefer_synchronous_dispatch()
  from cot_distill import console  # pylint: disable=import-outside-toplevel
  console.report_backends()
  tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
  unknown = [t for t in tasks if t not in demo.TASKS]
  if unknown:
    raise SystemExit(f"unknown demo task(s) {unknown}; choose from {demo.TASKS}")
  # Process-wide host-memory policy: the entry point's to set, not the trainer's.
  with cpu_runtime.retained_memory():
    result = demo.run_demo(demo.DemoConfig(
        out_dir=args.out, size=args.size, tasks=tasks,
        teacher_error_rate=args.teacher_error_rate, seed=args.seed))
  print()
  print("Teacher annotation (kept / dropped by the answer filter and the rationale verifier):")
  for task, counts in result.annotation.items():
    dropped = {k: v for k, v in counts.get("dropped", {}).items() if v}
    print(f"  {task:<14} kept {counts.get('kept')} of {counts.get('samples')}"
          f"  dropped {dropped}")
  for task, survival in result.step_errors.items():
    print(f"  {task:<14} right answer after a wrong step: {survival['injected']} injected;"
          f" the answer filter keeps {survival['answer_filter_keeps']},"
          f" with the verifier {survival['verifier_keeps']}")
  print()
  print("Student accuracy, % [95% interval] (greedy decoding):")
  print(result.table)
  print()
  print(f"Report: {result.report_path}")
  print(f"Finished in {result.seconds / 60:.1f} min; outputs in {result.out_dir}")
  return 0
