"""`cot-distill report RUN_DIRS... --out REPORT_DIR`: markdown + JSON + plots.

Run directories are recognised by their files (summary.json: evaluation,
manifest.json: annotation, model_config.json / metrics.jsonl: training) and
searched a few levels down, so `cot-distill report runs/ --out report/`
collects everything under runs/. See cot_distill/evaluation/report.py.
"""

from __future__ import annotations

import argparse
import pathlib


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "report", help="write a markdown/JSON report with plots from run dirs",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dirs", nargs="+", type=pathlib.Path,
                      metavar="RUN_DIR", help="run directories (or folders of them)")
  parser.add_argument("--out", required=True, type=pathlib.Path,
                      help="report directory (report.md, report.json, *.png)")
  parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  from cot_distill.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top
  report = report_lib.build_report(args.run_dirs, args.out)
  kinds: dict[str, int] = {}
  for entry in report["runs"]:
    kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
  print("runs: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())))
  for row in report.get("accuracy", []):
    print(f"  {row['task']:28s} {row['model']:36s} {row['formatted']}")
  for entry in report.get("unreadable", []):
    print(f"  could not read {entry['kind']} run {entry['path']}: {entry['reason']}")
  print(f"report: {args.out / 'report.md'} (plots: {', '.join(report['plots']) or 'none'})")
  return 0
