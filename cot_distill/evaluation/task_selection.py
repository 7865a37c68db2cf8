"""Which examples each requested evaluation task decodes.

Task specs on the command line:
  gsm8k               the dataset's evaluation split (EVAL_SPLITS, else "test")
  strategyqa:dev      an explicit split
  NAME=FILE.jsonl     examples from a JSONL file of `Example.to_dict()` lines
                      (generated data, e.g. coin flips with more people than
                      in training); a bare FILE.jsonl is named by its stem.

Held-out splits (documented choices, used when no split is given):
  strategyqa     "dev": eladsegal's 10% split of the official StrategyQA train
                 set (the official test set has no public labels). It shares
                 no question with "train" (checked by the leakage check on
                 every evaluation), but every dev question is also in
                 strategyqa_bigbench, so never train on that copy and
                 evaluate here.
  commonsenseqa  "dev": the usual test set (test labels are not public).
Cross-validation datasets (CROSS_VALIDATION) evaluate fold k's held-out part
with the fold-k checkpoint; see cross_validation.py.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

from cot_distill.data.example import Example
from cot_distill.evaluation import predictions as predictions_lib

EVAL_SPLITS = {"strategyqa": "dev", "commonsenseqa": "dev"}
# dataset -> (held-out split of fold k, training split(s) of fold k).
CROSS_VALIDATION = {
    "mawps": ("fold{fold}_dev", ("fold{fold}_train",)),
    "asdiv_a": ("fold{fold}", tuple(f"fold{{other_{k}}}" for k in range(4))),
    "asdiv": ("fold{fold}", tuple(f"fold{{other_{k}}}" for k in range(4))),
}
NUM_FOLDS = 5
# Only with a `{fold}` checkpoint is asdiv cross-validated; plain asdiv is
# evaluated on its whole set ("test").
_CROSS_VALIDATION_ONLY = ("mawps", "asdiv_a")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A resolved task: output name, dataset, split, and where examples come from."""

  name: str
  dataset: str
  split: str
  fold: int | None = None
  examples_file: str | None = None

  def load(self, data_dir: str | None = None,
           limit: int | None = None) -> list[Example]:
    if self.examples_file is not None:
      examples = read_examples_file(pathlib.Path(self.examples_file))
    else:
      from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
      examples = registry.load(self.dataset, self.split, data_dir)
    return examples[:limit] if limit else examples


def read_examples_file(path: pathlib.Path) -> list[Example]:
  """Examples from a JSONL file; an error names the file and line."""
  examples = []
  for number, row in enumerate(predictions_lib.read_jsonl(path), start=1):
    try:
      examples.append(Example.from_dict(row))
    except (ValueError, TypeError) as error:
      raise ValueError(f"{path}: record {number} is not an Example ({error})") from error
  if not examples:
    raise ValueError(f"{path}: no examples")
  return examples


def fold_splits(dataset: str, fold: int) -> tuple[str, tuple[str, ...]]:
  """(held-out split, training splits) of `fold` for a CV dataset."""
  held_out, training = CROSS_VALIDATION[dataset]
  others = [k for k in range(NUM_FOLDS) if k != fold]
  names = {"fold": fold, **{f"other_{i}": k for i, k in enumerate(others)}}
  return held_out.format(**names), tuple(t.format(**names) for t in training)


def default_split(dataset: str) -> str:
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  available = registry.splits(dataset)
  if dataset in _CROSS_VALIDATION_ONLY:
    raise ValueError(
        f"{dataset} has no test split, only cross-validation folds; pass a "
        "checkpoint with a {fold} placeholder (one model per fold) or name a "
        f"split explicitly ({dataset}:{available[0]}); splits: {', '.join(available)}")
  if dataset in EVAL_SPLITS:
    return EVAL_SPLITS[dataset]
  if "test" in available:
    return "test"
  raise ValueError(f"{dataset} has no test split; name one ({dataset}:SPLIT) "
                   f"from: {', '.join(available)}")


def resolve(task_specs: Sequence[str], *, split: str | None = None,
            cross_validation: bool = False) -> list[TaskSpec]:
  """TaskSpecs for command-line task specs (see the module docstring).

  With `cross_validation`, CV datasets expand into one task per fold named
  "<dataset>/fold<k>"; other datasets are rejected, since a per-fold
  checkpoint has no meaning for them.
  """
  resolved: list[TaskSpec] = []
  for spec in task_specs:
    spec = spec.strip()
    if not spec:
      continue
    if spec.endswith(".jsonl") or "=" in spec:
      name, _, path = spec.rpartition("=")
      name = name or pathlib.Path(path).stem
      if cross_validation:
        raise ValueError(f"task {spec}: an examples file cannot be "
                         "cross-validated with a {fold} checkpoint")
      resolved.append(TaskSpec(name=name, dataset=name, split="file",
                               examples_file=path))
      continue
    dataset, _, explicit_split = spec.partition(":")
    if cross_validation:
      if dataset not in CROSS_VALIDATION:
        raise ValueError(
            f"task {dataset}: a checkpoint with a {{fold}} placeholder is for "
            f"cross-validated datasets ({', '.join(CROSS_VALIDATION)}); "
            "evaluate other tasks in a separate run")
      for fold in range(NUM_FOLDS):
        held_out, _ = fold_splits(dataset, fold)
        resolved.append(TaskSpec(name=f"{dataset}/fold{fold}", dataset=dataset,
                                 split=held_out, fold=fold))
      continue
    chosen = explicit_split or split or default_split(dataset)
    name = dataset if not explicit_split else f"{dataset}_{explicit_split}"
    resolved.append(TaskSpec(name=name, dataset=dataset, split=chosen))
  names = [t.name for t in resolved]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"tasks named twice: {duplicates}")
  if not resolved:
    raise ValueError("no tasks to evaluate")
  return resolved
