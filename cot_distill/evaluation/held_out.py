"""Is the evaluated split really held out? The leakage check, per evaluation.

Every evaluation compares the questions it scores against what the model
could have trained on, with the data package's leakage check
(`cot_distill.data.leakage.find_overlaps`, normalised question text):

1. the same dataset's training split(s): the registry's `disjoint_pairs`
   partner of the evaluated split (strategyqa dev vs train, gsm8k test vs
   train), or fold k's training part for cross-validation;
2. the checkpoint's actual training data when it can be found: records or
   examples files passed as `train_data` (annotation run directories,
   records.jsonl, Example JSONL), and the training task named in
   model_config.json when that SeqIO task is registered in this process.

Each comparison becomes one summary entry with a verdict: "ok" (no shared
question) or "LEAK" (the score is not a held-out score).
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterable, Mapping, Sequence

from cot_distill.data.example import Example
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation import task_selection

Group = tuple[str, str]


def _records_file(path: pathlib.Path) -> pathlib.Path:
  if path.is_dir():
    candidate = path / "records.jsonl"
    if not candidate.is_file():
      raise FileNotFoundError(f"{path}: no records.jsonl (an annotation run "
                              "directory or a JSONL file is expected)")
    return candidate
  return path


def _example_from_row(row: Mapping[str, Any], where: str) -> Example:
  """An Example from a CoT record / Example dict / seqio row, choices dropped
  (the check compares question text only)."""
  try:
    return Example(id=str(row["id"]), dataset=str(row.get("dataset", "")),
                   split=str(row.get("split", "")), question=str(row["question"]),
                   answer=str(row.get("answer", "")),
                   answer_type=row.get("answer_type") or "number")
  except (KeyError, ValueError) as error:
    raise ValueError(f"{where}: not a record with id and question ({error})") from error


def examples_from_paths(paths: Iterable[str | pathlib.Path]
                        ) -> dict[Group, list[Example]]:
  """Training examples from run dirs / JSONL files, grouped by source file."""
  groups: dict[Group, list[Example]] = {}
  for raw in paths:
    path = _records_file(pathlib.Path(raw))
    rows = predictions_lib.read_jsonl(path, tolerate_torn_tail=True)
    groups[("training data", str(path))] = [
        _example_from_row(row, f"{path} record {number}")
        for number, row in enumerate(rows, start=1)]
  return groups


def examples_from_training_task(task_name: str | None
                                ) -> tuple[dict[Group, list[Example]], str | None]:
  """The "train" rows of the checkpoint's SeqIO task/mixture, if readable.

  Returns (groups, None) on success, or ({}, reason) when the task is not
  registered here (e.g. registered at run time by another process) or its
  data cannot be read; the summary then says what was not checked.
  """
  if not task_name:
    return {}, "model_config.json names no training task"
  try:
    import seqio  # pylint: disable=g-import-not-at-top
    try:
      import cot_distill_tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      pass
    task_or_mixture = seqio.get_mixture_or_task(task_name)
  except (ValueError, KeyError, ImportError) as error:
    return {}, f"training task {task_name} is not registered here ({error})"
  tasks = getattr(task_or_mixture, "tasks", [task_or_mixture])
  groups: dict[Group, list[Example]] = {}
  for task in tasks:
    source = task.source
    if not hasattr(source, "rows") or "train" not in source.splits:
      return {}, f"task {task.name}: source {source!r} cannot list its rows"
    try:
      rows = source.rows("train")
    except (OSError, ValueError) as error:
      return {}, f"task {task.name}: training data unreadable ({error})"
    groups[("training task", task.name)] = [
        _example_from_row(row, f"task {task.name}") for row in rows]
  return groups, None


def registry_training_splits(spec: task_selection.TaskSpec) -> list[str]:
  """The evaluated dataset's own splits a model may have trained on."""
  if spec.examples_file is not None:
    return []
  if spec.fold is not None:
    return list(task_selection.fold_splits(spec.dataset, spec.fold)[1])
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  info = registry.get_info(spec.dataset)
  partners = []
  for first, second in info.disjoint_pairs:
    if spec.split == first:
      partners.append(second)
    elif spec.split == second:
      partners.append(first)
  return partners


def check(evaluated: Mapping[str, tuple[task_selection.TaskSpec, Sequence[Example]]],
          training: Mapping[str, Mapping[Group, Sequence[Example]]], *,
          data_dir: str | None = None) -> list[dict[str, Any]]:
  """Leakage entries for summary.json (see the module docstring).

  evaluated: task name -> (its spec, the examples scored).
  training: task name -> named groups of the training examples of the
    checkpoint that task was scored with (cross-validation folds each have
    their own); a task missing here is checked against its dataset only.
  """
  from cot_distill.data import leakage  # pylint: disable=g-import-not-at-top
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  groups: dict[Group, Sequence[Example]] = {}
  pairs: list[tuple[Group, Group]] = []
  sources: dict[Group, str] = {}
  for name, (spec, examples) in evaluated.items():
    evaluated_group = ("evaluated", name)
    groups[evaluated_group] = examples
    for split in registry_training_splits(spec):
      group = (spec.dataset, split)
      if group not in groups:
        groups[group] = registry.load(spec.dataset, split, data_dir)
        sources[group] = "same dataset"
      pairs.append((evaluated_group, group))
    for group, training_examples in (training.get(name) or {}).items():
      groups[group] = training_examples
      sources[group] = "training data"
      pairs.append((evaluated_group, group))
  if not pairs:
    return []
  report = leakage.find_overlaps(groups, pairs)
  entries = []
  for overlap in report.overlaps:
    against = overlap.right
    entries.append({
        "evaluated": overlap.left[1],
        "against": f"{against[0]}/{against[1]}"
                   if sources[against] == "same dataset" else against[1],
        "source": sources[against],
        "evaluated_size": overlap.left_size,
        "against_size": overlap.right_size,
        "overlap": overlap.shared,
        "evaluated_examples_seen": overlap.left_examples,
        "sample": [list(pair) for pair in overlap.sample],
        "verdict": "LEAK" if overlap.shared else "ok",
    })
  return entries
