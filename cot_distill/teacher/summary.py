"""The human summary `cot-distill annotate` ends with, and the next command.

Why: the manifest (JSON) is for machines; a person needs to see at a glance
whether the run worked (kept / dropped / failed by reason), why it stopped
if it did, and what to run next, without reading JSON. `--json` still
prints the machine summary.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

from cot_distill.teacher import client as client_lib


def _reasons(counts: Mapping[str, int]) -> str:
  shown = [f"{name} {count:,}" for name, count in counts.items() if count]
  return ", ".join(shown) if shown else "none"


def registered_task(directory: str | os.PathLike) -> str | None:
  """The registry's task name for a run directory, when one is registered
  there (`tasks/runs.py`), e.g. "cot_distill.gsm8k.teacher.cot"."""
  try:
    from cot_distill_tasks import runs  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  target = pathlib.Path(directory).resolve()
  for run in runs.RUNS:
    path = run.resolve()
    if "://" not in path and pathlib.Path(path).resolve() == target:
      return f"cot_distill.{run.dataset}.{run.teacher}.cot"
  return None


def next_command(manifest: Mapping[str, Any], directory: str | os.PathLike) -> str:
  """What to run next: resume a stopped or failed run, else train on it."""
  counts = manifest.get("counts") or {}
  done = counts.get("questions_done", counts.get("questions"))
  failed = (counts.get("dropped") or {}).get("failed", 0)
  if manifest.get("kind") == "annotation" and manifest.get("status") != "complete":
    if manifest.get("stopped") or (done is not None and done < counts.get("questions", 0)):
      return (f"fix the cause above, then resume (nothing is lost): "
              f"cot-distill annotate --resume {directory}")
    if failed:
      return (f"retry the failed questions: cot-distill annotate --resume {directory} "
              "--retry-failed")
  task = registered_task(directory)
  if task:
    return ("train a student on it: python -m cot_distill.train "
            "--gin_file=gin/models/t5_1_1_small.gin --gin_file=gin/runs/finetune_cot.gin "
            f"--gin.MIXTURE_OR_TASK_NAME=\"'{task}'\" --gin.MODEL_DIR=\"'runs/student'\"")
  return ("train on it: register the run (an AnnotationRun in tasks/runs.py under "
          "$COT_DISTILL_RUNS_DIR/<dataset>/<teacher>, or "
          f"cot_distill.seqio_tasks.register_cot_task(NAME, {str(directory)!r})), "
          "then python -m cot_distill.train with --gin.MIXTURE_OR_TASK_NAME=NAME")


def format_summary(manifest: Mapping[str, Any], directory: str | os.PathLike) -> str:
  """A few lines for a person: outcome, counts by reason, requests, next step."""
  counts = manifest.get("counts") or {}
  dropped = dict(counts.get("dropped") or {})
  failed = dropped.pop("failed", 0)
  dataset = manifest.get("dataset") or {}
  name = f"{dataset.get('name', '?')}/{dataset.get('split', '?')}"
  questions = counts.get("questions", 0)
  done = counts.get("questions_done", questions)
  lines = [f"annotate {name}: {str(manifest.get('status', 'done')).upper()}  "
           f"({done:,} of {questions:,} questions, {counts.get('samples', 0):,} samples)",
           f"  kept     {counts.get('kept', 0):,}",
           f"  dropped  {sum(dropped.values()):,}  ({_reasons(dropped)})"]
  if failed or counts.get("failed_by_class"):
    by_class = counts.get("failed_by_class") or {}
    detail = ", ".join(f"{c} {n:,}: {client_lib.FAILURE_CLASSES.get(c, c)}"
                       for c, n in by_class.items()) or "see dropped.jsonl"
    lines.append(f"  failed   {failed:,}  ({detail})")
  flagged = counts.get("verifier_flagged") or {}
  if counts.get("verify") == "report" or flagged:
    lines.append(f"  flagged  {sum(flagged.values()):,} kept chains the verifier would drop"
                 f" ({_reasons(flagged) if flagged else 'none'}; see 'verification' in "
                 "records.jsonl; --verify filter drops them)")
  stopped = manifest.get("stopped")
  if stopped:
    lines.append(f"  STOPPED: {stopped.get('reason')}")
  requests = manifest.get("requests")
  if requests:
    lines.append(f"  requests {requests.get('sent', 0):,} sent, {requests.get('cache_hits', 0):,} "
                 f"from cache, {requests.get('retries', 0):,} retries")
  if (manifest.get("teacher") or {}).get("ignores_n"):
    lines.append("  note: the teacher ignores `n`; samples were requested one by one")
  lines.append(f"  run directory: {directory} (records.jsonl, dropped.jsonl, manifest.json)")
  lines.append(f"Next: {next_command(manifest, directory)}")
  return "\n".join(lines)
