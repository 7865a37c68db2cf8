"""Find and read the run directories a report is built from.

A directory's kind is decided by the files in it, never by its name:
  summary.json                          evaluation run (`cot-distill evaluate`)
  manifest.json (+ records.jsonl)       annotation run (`cot-distill annotate`)
  model_config.json and/or metrics.jsonl   training run (`cot-distill train`)
A directory holding none of them is searched (up to `MAX_SEARCH_DEPTH` levels
down), so `cot-distill report DEMO_DIR` finds every run the demo wrote.

Readers are tolerant of fields they do not know and of missing optional
files, since annotation manifests and trainer metrics are written by other
modules that may grow; what a reader needs and cannot find is an error that
names the file.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
from typing import Any, Iterator

from cot_distill.evaluation import predictions as predictions_lib

EVALUATION = "evaluation"
ANNOTATION = "annotation"
TRAINING = "training"
MAX_SEARCH_DEPTH = 3
# Directories never searched for runs: checkpoints hold thousands of files.
_SKIPPED_PREFIXES = ("checkpoint", "tensorboard", ".", "__")
# Keys of manifest count tables that are totals, not outcomes.
_TOTAL_KEYS = ("total", "generated", "requested", "dropped", "questions",
               "questions_done", "examples", "samples")


@dataclasses.dataclass
class Run:
  """One run directory and what the report needs from it."""

  kind: str
  path: pathlib.Path
  label: str
  data: dict[str, Any]


def detect_kind(directory: pathlib.Path) -> str | None:
  """The run kind of `directory` by its files, or None."""
  if (directory / "summary.json").is_file():
    return EVALUATION
  if (directory / "manifest.json").is_file():
    return ANNOTATION
  if ((directory / "model_config.json").is_file()
      or (directory / "metrics.jsonl").is_file()):
    return TRAINING
  return None


def _skip(directory: pathlib.Path) -> bool:
  # Orbax names step directories by the bare step number.
  return (directory.name.isdigit()
          or any(directory.name.startswith(p) for p in _SKIPPED_PREFIXES))


def discover(paths: list[pathlib.Path]) -> Iterator[tuple[str, pathlib.Path]]:
  """(kind, directory) for each run directory at or below `paths`."""
  seen: set[pathlib.Path] = set()

  def visit(directory: pathlib.Path, depth: int):
    resolved = directory.resolve()
    if resolved in seen:
      return
    seen.add(resolved)
    kind = detect_kind(directory)
    if kind is not None:
      yield kind, directory
      # An evaluation run's task folders are not runs of their own; a
      # training dir may hold evaluation runs below it (e.g. MODEL/eval_*).
      if kind == EVALUATION:
        return
    if depth >= MAX_SEARCH_DEPTH:
      return
    for child in sorted(p for p in directory.iterdir() if p.is_dir()):
      if not _skip(child):
        yield from visit(child, depth + 1)

  for path in paths:
    path = pathlib.Path(path)
    if not path.is_dir():
      raise FileNotFoundError(f"run directory not found: {path}")
    found = list(visit(path, 0))
    if not found:
      raise ValueError(
          f"{path}: no run found (looked for summary.json, manifest.json, "
          f"model_config.json or metrics.jsonl up to {MAX_SEARCH_DEPTH} "
          "levels down)")
    yield from found


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as error:
    raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  """A run's JSON-lines file, which may still be being appended to."""
  return predictions_lib.read_jsonl(path, tolerate_torn_tail=True)


def load_evaluation(directory: pathlib.Path) -> Run:
  summary = _read_json(directory / "summary.json")
  if "tasks" not in summary:
    raise ValueError(f"{directory / 'summary.json'}: no 'tasks' field; is it "
                     "an evaluation summary written by `cot-distill evaluate`?")
  label = summary.get("label") or directory.name
  return Run(EVALUATION, directory, label, summary)


def _count_outcomes(directory: pathlib.Path) -> dict[str, int] | None:
  """Kept / dropped-by-reason counts straight from the record files."""
  kept_path = directory / "records.jsonl"
  dropped_path = directory / "dropped.jsonl"
  if not kept_path.is_file() and not dropped_path.is_file():
    return None
  counts: collections.Counter[str] = collections.Counter()
  if kept_path.is_file():
    counts["kept"] = len(read_jsonl(kept_path))
  if dropped_path.is_file():
    for record in read_jsonl(dropped_path):
      counts[str(record.get("drop_reason", "unknown"))] += 1
  return dict(counts)


def _question_coverage(directory: pathlib.Path) -> dict[str, int] | None:
  """How many distinct questions kept at least one CoT, of those tried."""
  kept_path = directory / "records.jsonl"
  if not kept_path.is_file():
    return None
  kept_ids = {r.get("id") for r in read_jsonl(kept_path)}
  tried = set(kept_ids)
  dropped_path = directory / "dropped.jsonl"
  if dropped_path.is_file():
    tried |= {r.get("id") for r in read_jsonl(dropped_path)}
  return {"questions": len(tried), "questions_with_kept_cot": len(kept_ids)}


def _manifest_outcomes(manifest: dict[str, Any]) -> dict[str, int]:
  """Outcome counts from a manifest: {"kept": n, "<drop reason>": n, ...}.

  Accepts a flat table or one with the drop reasons nested under "dropped".
  """
  for key in ("counts", "counts_by_outcome", "outcomes"):
    counts = manifest.get(key)
    if not isinstance(counts, dict):
      continue
    flat: dict[str, int] = {}
    for name, value in counts.items():
      if isinstance(value, dict):
        flat.update({k: int(v) for k, v in value.items()
                     if isinstance(v, (int, float)) and k not in _TOTAL_KEYS})
      elif isinstance(value, (int, float)) and name not in _TOTAL_KEYS:
        flat[name] = int(value)
    return flat
  return {}


def load_annotation(directory: pathlib.Path) -> Run:
  manifest = _read_json(directory / "manifest.json")
  outcomes = _count_outcomes(directory) or _manifest_outcomes(manifest)
  teacher = manifest.get("teacher") or {}
  dataset = manifest.get("dataset")
  if isinstance(dataset, dict):
    dataset_name = dataset.get("name") or dataset.get("dataset")
    split = dataset.get("split")
  else:
    dataset_name, split = dataset, manifest.get("split")
  total = sum(outcomes.values())
  data = {
      "dataset": dataset_name,
      "split": split,
      "teacher_model": teacher.get("model") if isinstance(teacher, dict) else teacher,
      "status": manifest.get("status"),
      "outcomes": outcomes,
      "generated": total,
      "kept": outcomes.get("kept", 0),
      "survival": outcomes.get("kept", 0) / total if total else math.nan,
      "coverage": _question_coverage(directory),
      "tokens": manifest.get("tokens") or manifest.get("token_totals")
                or manifest.get("usage"),
      "prompt": manifest.get("prompt") or {},
      "manifest": manifest,
  }
  label = f"{dataset_name or directory.name}"
  if split:
    label += f"/{split}"
  if data["teacher_model"]:
    label += f" ({data['teacher_model']})"
  return Run(ANNOTATION, directory, label, data)


def _metric_series(records: list[dict[str, Any]]
                   ) -> dict[str, tuple[list[float], list[float]]]:
  """{metric: (steps, values)} for every numeric field but the step.

  The trainer appends, so after a resume the steps after the restored
  checkpoint appear twice; the later record wins, as in TensorBoard.
  """
  by_metric: dict[str, dict[float, float]] = {}
  for record in records:
    step = record.get("step")
    if not isinstance(step, (int, float)):
      continue
    prefix = ""
    if isinstance(record.get("split"), str):
      prefix = f"{record['split']}/"
    for name, value in record.items():
      if name == "step" or isinstance(value, bool):
        continue
      if isinstance(value, (int, float)) and math.isfinite(value):
        by_metric.setdefault(prefix + name, {})[step] = float(value)
  return {name: (sorted(points), [points[s] for s in sorted(points)])
          for name, points in by_metric.items()}


def load_training(directory: pathlib.Path) -> Run:
  config_path = directory / "model_config.json"
  model_config = _read_json(config_path) if config_path.is_file() else {}
  metrics_path = directory / "metrics.jsonl"
  records = read_jsonl(metrics_path) if metrics_path.is_file() else []
  series = _metric_series(records)
  task = model_config.get("task")
  label = directory.name if not task else f"{directory.name} ({task})"
  return Run(TRAINING, directory, label, {
      "model_config": model_config,
      "task": task,
      "series": series,
      "num_records": len(records),
  })


LOADERS = {EVALUATION: load_evaluation, ANNOTATION: load_annotation,
           TRAINING: load_training}


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """A run directory that was found but could not be read, and why."""

  kind: str
  path: pathlib.Path
  reason: str


def load_runs(paths: list[pathlib.Path]) -> list[Run]:
  """Every run at or below `paths`, in the order found; raises on a bad one."""
  return [LOADERS[kind](directory) for kind, directory in discover(paths)]


def load_runs_tolerantly(paths: list[pathlib.Path]
                         ) -> tuple[list[Run], list[Unreadable]]:
  """(runs read, runs that could not be read), so one bad file (a torn
  manifest, a summary from another tool) does not hide every other run."""
  runs, unreadable = [], []
  for kind, directory in discover(paths):
    try:
      runs.append(LOADERS[kind](directory))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
      unreadable.append(Unreadable(kind, directory, " ".join(
          f"{type(error).__name__}: {error}".split())[:300]))
  return runs, unreadable
