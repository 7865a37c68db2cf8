"""`cot-distill evaluate` and `cot-distill report` as a user runs them."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from cot_distill.commands import evaluate as evaluate_command
from cot_distill.commands import report as report_command
from cot_distill.evaluation import statistics


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="cot-distill")
  subparsers = parser.add_subparsers(dest="command")
  evaluate_command.register(subparsers)
  report_command.register(subparsers)
  return parser


def test_only_given_flags_reach_evaluate_so_gin_fills_the_rest():
  args = _parser().parse_args([
      "evaluate", "--checkpoint", "m", "--tasks", "gsm8k,svamp",
      "--examples", "ood=x.jsonl", "--out", "o", "--num-samples", "4"])
  keywords = evaluate_command._keyword_arguments(args)
  assert keywords == {"checkpoint": "m", "tasks": ["gsm8k", "svamp", "ood=x.jsonl"],
                      "out_dir": "o", "num_samples": 4}


def test_missing_required_flags_are_named(capsys):
  args = _parser().parse_args(["evaluate", "--tasks", "gsm8k"])
  assert args.func(args) == 2
  assert "--checkpoint" in capsys.readouterr().err


def test_table_prints_accuracy_calculator_votes_and_leaks():
  summary = {
      "label": "student", "target_format": "cot", "calculator": True,
      "tasks": {"gsm8k": {
          "accuracy": {"accuracy": 0.5, "correct": 5, "total": 10,
                       "interval": [0.237, 0.763]},
          "answer_found_rate": 0.9,
          "calculator": {"accuracy": {"accuracy": 0.6, "correct": 6, "total": 10,
                                      "interval": [0.31, 0.83]}},
          "self_consistency": {"k": [1, 2], "accuracy": [0.5, 0.7]},
          "sample_accuracy": 0.45}},
      "leakage": [{"evaluated": "gsm8k", "against": "records.jsonl",
                   "overlap": 3, "verdict": "LEAK"}],
  }
  table = evaluate_command.format_table(summary)
  assert "50.0% [23.7, 76.3]" in table
  assert "60.0% [31.0, 83.0]" in table
  assert "vote k=2: 70.0% (one sample 45.0%)" in table
  assert "LEAK gsm8k vs records.jsonl: 3 shared question(s)" in table


@pytest.fixture
def clean_gin():
  """Gin bindings are process-global; leave none behind for other tests."""
  import gin
  yield
  gin.clear_config()


@pytest.mark.slow
@pytest.mark.usefixtures("clean_gin")
def test_evaluate_then_report_from_the_command_line(tmp_path, t5x_tiny_dir,
                                                    capsys):
  """A T5X checkpoint directory straight from T5X, gin for the batch size."""
  rows = [json.loads(line) for line in
          (t5x_tiny_dir / "validation.jsonl").read_text().splitlines()][:8]
  examples = tmp_path / "arith.jsonl"
  examples.write_text("".join(json.dumps({
      "id": f"arith/validation/{i}", "dataset": "arith", "split": "validation",
      "question": row["inputs"], "answer_type": "number",
      "answer": re.search(r"answer is (\d+)", row["targets"]).group(1)}) + "\n"
      for i, row in enumerate(rows)))
  gin_file = tmp_path / "eval.gin"
  # One device, as T5X decoded: a sharded bfloat16 product may round apart.
  gin_file.write_text("evaluate.batch_size = 4\nevaluate.max_input_length = 64\n"
                      "evaluate.num_devices = 1\n")
  parser = _parser()
  args = parser.parse_args([
      "evaluate", "--checkpoint",
      str(t5x_tiny_dir / "checkpoint_legacy" / "checkpoint_1000"),
      "--examples", f"arith={examples}", "--target-format", "cot",
      "--max-decode-length", "64", "--out", str(tmp_path / "eval"),
      "--label", "t5x-tiny", "--gin-file", str(gin_file)])
  assert args.func(args) == 0
  printed = capsys.readouterr().out
  summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
  assert summary["decode"]["batch_size"] == 4  # from gin
  assert summary["decode"]["max_decode_length"] == 64  # from the flag
  assert "evaluate.batch_size = 4" in (tmp_path / "eval" / "config.gin").read_text()
  accuracy = statistics.accuracy_from_dict(summary["tasks"]["arith"]["accuracy"])
  assert re.search(rf"arith\s+8\s+{re.escape(accuracy.format())}", printed)
  predictions = [json.loads(line) for line in
                 (tmp_path / "eval" / "arith" / "predictions.jsonl").read_text()
                 .splitlines()]
  t5x = [json.loads(line)["prediction"] for line in
         (t5x_tiny_dir / "t5x_infer_validation_predictions.jsonl")
         .read_text().splitlines()][:8]
  assert [p["generated"] for p in predictions] == t5x

  args = parser.parse_args(["report", str(tmp_path / "eval"),
                            "--out", str(tmp_path / "report")])
  assert args.func(args) == 0
  markdown = (tmp_path / "report" / "report.md").read_text()
  correct = sum(p["correct"] for p in predictions)
  assert f"| arith | validation | t5x-tiny | cot | greedy | 8 | {100 * correct / 8:.1f}%" in markdown
  assert (tmp_path / "report" / "accuracy.png").stat().st_size > 1000


@pytest.mark.usefixtures("clean_gin")
def test_a_missing_or_empty_checkpoint_is_refused_before_anything_is_made(
    tmp_path):
  """Issue 14: `evaluate --checkpoint /nonexistent` made OUT, then crashed."""
  from cot_distill import errors  # pylint: disable=import-outside-toplevel
  examples = tmp_path / "x.jsonl"
  examples.write_text(json.dumps({
      "id": "x/test/0", "dataset": "x", "split": "test", "question": "1+1?",
      "answer_type": "number", "answer": "2"}) + "\n")
  out = tmp_path / "eval"

  def evaluate(checkpoint):
    args = _parser().parse_args(["evaluate", "--checkpoint", str(checkpoint),
                                 "--examples", f"x={examples}", "--out",
                                 str(out)])
    with pytest.raises(errors.UserError) as raised:
      args.func(args)
    assert not out.exists()
    return str(raised.value)

  message = evaluate(tmp_path / "nonexistent")
  assert "nonexistent: no such file or directory" in message
  assert "target format" not in message
  # A MODEL_DIR whose training has not saved a step yet.
  run = tmp_path / "run"
  run.mkdir()
  (run / "model_config.json").write_text(json.dumps(
      {"model": {"emb_dim": 8}, "task": "cot_distill.x.cot"}))
  assert "no checkpoint_<step> directory yet" in evaluate(run)
  (run / "checkpoint_4").mkdir()
  assert "has no step 3 (its steps: 4)" in evaluate(run / "checkpoint_3")
  (run / "model_config.json").write_text("{not json")
  assert "not valid JSON" in evaluate(run)
