"""The evaluation loop with a fake predictor: scoring, resume, calculator, votes.

The predictor is injected, so these tests check the bookkeeping alone; the
real judge (`cot_distill.answers`) does the answer extraction.
"""

from __future__ import annotations

import collections
import json
import pathlib

import pytest

from cot_distill import answers
from cot_distill.data.example import AnswerType, Example
from cot_distill.evaluation import evaluator
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation.predictions import (CalculatorOutcome, Generation,
                                                Scorer)


def _number_example(index: int, answer: str) -> Example:
  return Example(id=f"toy/test/{index}", dataset="toy", split="test",
                 question=f"question {index}?", answer=answer,
                 answer_type=AnswerType.NUMBER)


# question index -> generated text; gold answers below.
OUTPUTS = {
    0: "3 + 4 = 7. The answer is 7.",        # correct, marker rule
    1: "5 * 2 = 11. The answer is 11.",      # wrong arithmetic, calculator fixes
    2: "I think it is 12 or so",              # no marker: last-number fallback
    3: "No idea.",                             # nothing found
    4: "6 - 1 = 5. The answer is 4.",        # wrong answer, right arithmetic
}
GOLD = {0: "7", 1: "10", 2: "12", 3: "1", 4: "5"}


class FakePredictor:
  """Looks up the output for each input; records which batches it decoded."""

  def __init__(self, outputs: dict[str, list[str]], fail_at_batch: int = -1):
    self.outputs = outputs
    self.num_samples = len(next(iter(outputs.values())))
    self.fail_at_batch = fail_at_batch
    self.batches_seen: list[int] = []

  def __call__(self, inputs, *, batch_index):
    if batch_index == self.fail_at_batch:
      raise KeyboardInterrupt("simulated kill")
    self.batches_seen.append(batch_index)
    return [[Generation(text, num_tokens=len(text.split()) + 1)
             for text in self.outputs[i]] for i in inputs]


def fake_calculator(text: str) -> CalculatorOutcome:
  """Stands in for the real calculator: fixes the one wrong product above."""
  if "5 * 2 = 11" in text:
    return CalculatorOutcome(
        text.replace("5 * 2 = 11. The answer is 11.",
                     "5 * 2 = 10. The answer is 10."), 1)
  return CalculatorOutcome(text, 0)


def first_majority(answers_seen):
  """Most frequent answer, ties to the earliest; None if nothing found."""
  found = [a for a in answers_seen if a is not None]
  if not found:
    return None
  counts = collections.Counter(found)
  best = max(counts.values())
  return next(a for a in found if counts[a] == best)


def _task(indices=range(5)) -> evaluator.EvaluationTask:
  examples = tuple(_number_example(i, GOLD[i]) for i in indices)
  return evaluator.EvaluationTask(
      name="toy", examples=examples,
      inputs=tuple(f"q{i}" for i in indices), dataset="toy", split="test")


def _scorer(calculator=None, vote=None) -> Scorer:
  return Scorer(judge=answers.judge, match=answers.answers_match,
                calculator=calculator, vote=vote)


def test_scores_equal_a_hand_check_of_saved_predictions(tmp_path):
  predictor = FakePredictor({f"q{i}": [OUTPUTS[i]] for i in OUTPUTS})
  summary = evaluator.evaluate_task(
      _task(), predictor, _scorer(), tmp_path, batch_size=2,
      settings={"checkpoint": "fake"})
  assert predictor.batches_seen == [0, 1, 2]

  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  assert [r["id"] for r in records] == [f"toy/test/{i}" for i in range(5)]
  by_index = {int(r["id"].rsplit("/", 1)[1]): r for r in records}
  # Hand check: 0 right (marker), 1 wrong (11), 2 right (fallback), 3 none,
  # 4 wrong (4 != 5).
  assert [by_index[i]["correct"] for i in range(5)] == [
      True, False, True, False, False]
  assert [by_index[i]["predicted"] for i in range(5)] == [
      "7", "11", "12", None, "4"]
  assert by_index[2]["rule"] == "last_number"
  assert by_index[3]["rule"] == "none"
  assert by_index[0]["rule"].startswith("marker_")
  assert by_index[0]["gold"] == "7"
  assert by_index[0]["question"] == "question 0?"
  assert by_index[0]["input"] == "q0"
  assert by_index[0]["generated"] == OUTPUTS[0]
  assert by_index[0]["num_words"] == 9  # "3 + 4 = 7. The answer is 7."

  assert summary["accuracy"]["correct"] == 2
  assert summary["accuracy"]["total"] == 5
  assert summary["accuracy"]["accuracy"] == pytest.approx(0.4)
  low, high = summary["accuracy"]["interval"]
  assert low < 0.4 < high
  # Found = stated after a marker; record 2's last-number fallback is apart.
  assert summary["answer_found_rate"] == pytest.approx(3 / 5)
  assert summary["answer_fallback_rate"] == pytest.approx(1 / 5)
  words = [len(OUTPUTS[i].split()) for i in range(5)]
  assert summary["mean_generated_words"] == pytest.approx(sum(words) / 5)
  assert summary["mean_generated_tokens"] == pytest.approx(sum(words) / 5 + 1)
  assert summary["rule_counts"]["none"] == 1
  assert sum(summary["rule_counts"].values()) == 5
  assert "calculator" not in summary
  saved = json.loads((tmp_path / "task_summary.json").read_text())
  assert saved["accuracy"] == summary["accuracy"]


def test_killed_run_resumes_at_batch_boundary_without_duplicates(tmp_path):
  outputs = {f"q{i}": [OUTPUTS[i]] for i in OUTPUTS}
  settings = {"checkpoint": "fake"}
  with pytest.raises(KeyboardInterrupt):
    evaluator.evaluate_task(_task(), FakePredictor(outputs, fail_at_batch=2),
                            _scorer(), tmp_path, batch_size=2,
                            settings=settings)
  partial = tmp_path / predictions_lib.PARTIAL_PREDICTIONS_FILE
  assert len(partial.read_text().splitlines()) == 4
  assert not (tmp_path / "predictions.jsonl").exists()
  # A torn write: half a line after the last complete batch.
  with open(partial, "a") as handle:
    handle.write('{"id": "toy/test/4", "gene')

  resumed = FakePredictor(outputs)
  summary = evaluator.evaluate_task(_task(), resumed, _scorer(), tmp_path,
                                    batch_size=2, settings=settings)
  assert resumed.batches_seen == [2]
  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  assert [r["id"] for r in records] == [f"toy/test/{i}" for i in range(5)]
  assert summary["accuracy"]["correct"] == 2

  # Complete and unchanged: nothing is decoded again.
  again = FakePredictor(outputs)
  evaluator.evaluate_task(_task(), again, _scorer(), tmp_path, batch_size=2,
                          settings=settings)
  assert again.batches_seen == []
  # Another checkpoint: the old predictions are discarded, not mixed in.
  other = FakePredictor(outputs)
  evaluator.evaluate_task(_task(), other, _scorer(), tmp_path, batch_size=2,
                          settings={"checkpoint": "another"})
  assert other.batches_seen == [0, 1, 2]


def test_calculator_accuracy_reported_beside_plain_accuracy(tmp_path):
  predictor = FakePredictor({f"q{i}": [OUTPUTS[i]] for i in OUTPUTS})
  summary = evaluator.evaluate_task(
      _task(), predictor, _scorer(calculator=fake_calculator), tmp_path,
      batch_size=5, settings={})
  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  fixed = records[1]
  assert fixed["correct"] is False
  assert fixed["calculator_correct"] is True
  assert fixed["calculator_predicted"] == "10"
  assert fixed["calculator_corrections"] == 1
  assert "= 10" in fixed["calculator_text"]
  assert records[0]["calculator_text"] == records[0]["generated"]
  assert summary["accuracy"]["correct"] == 2
  assert summary["calculator"]["accuracy"]["correct"] == 3
  assert summary["calculator"]["fixed"] == 1
  assert summary["calculator"]["broken"] == 0
  assert summary["calculator"]["examples_with_corrections"] == 1


def test_self_consistency_vote_and_accuracy_versus_k(tmp_path):
  # Three samples per question; gold is 7 for q0 and 10 for q1.
  samples = {
      "q0": ["The answer is 8.", "The answer is 7.", "The answer is 7."],
      "q1": ["The answer is 10.", "The answer is 3.", "The answer is 4."],
  }
  task = evaluator.EvaluationTask(
      name="toy", examples=(_number_example(0, "7"), _number_example(1, "10")),
      inputs=("q0", "q1"), dataset="toy", split="test")
  summary = evaluator.evaluate_task(
      task, FakePredictor(samples), _scorer(vote=first_majority), tmp_path,
      batch_size=2, settings={})
  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  assert records[0]["predicted"] == "7" and records[0]["correct"] is True
  # The representative chain is one that gave the voted answer.
  assert records[0]["generated"] == "The answer is 7."
  assert records[0]["vote_counts"] == {"8": 1, "7": 2}
  assert len(records[0]["samples"]) == 3
  # q1: three different answers, tie -> the first (10), which is right.
  assert records[1]["predicted"] == "10" and records[1]["correct"] is True
  assert summary["num_samples"] == 3
  # Correct samples: q0 two of three (7, 7), q1 one of three (10).
  assert summary["sample_accuracy"] == pytest.approx(3 / 6)
  curve = summary["self_consistency"]
  assert curve["k"] == [1, 2, 3]
  # k=1: q0 wrong (8), q1 right (10). k=2: q0 tie 8/7 -> 8 (wrong), q1 right.
  # k=3: both right.
  assert curve["accuracy"] == pytest.approx([0.5, 0.5, 1.0])
