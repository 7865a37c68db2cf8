"""5-fold cross-validation for MAWPS and ASDiv-A (one model per fold).

These benchmarks have no test split; as in the paper, a student is trained on
four folds and scored on the fifth, five times. On the command line the
checkpoint carries a `{fold}` placeholder:

    cot-distill evaluate --checkpoint runs/mawps_fold{fold} --tasks mawps,asdiv_a

Each fold's predictions go to OUT/<dataset>/fold<k>/, and summary.json gets a
"cross_validation" entry per dataset with the mean of fold accuracies (t
interval over folds) and the pooled accuracy (every problem scored once,
Wilson interval).
"""

from __future__ import annotations

from typing import Any, Mapping

from cot_distill.evaluation import statistics

PLACEHOLDER = "{fold}"


def is_template(checkpoint: str | None) -> bool:
  return bool(checkpoint) and PLACEHOLDER in str(checkpoint)


def fold_checkpoint(template: str, fold: int) -> str:
  return str(template).replace(PLACEHOLDER, str(fold))


def _pooled(fold_summaries: list[Mapping[str, Any]], key_path: tuple[str, ...]
            ) -> dict[str, Any] | None:
  correct = total = 0
  for summary in fold_summaries:
    node: Any = summary
    for key in key_path:
      node = node.get(key) if isinstance(node, Mapping) else None
    if node is None:
      return None
    correct += node["correct"]
    total += node["total"]
  low, high = statistics.wilson_interval(correct, total)
  return statistics.Accuracy(correct, total, low, high).to_dict()


def aggregate(task_summaries: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, dict[str, Any]]:
  """Per-dataset CV entries from the per-fold task summaries."""
  by_dataset: dict[str, list[Mapping[str, Any]]] = {}
  for summary in task_summaries.values():
    if summary.get("fold") is not None:
      by_dataset.setdefault(summary["dataset"], []).append(summary)
  results = {}
  for dataset, folds in by_dataset.items():
    folds = sorted(folds, key=lambda s: s["fold"])
    entry: dict[str, Any] = {
        "folds": [s["task"] for s in folds],
        "fold_mean": statistics.fold_mean(
            [s["accuracy"]["accuracy"] for s in folds]).to_dict(),
        "pooled": _pooled(folds, ("accuracy",)),
    }
    if all("calculator" in s for s in folds):
      entry["calculator"] = {
          "fold_mean": statistics.fold_mean(
              [s["calculator"]["accuracy"]["accuracy"] for s in folds]).to_dict(),
          "pooled": _pooled(folds, ("calculator", "accuracy")),
      }
    results[dataset] = entry
  return results
