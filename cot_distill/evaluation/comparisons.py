"""Numbers that compare evaluation runs: accuracy rows and paired differences.

report.py turns these into tables and plots; they are kept apart so the
comparisons can be used (and tested) without rendering anything.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation import statistics
from cot_distill.evaluation.runs import Run

# Paired comparisons grow as runs^2; above this many runs per task we show
# each run against the first only.
MAX_RUNS_FOR_ALL_PAIRS = 4


def _is_nan(value: Any) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def _cross_validation_row(run: Run, dataset: str, cv: dict[str, Any]
                          ) -> dict[str, Any]:
  """A CV dataset as one accuracy row: the fold mean and its t interval
  (collapsed to the mean when there is a single fold)."""
  mean = cv["fold_mean"]
  low, high = mean["interval"]
  low = mean["mean"] if _is_nan(low) else low
  high = mean["mean"] if _is_nan(high) else high
  return {
      "task": f"{dataset} ({len(mean['fold_accuracies'])}-fold CV)",
      "model": run.label, "run": str(run.path), "dataset": dataset,
      "format": run.data.get("target_format"),
      "decode": decode_description(run), "split": "cross-validation",
      "n": cv["pooled"]["total"], "accuracy": mean["mean"],
      "low": low, "high": high,
      "formatted": (f"{100 * mean['mean']:.1f}% "
                    f"[{100 * low:.1f}, {100 * high:.1f}]"),
      "answer_found_rate": None, "faithful": None, "mean_generated_words": None,
      "mean_generated_tokens": None, "calculator": None,
      "calculator_fixed": None, "calculator_broken": None,
  }


def decode_description(run: Run) -> str:
  decode = run.data.get("decode") or {}
  method = decode.get("method", "greedy")
  if decode.get("num_samples", 1) > 1:
    return (f"{method} k={decode['num_samples']} "
            f"T={decode.get('temperature')}")
  return method


def plain_tasks(run: Run) -> list[tuple[str, dict]]:
  """Tasks that are not single cross-validation folds."""
  return [(name, task) for name, task in run.data["tasks"].items()
          if task.get("fold") is None]


def accuracy_rows(evaluations: Sequence[Run]) -> list[dict[str, Any]]:
  """One row per (task, evaluation run), CV datasets as their fold mean."""
  rows = []
  for run in evaluations:
    model = run.label
    for name, task in plain_tasks(run):
      result = statistics.accuracy_from_dict(task["accuracy"])
      calculator = task.get("calculator", {}).get("accuracy")
      rows.append({
          "task": name, "model": model, "run": str(run.path),
          "format": run.data.get("target_format"),
          "decode": decode_description(run),
          "dataset": task.get("dataset"), "split": task.get("split"),
          "n": result.total, "accuracy": result.value,
          "low": result.low, "high": result.high,
          "formatted": result.format(),
          "answer_found_rate": task.get("answer_found_rate"),
          "faithful": (statistics.accuracy_from_dict(task["faithful_accuracy"]).format()
                       if task.get("faithful_accuracy") else None),
          "mean_generated_words": task.get("mean_generated_words"),
          "mean_generated_tokens": task.get("mean_generated_tokens"),
          "calculator": (statistics.accuracy_from_dict(calculator).format()
                         if calculator else None),
          "calculator_fixed": task.get("calculator", {}).get("fixed"),
          "calculator_broken": task.get("calculator", {}).get("broken"),
      })
    for dataset, cv in (run.data.get("cross_validation") or {}).items():
      rows.append(_cross_validation_row(run, dataset, cv))
  return rows


def load_task_predictions(run: Run, task_name: str
                           ) -> list[dict[str, Any]] | None:
  relative = run.data["tasks"][task_name].get("predictions")
  if not relative:
    return None
  path = run.path / relative
  if not path.is_file():
    path = run.path / task_name / predictions_lib.PREDICTIONS_FILE
  return predictions_lib.read_predictions(path) if path.is_file() else None


def paired_comparisons(evaluations: Sequence[Run]) -> list[dict[str, Any]]:
  """Accuracy differences between runs scored on the same examples.

  Uses a paired bootstrap over examples (see statistics.py), only where
  both runs saved predictions for exactly the same example ids.
  """
  by_task: dict[str, list[Run]] = {}
  for run in evaluations:
    for name, _ in plain_tasks(run):
      by_task.setdefault(name, []).append(run)
  comparisons = []
  for task_name, task_runs in by_task.items():
    if len(task_runs) < 2:
      continue
    if len(task_runs) <= MAX_RUNS_FOR_ALL_PAIRS:
      pairs = list(itertools.combinations(task_runs, 2))
    else:
      pairs = [(task_runs[0], other) for other in task_runs[1:]]
    for first, second in pairs:
      first_records = load_task_predictions(first, task_name)
      second_records = load_task_predictions(second, task_name)
      if not first_records or not second_records:
        continue
      first_by_id = {r["id"]: bool(r["correct"]) for r in first_records}
      second_by_id = {r["id"]: bool(r["correct"]) for r in second_records}
      if set(first_by_id) != set(second_by_id):
        continue
      ids = sorted(first_by_id)
      # The more accurate run first, so differences read as "A beats B by".
      if sum(second_by_id.values()) > sum(first_by_id.values()):
        first, second = second, first
        first_by_id, second_by_id = second_by_id, first_by_id
      difference, low, high = statistics.paired_difference_interval(
          [first_by_id[i] for i in ids], [second_by_id[i] for i in ids])
      comparisons.append({
          "task": task_name, "first": first.label,
          "second": second.label, "n": len(ids),
          "difference": difference, "interval": [low, high],
          # Examples only one of the two gets right (McNemar's discordant pairs).
          "only_first_correct": sum(1 for i in ids
                                    if first_by_id[i] and not second_by_id[i]),
          "only_second_correct": sum(1 for i in ids
                                     if second_by_id[i] and not first_by_id[i]),
      })
  return comparisons
