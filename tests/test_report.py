"""`cot-distill report` on synthetic run directories of all three kinds."""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib

import pytest
from PIL import Image

from cot_distill import answers
from cot_distill.data.example import AnswerType, Example
from cot_distill.evaluation import evaluator
from cot_distill.evaluation import report as report_lib
from cot_distill.evaluation import runs as runs_lib
from cot_distill.evaluation.predictions import Generation, Scorer

NUM_QUESTIONS = 20


def _examples() -> list[Example]:
  return [Example(id=f"coin/test/{i}", dataset="coin", split="test",
                  question=f"A coin is heads up. Flip {i}?",
                  answer="yes" if i % 2 else "no",
                  answer_type=AnswerType.YES_NO) for i in range(NUM_QUESTIONS)]


def _vote(found):
  found = [a for a in found if a is not None]
  if not found:
    return None
  counts = collections.Counter(found)
  return next(a for a in found if counts[a] == max(counts.values()))


class ScriptedPredictor:
  """Right on the first `num_right` questions, wrong after; sample j of
  question i flips its answer when (i + j) % 3 == 0."""

  def __init__(self, examples, num_right, num_samples=1, cot=True):
    self.gold = {e.question: (e.answer, int(e.id.rsplit("/", 1)[1]))
                 for e in examples}
    self.num_right = num_right
    self.num_samples = num_samples
    self.cot = cot

  def __call__(self, inputs, *, batch_index):
    outputs = []
    for text in inputs:
      gold, index = self.gold[text]
      samples = []
      for sample in range(self.num_samples):
        right = (index < self.num_right) != ((index + sample) % 3 == 0
                                             and self.num_samples > 1)
        answer = gold if right else {"yes": "no", "no": "yes"}[gold]
        body = (f"The coin was flipped {index} times. So the answer is {answer}."
                if self.cot else answer)
        samples.append(Generation(body, num_tokens=len(body.split())))
      outputs.append(samples)
    return outputs


def _evaluation_run(root: pathlib.Path, name: str, num_right: int,
                    target_format: str, num_samples: int = 1):
  examples = _examples()
  examples_file = root / "coin_test.jsonl"
  examples_file.write_text("".join(json.dumps(e.to_dict()) + "\n"
                                   for e in examples))
  model_dir = root / f"model_{name}"
  model_dir.mkdir(exist_ok=True)
  (model_dir / "model_config.json").write_text(json.dumps({
      "model": {"emb_dim": 8, "num_encoder_layers": 2, "num_decoder_layers": 2},
      "task": f"demo.coin.{target_format}"}))
  return evaluator.evaluate(
      checkpoint=str(model_dir), tasks=[f"coin_flip={examples_file}"],
      out_dir=str(root / f"eval_{name}"), batch_size=8, label=name,
      decode_method="sample" if num_samples > 1 else "greedy",
      num_samples=num_samples,
      scorer=Scorer(judge=answers.judge, match=answers.answers_match,
                    vote=_vote if num_samples > 1 else None),
      predictor_factory=lambda *_: ScriptedPredictor(
          examples, num_right, num_samples, cot=target_format == "cot"))


def _annotation_run(root: pathlib.Path) -> pathlib.Path:
  run = root / "annotate_coin"
  run.mkdir()
  kept = [{"id": f"coin/train/{i}", "question": "q", "rationale": "r",
           "correct": True} for i in range(8)]
  dropped = ([{"id": "coin/train/8", "drop_reason": "wrong_answer"}] * 2
             + [{"id": "coin/train/9", "drop_reason": "no_answer"}])
  (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
  (run / "dropped.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dropped))
  (run / "manifest.json").write_text(json.dumps({
      "status": "complete", "dataset": {"name": "coin_flip_gen", "split": "train"},
      "teacher": {"model": "local-synthetic"},
      "prompt": {"template_id": "cot-hinted-completion", "hinted": True},
      "tokens": {"prompt_tokens": 5000, "completion_tokens": 700}}))
  # A run known only by its manifest (records moved away): counts as the
  # teacher runner writes them.
  imported = root / "import_gsm8k"
  imported.mkdir()
  (imported / "manifest.json").write_text(json.dumps({
      "kind": "import", "status": "complete",
      "dataset": {"name": "gsm8k", "split": "train"},
      "teacher": {"model": "text-davinci-002"},
      "counts": {"questions": 5, "questions_done": 5, "samples": 10, "kept": 6,
                 "dropped": {"wrong_answer": 3, "truncated": 1, "empty": 0}}}))
  return run


def _training_run(root: pathlib.Path) -> pathlib.Path:
  run = root / "train_cot"
  run.mkdir()
  (run / "model_config.json").write_text(json.dumps({
      "model": {"emb_dim": 64, "num_encoder_layers": 2, "num_decoder_layers": 2},
      "task": "demo.coin.cot"}))
  # As the trainer writes it: appended, so a resume after step 60 repeats
  # steps 70..; the later records win. Eval metrics every 50 steps.
  with open(run / "metrics.jsonl", "w") as handle:
    for step in list(range(0, 81, 10)) + list(range(70, 101, 10)):
      handle.write(json.dumps({
          "step": step, "train/loss": 5.0 * math.exp(-step / 40),
          "train/accuracy": 1 - 0.9 * math.exp(-step / 30),
          "train/learning_rate": 0.01, "train/grad_norm": "nan"}) + "\n")
      if step % 50 == 0:
        handle.write(json.dumps({"step": step,
                                 "eval/coin.eval/accuracy": step / 100}) + "\n")
  return run


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("runs")
  _evaluation_run(root, "cot-student", 15, "cot")
  _evaluation_run(root, "answer-only", 9, "answer_only")
  _evaluation_run(root, "cot-student-sc", 15, "cot", num_samples=5)
  _annotation_run(root)
  _training_run(root)
  return root


def test_run_kinds_are_detected_by_their_files(run_root):
  found = {path.name: kind for kind, path in runs_lib.discover([run_root])}
  assert found == {
      "eval_cot-student": "evaluation", "eval_answer-only": "evaluation",
      "eval_cot-student-sc": "evaluation", "annotate_coin": "annotation",
      "import_gsm8k": "annotation", "train_cot": "training",
      # The evaluated models' directories hold model_config.json too.
      "model_cot-student": "training", "model_answer-only": "training",
      "model_cot-student-sc": "training"}


def test_report_markdown_holds_the_numbers_and_valid_images(run_root, tmp_path):
  out = tmp_path / "report"
  report = report_lib.build_report([run_root], out)
  markdown = (out / "report.md").read_text()
  # Accuracy with Wilson intervals: 15/20 and 9/20.
  assert "75.0% [53.1, 88.8]" in markdown
  assert "45.0% [25.8, 65.8]" in markdown
  # Paired difference cot - answer-only = +30 points (the better one first).
  assert "| coin_flip | cot-student | answer-only | 20 | +30.0 pts" in markdown
  # Filter survival: 8 kept of 11 chains (counted from the record files),
  # 6 of 10 from the manifest's counts alone.
  assert ("| coin_flip_gen/train (local-synthetic) | complete | "
          "cot-hinted-completion (hinted) | 11 | 8 | 72.7% |") in markdown
  assert "| gsm8k/train (text-davinci-002) | complete | n/a | 10 | 6 | 60.0% |" in markdown
  assert "| 8/10 | 700 |" in markdown
  # Training table: first and last loss and accuracies.
  assert ("| train_cot (demo.coin.cot) | 2+2 layers, d=64 | 100 | 5.0000 → 0.4104 "
          "| 0.1000 → 0.9679 | 0.0000 → 1.0000 |") in markdown
  # Self-consistency table and example predictions are inline.
  assert "## Self-consistency" in markdown
  assert "k=5" in markdown
  assert "## Example predictions" in markdown
  assert "So the answer is" in markdown
  for name in ("accuracy.png", "self_consistency.png", "filter_survival.png",
               "training_curves.png"):
    assert f"]({name})" in markdown
    with Image.open(out / name) as image:
      image.verify()
    with Image.open(out / name) as image:
      assert image.format == "PNG" and image.size[0] > 300
  saved = json.loads((out / "report.json").read_text())
  assert saved["plots"] == report["plots"]
  rows = {r["model"]: r for r in saved["accuracy"]}
  assert rows["cot-student"]["n"] == 20
  assert rows["cot-student"]["format"] == "cot"
  assert rows["answer-only"]["accuracy"] == pytest.approx(0.45)
  (comparison,) = [c for c in saved["paired_comparisons"]
                   if {c["first"], c["second"]} == {"cot-student", "answer-only"}]
  assert comparison["first"] == "cot-student"
  assert comparison["only_first_correct"] == 6
  assert comparison["only_second_correct"] == 0


def test_self_consistency_curve_in_report_matches_predictions(run_root, tmp_path):
  report = report_lib.build_report([run_root / "eval_cot-student-sc"], tmp_path)
  (curve,) = report["self_consistency"]
  assert curve["k"] == [1, 2, 3, 4, 5]
  # Recompute k=5 by hand from the saved samples.
  records = [json.loads(line) for line in
             (run_root / "eval_cot-student-sc" / "coin_flip" /
              "predictions.jsonl").read_text().splitlines()]
  right = sum(_vote([s["predicted"] for s in r["samples"]]) == r["gold"]
              for r in records)
  assert curve["accuracy"][-1] == pytest.approx(right / len(records))


def test_report_rejects_a_directory_without_runs(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no run found"):
    report_lib.build_report([tmp_path / "empty"], tmp_path / "out")


def test_training_metrics_keep_the_last_record_per_step(run_root):
  run = runs_lib.load_training(run_root / "train_cot")
  steps, values = run.data["series"]["train/loss"]
  assert steps == list(range(0, 101, 10))
  assert values[-1] == pytest.approx(5.0 * math.exp(-100 / 40))
  # Non-finite values are written as strings ("nan") and are not plotted.
  assert "train/grad_norm" not in run.data["series"]
  assert run.data["series"]["eval/coin.eval/accuracy"] == ([0, 50, 100],
                                                          [0.0, 0.5, 1.0])


def test_one_bad_manifest_is_listed_and_the_rest_reported(run_root, tmp_path,
                                                          capsys):
  """Issue 14: `report` aborted on one bad manifest instead of reporting it."""
  from cot_distill.commands import report as report_command  # pylint: disable=import-outside-toplevel
  broken = run_root / "annotate_torn"
  broken.mkdir()
  (broken / "manifest.json").write_text('{"status": "comp')
  out = tmp_path / "report"
  args = argparse.Namespace(run_dirs=[run_root], out=out)
  assert report_command.run(args) == 0
  printed = capsys.readouterr().out
  assert f"could not read annotation run {broken}: ValueError:" in printed
  markdown = (out / "report.md").read_text()
  assert "## Runs that could not be read (1)" in markdown
  assert "75.0% [53.1, 88.8]" in markdown  # the readable runs are all there
  saved = json.loads((out / "report.json").read_text())
  assert [u["path"] for u in saved["unreadable"]] == [str(broken)]
  assert len(saved["runs"]) == 9
