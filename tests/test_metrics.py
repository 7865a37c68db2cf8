"""Eval metrics: exact values on known predictions, through our scorer and seqio's Evaluator."""

from __future__ import annotations

import pytest
import seqio

from cot_distill import metrics
from cot_distill import seqio_tasks
from cot_distill import vocabularies
from cot_distill.data.example import Example

EXAMPLES = [
    Example("gsm8k/test/0", "gsm8k", "test", "How many clips?", "72", "number"),
    Example("gsm8k/test/1", "gsm8k", "test", "How many clips now?", "72", "number"),
    Example("gsm8k/test/2", "gsm8k", "test", "How many eggs?", "18", "number"),
    Example("gsm8k/test/3", "gsm8k", "test", "How many cats?", "4", "number"),
    Example("aqua/test/0", "aqua", "test", "Which is largest?", "C", "multiple_choice",
            choices=(("A", "12"), ("B", "7"), ("C", "40"))),
    Example("strategyqa/dev/0", "strategyqa", "dev", "Is ice cold?", "yes", "yes_no"),
]
# (prediction, rule expected to fire, correct?)
PREDICTIONS = [
    ("48 / 2 = 24 in May, 48 + 24 = 72 in total. The answer is 72.", "marker_number", True),
    # No answer sentence: only the fallback rule (last number) finds it.
    ("Natalia sold 48 + 24 = 72 clips altogether", "last_number", True),
    ("She has 16 - 3 - 4 = 9 eggs. The answer is 9.", "marker_number", False),
    ("I cannot tell.", "none", False),
    ("The largest number is 40", "last_choice_text", True),
    ("Yes, ice is frozen water", "last_yes_no", True),
]
# Found = stated after a marker (predictions 0 and 2); the three fallbacks
# (1, 4, 5) are reported apart; "I cannot tell." is neither.
EXPECTED = {"accuracy": 100.0 * 4 / 6, "answer_found_rate": 100.0 * 2 / 6,
            "answer_fallback_rate": 100.0 * 3 / 6, "num_examples": 6.0}
TASK = "cot_distill_test.metrics_eval"


@pytest.fixture(scope="module")
def task(spm_path):
  return seqio_tasks.register_examples_eval_task(
      TASK, EXAMPLES, vocabularies.get_vocabulary(spm_path), split="test")


def test_postprocess_runs_the_shared_judge_per_prediction(task):
  examples = list(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
  for example, (text, rule, correct) in zip(examples, PREDICTIONS):
    out = metrics.postprocess_answer(text, example=example)
    assert (out["rule"], out["correct"]) == (rule, correct), text
    assert out["id"] == example["id"].decode()
  gold = metrics.postprocess_answer("The answer is C.", example=examples[4], is_target=True)
  assert gold == {"id": "aqua/test/0", "answer": "C", "answer_type": "multiple_choice",
                  "choices": (("A", "12"), ("B", "7"), ("C", "40"))}


def test_score_predictions_exact(task):
  by_id = {e.id: text for e, (text, _, _) in zip(EXAMPLES, PREDICTIONS)}
  assert metrics.score_predictions(task, by_id, split="test") == EXPECTED
  assert metrics.score_predictions(TASK, [p[0] for p in PREDICTIONS], "test") == EXPECTED
  with pytest.raises(KeyError, match="no prediction for 1"):
    metrics.score_predictions(task, dict(list(by_id.items())[1:]), split="test")


def test_seqio_evaluator_gives_the_same_numbers(task):
  """The real seqio.Evaluator path (predictions encoded, decoded, postprocessed)."""
  vocabulary = task.output_features["targets"].vocabulary

  def predict_fn(dataset, model_feature_lengths=None):
    """Known outputs as a model gives them: EOS-terminated, padded to one length."""
    del dataset, model_feature_lengths
    tokens = [vocabulary.encode(text) + [vocabulary.eos_id] for text, _, _ in PREDICTIONS]
    width = max(len(t) for t in tokens)
    return list(enumerate(t + [0] * (width - len(t)) for t in tokens))

  evaluator = seqio.Evaluator(
      TASK, feature_converter=seqio.EncDecFeatureConverter(pack=False),
      eval_split="test")
  results = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn,
                               score_fn=lambda *a, **k: [])[0].result()
  assert results[TASK] == EXPECTED


def test_answer_accuracy_checks_alignment_and_empty_input():
  target = {"id": "a", "answer": "1", "answer_type": "number", "choices": None}
  prediction = {"id": "b", "prediction": "1", "predicted": "1", "rule": "last_number",
                "correct": True}
  with pytest.raises(ValueError, match="misaligned"):
    metrics.answer_accuracy([target], [prediction])
  with pytest.raises(ValueError, match="1 targets but 0 predictions"):
    metrics.answer_accuracy([target], [])
  assert metrics.answer_accuracy([], [])["num_examples"] == 0.0


def test_postprocess_refuses_what_it_cannot_judge(task):
  example = next(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
  with pytest.raises(ValueError, match="needs the example"):
    metrics.postprocess_answer("The answer is 72.")
  with pytest.raises(TypeError, match="self-consistency"):
    metrics.postprocess_answer(["a", "b"], example=example)


def test_rule_counts():
  outputs = [{"rule": r} for r in ("last_number", "none", "last_number")]
  assert metrics.rule_counts(outputs) == {"last_number": 2, "none": 1}


def test_gibberish_with_numbers_is_not_an_answer_found(task):
  """A random-init model's output: numbers, but no answer statement."""
  examples = list(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
  gibberish = ["lol 72 72 the cat 3", "sat sat 9 on on", "18 18 18", "four 40",
               "(C) x y", "no yes no"]
  targets = [metrics.postprocess_answer("", example=e, is_target=True) for e in examples]
  predictions = [metrics.postprocess_answer(text, example=e)
                 for text, e in zip(gibberish, examples)]
  scores = metrics.answer_accuracy(targets, predictions)
  assert scores["answer_found_rate"] == 0.0
  assert scores["answer_fallback_rate"] == 100.0
  # The fallbacks still score (a lucky "72" is correct) but are not "found".
  assert scores["accuracy"] > 0.0
