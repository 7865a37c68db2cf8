"""Answer accuracy for SeqIO eval tasks, judged exactly as the teacher filter judges.

SeqIO hands a task's `postprocess_fn` every decoded prediction together with
its preprocessed example (`example=`), then calls the metric functions on the
lists of postprocessed targets and predictions. We use that to run the ONE
shared `cot_distill.answers.judge` on each prediction against the example's
kept gold fields (id, answer, answer_type, choices), so a CoT the filter would
keep is exactly a prediction the evaluation counts correct.

  postprocess_answer("... The answer is 18.", example=ex)      (prediction)
    -> {"id": "gsm8k/test/0", "prediction": "... The answer is 18.",
        "predicted": "18", "rule": "marker_number", "correct": True}
  postprocess_answer("The answer is 18.", example=ex, is_target=True)
    -> {"id": "gsm8k/test/0", "answer": "18", "answer_type": "number",
        "choices": None}
  answer_accuracy(targets, predictions)
    -> {"accuracy": 100.0, "answer_found_rate": 100.0,
        "answer_fallback_rate": 0.0, "num_examples": 1.0}

Percentages, like `seqio.metrics.accuracy` and T5X's logs.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping, Sequence

from cot_distill import answers
from cot_distill import preprocessors


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "item"):  # numpy scalar
    return _text(value.item())
  return str(value)


def gold_fields(example: Mapping[str, Any]) -> dict[str, Any]:
  """The scoring fields of a preprocessed example, as Python values."""
  missing = [k for k in preprocessors.SCORING_FEATURE_KEYS if k not in example]
  if missing:
    raise KeyError(f"example lacks scoring field(s) {missing}; eval tasks must "
                   f"keep {preprocessors.SCORING_FEATURE_KEYS}")
  return {"id": _text(example["id"]),
          "answer": _text(example["answer"]),
          "answer_type": _text(example["answer_type"]),
          "choices": preprocessors.parse_choices(_text(example["choices"]))}


def postprocess_answer(output: Any, example: Mapping[str, Any] | None = None,
                       is_target: bool = False) -> dict[str, Any]:
  """SeqIO postprocess_fn: the gold fields (targets) or the judge's verdict.

  Args:
    output: decoded text (str or bytes) of the target or the prediction.
    example: the preprocessed example, which SeqIO's evaluator always passes.
    is_target: True when `output` is the target text.

  Returns:
    For targets, `gold_fields(example)`; for predictions, the verdict of
    `answers.judge(output, gold, answer_type, choices)` with the raw text.
  """
  if example is None:
    raise ValueError("postprocess_answer needs the example (gold answer); "
                     "SeqIO's Evaluator passes it as `example=`")
  gold = gold_fields(example)
  if is_target:
    return gold
  if isinstance(output, (list, tuple)):
    raise TypeError("several decodes per example: score self-consistency with "
                    "cot_distill.evaluation, not the SeqIO metric")
  text = _text(output)
  verdict = answers.judge(text, gold["answer"], gold["answer_type"], gold["choices"])
  return {"id": gold["id"], "prediction": text, "predicted": verdict.predicted,
          "rule": verdict.rule, "correct": bool(verdict.correct)}


def answer_accuracy(targets: Sequence[Mapping[str, Any]],
                    predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Accuracy and answer-found rate (percent) over postprocessed pairs.

  accuracy: share of predictions the judge counts correct.
  answer_found_rate: share whose answer a marker rule found ("The answer is
    X"), which separates "wrong answer" from "no answer at all". A
    fallback (the last number in text without any answer statement) is not
    an answer found: a random model's gibberish holds numbers.
  answer_fallback_rate: share whose answer only a fallback rule found.
  """
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
  for target, prediction in zip(targets, predictions):
    if target["id"] != prediction["id"]:
      raise ValueError(f"misaligned prediction: target {target['id']!r}, "
                       f"prediction {prediction['id']!r}")
  count = len(predictions)
  if count == 0:
    return {"accuracy": 0.0, "answer_found_rate": 0.0,
            "answer_fallback_rate": 0.0, "num_examples": 0.0}
  correct = sum(1 for p in predictions if p["correct"])
  sources = collections.Counter(answers.answer_source(p["rule"]) for p in predictions)
  return {"accuracy": 100.0 * correct / count,
          "answer_found_rate": 100.0 * sources["marker"] / count,
          "answer_fallback_rate": 100.0 * sources["fallback"] / count,
          "num_examples": float(count)}


def task_examples(task, split: str = "test") -> list[dict[str, Any]]:
  """A task's preprocessed examples in order (numpy), as its Evaluator sees them."""
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(task, str):
    task = seqio.get_mixture_or_task(task)
  return list(task.get_dataset(sequence_length=None, split=split,
                               shuffle=False).as_numpy_iterator())


def score_examples(task, examples: Sequence[Mapping[str, Any]],
                   predictions: Mapping[str, str] | Sequence[str]) -> dict[str, float]:
  """A task's own postprocess_fn and metric_fns on known predictions, no model.

  Does what `seqio.Evaluator` does with decoded outputs (targets and
  predictions postprocessed with their example, then every metric function).

  Args:
    task: a `seqio.Task` (or its registered name).
    examples: the task's preprocessed examples (`task_examples`).
    predictions: prediction text per example id, or a list in example order.

  Returns:
    The merged metric dict, e.g. {"accuracy": 50.0, ...}.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  if isinstance(task, str):
    task = seqio.get_mixture_or_task(task)
  if isinstance(predictions, Mapping):
    ids = [_text(ex["id"]) for ex in examples]
    missing = [i for i in ids if i not in predictions]
    if missing:
      raise KeyError(f"no prediction for {len(missing)} example(s) of {task.name}, "
                     f"e.g. {missing[:3]}")
    texts = [predictions[i] for i in ids]
  else:
    texts = list(predictions)
    if len(texts) != len(examples):
      raise ValueError(f"{len(texts)} predictions for {len(examples)} examples "
                       f"of {task.name}")
  targets = [task.postprocess_fn(_text(ex["targets_pretokenized"]), example=ex,
                                 is_target=True) for ex in examples]
  outputs = [task.postprocess_fn(text, example=ex, is_target=False)
             for text, ex in zip(texts, examples)]
  results: dict[str, float] = {}
  for metric_fn in task.predict_metric_fns:
    results.update(metric_fn(targets, outputs))
  return results


def score_predictions(task, predictions: Mapping[str, str] | Sequence[str],
                      split: str = "test") -> dict[str, float]:
  """`score_examples` over the task's split: score a file of predictions.

  Args:
    task: a `seqio.Task` (or its registered name).
    predictions: prediction text per example id, or a list in dataset order.
    split: the task split the predictions are for.
  """
  return score_examples(task, task_examples(task, split), predictions)


def rule_counts(predictions: Iterable[Mapping[str, Any]]) -> dict[str, int]:
  """How often each extraction rule fired (for reports and debugging)."""
  counts: dict[str, int] = {}
  for prediction in predictions:
    counts[prediction["rule"]] = counts.get(prediction["rule"], 0) + 1
  return counts
