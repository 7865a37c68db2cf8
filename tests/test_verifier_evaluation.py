"""Faithful-CoT accuracy: a right answer from a chain that passes the verifier."""

from __future__ import annotations

import collections

import pytest

from cot_distill.commands import evaluate as evaluate_command
from cot_distill.data.example import AnswerType, Example
from cot_distill.evaluation import evaluator
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation.predictions import Generation

# Gold answers 7, 10, 10, 3; generated chains: sound and right, right after a
# wrong equation, wrong, right but contradicting its own conclusion.
OUTPUTS = {
    0: "3 + 4 = 7. The answer is 7.",
    1: "5 * 3 = 10. The answer is 10.",
    2: "5 * 2 = 10. The answer is 11.",
    3: "So the answer is 4. 1 + 2 = 3. The answer is 3.",
}
GOLD = {0: "7", 1: "10", 2: "10", 3: "3"}


class _Predictor:
  def __init__(self, samples):
    self.samples = samples

  def __call__(self, inputs, *, batch_index):
    del batch_index
    return [[Generation(text, num_tokens=3) for text in self.samples[i]] for i in inputs]


def _task():
  examples = tuple(Example(id=f"gsm8k/test/{i}", dataset="gsm8k", split="test",
                           question=f"question {i}?", answer=GOLD[i],
                           answer_type=AnswerType.NUMBER) for i in OUTPUTS)
  return evaluator.EvaluationTask(name="gsm8k", examples=examples,
                                  inputs=tuple(f"q{i}" for i in OUTPUTS),
                                  dataset="gsm8k", split="test")


def test_faithful_accuracy_beside_accuracy(tmp_path):
  predictor = _Predictor({f"q{i}": [text] for i, text in OUTPUTS.items()})
  summary = evaluator.evaluate_task(_task(), predictor, evaluator.default_scorer(verify=True),
                                    tmp_path, batch_size=2, settings={"checkpoint": "fake"})
  assert summary["accuracy"]["correct"] == 3
  assert summary["faithful_accuracy"]["correct"] == 1
  assert summary["faithful_accuracy"]["accuracy"] == pytest.approx(0.25)
  assert summary["unfaithful_correct"] == {"arithmetic_error": 1, "step_inconsistent": 1}
  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  assert [r["faithful"] for r in records] == [True, False, False, False]
  assert records[1]["verification"]["step"] == "5 * 3 = 10"
  assert "verification" not in records[2]  # Wrong answers are not verified.


def test_answer_only_students_get_no_faithful_accuracy(tmp_path):
  predictor = _Predictor({f"q{i}": [text] for i, text in OUTPUTS.items()})
  summary = evaluator.evaluate_task(_task(), predictor, evaluator.default_scorer(),
                                    tmp_path, batch_size=4, settings={"checkpoint": "fake"})
  assert "faithful_accuracy" not in summary


def test_voted_record_is_faithful_only_with_a_sound_representative(tmp_path):
  samples = {"q0": ["3 + 5 = 7. The answer is 7.", "3 + 4 = 7. The answer is 7.", "8"],
             "q1": ["5 * 2 = 10. The answer is 10."] * 3,
             "q2": ["The answer is 11."] * 3, "q3": ["1 + 2 = 3. The answer is 3."] * 3}

  def vote(found):
    found = [a for a in found if a is not None]
    return collections.Counter(found).most_common(1)[0][0] if found else None

  scorer = evaluator.default_scorer(verify=True)
  scorer = predictions_lib.Scorer(judge=scorer.judge, match=scorer.match, vote=vote,
                                  verify=scorer.verify)
  summary = evaluator.evaluate_task(_task(), _Predictor(samples), scorer, tmp_path,
                                    batch_size=4, settings={"checkpoint": "fake"})
  records = predictions_lib.read_predictions(tmp_path / "predictions.jsonl")
  # q0's vote is 7, but its representative (the first sample reaching 7) is
  # the chain with 3 + 5 = 7: right, not faithful.
  assert [r["correct"] for r in records] == [True, True, False, True]
  assert [r["faithful"] for r in records] == [False, True, False, True]
  assert summary["faithful_accuracy"]["correct"] == 2


def test_printed_table_shows_faithful_accuracy(tmp_path):
  predictor = _Predictor({f"q{i}": [text] for i, text in OUTPUTS.items()})
  task_summary = evaluator.evaluate_task(
      _task(), predictor, evaluator.default_scorer(verify=True), tmp_path, batch_size=4,
      settings={"checkpoint": "fake"})
  table = evaluate_command.format_table({"label": "student", "target_format": "cot",
                                         "tasks": {"gsm8k": task_summary}})
  assert "faithful CoT 25.0%" in table
