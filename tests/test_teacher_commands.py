"""`cot-distill teacher ...`, `annotate --from-log` and `bench annotate` as commands."""

from __future__ import annotations

import argparse
import json

from cot_distill.benchmarks import annotate as annotate_benchmark
from cot_distill.commands import annotate as annotate_command
from cot_distill.commands import teacher as teacher_command


def run(module, argv):
  parser = argparse.ArgumentParser()
  module.register(parser.add_subparsers())
  args = parser.parse_args(argv)
  return args.func(args)


def test_exemplars_list_and_show(capsys):
  assert run(teacher_command, ["teacher", "exemplars"]) == 0
  listing = capsys.readouterr().out
  assert "arithmetic" in listing and "gsm8k" in listing and "coin_flip_gen" in listing
  assert run(teacher_command, ["teacher", "exemplars", "--dataset", "last_letters_gen"]) == 0
  shown = capsys.readouterr().out
  assert shown.startswith("last_letters  id=") and "[8] Q: " in shown


def test_prompt_shows_the_gold_hint(capsys, data_dir):
  assert run(teacher_command, ["teacher", "prompt", "--dataset", "gsm8k", "--split", "train",
                               "--data-dir", str(data_dir)]) == 0
  printed = capsys.readouterr().out
  assert printed.startswith("# template hinted-completion-v2")
  assert printed.rstrip().endswith("Answer: 72\nExplanation:")  # GSM8K train[0]'s gold.


def test_annotate_from_log_command(capsys, data_dir, tmp_path):
  code = run(annotate_command, [
      "annotate", "--from-log", str(data_dir / "teacher_outputs" / "coin_flip_zero_shot_cot.log"),
      "--out", str(tmp_path / "run"), "--data-dir", str(data_dir), "--json"])
  assert code == 0
  summary = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert summary["kept"] == 457 and summary["dropped"]["wrong_answer"] == 43


def test_annotate_reports_missing_flags(capsys):
  try:
    run(annotate_command, ["annotate", "--dataset", "gsm8k"])
  except SystemExit as error:
    assert "--teacher-url" in str(error) and "--out" in str(error)
  else:
    raise AssertionError("expected an error")


def test_bench_annotate_prints_ratios(capsys):
  assert run(annotate_benchmark, ["annotate", "--requests", "64", "--concurrency", "16",
                                  "--latency-ms", "20"]) == 0
  printed = capsys.readouterr().out
  assert "bound: 800.0 requests/s" in printed
  for name in ("client", "annotate"):
    line = next(l for l in printed.splitlines() if l.startswith(name))
    assert "ratio to bound" in line and "ms/request" in line
  assert "server CPU" in printed
