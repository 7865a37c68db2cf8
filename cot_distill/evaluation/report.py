"""`cot-distill report`: one markdown + JSON report, with PNG plots, from runs.

The markdown is meant to be read on its own: every number a plot shows is
also in a table, images are linked by relative path next to it, and a few
example predictions are quoted, so nobody has to open predictions.jsonl to
see what the students write.

Output in REPORT_DIR: report.md, report.json, and PNGs (accuracy.png,
self_consistency.png, filter_survival.png, training_curves.png) for the
sections that have data.
"""

from __future__ import annotations

import datetime
import math
import pathlib
from typing import Any, Sequence

from cot_distill.evaluation import comparisons
from cot_distill.evaluation import plots
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation import runs as runs_lib
from cot_distill.evaluation import statistics
from cot_distill.evaluation.runs import Run

NUM_SAMPLE_PREDICTIONS = 3
SAMPLE_TEXT_CHARACTERS = 400
# Training metrics plotted, one panel per group: the first name of each
# group that any run logged (the trainer writes "train/..." and
# "eval/<task>/<metric>"; bare names are accepted for other writers).
TRAINING_METRIC_GROUPS = (
    ("train/loss_per_token", "train/loss", "loss"),
    ("train/accuracy", "accuracy"),
)


def _percent(value: float | None, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{100 * value:.{digits}f}%"


def _number(value: float | None, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  return f"{value:.{digits}f}"


def _cell(text: Any) -> str:
  """Text safe inside a markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return lines + [""]


def _accuracy_section(evaluations: Sequence[Run], out_dir: pathlib.Path,
                      report: dict[str, Any]) -> list[str]:
  rows = comparisons.accuracy_rows(evaluations)
  report["accuracy"] = rows
  if not rows:
    return []
  lines = ["## Accuracy", "",
           "Accuracy is the share of examples whose extracted answer equals "
           "the gold answer (the shared `judge`); brackets give the 95% "
           "Wilson interval (for cross-validation: the t interval over "
           "folds). *Answer found* is the share of outputs that state an "
           "answer with a marker (\"The answer is ...\"); the judge's "
           "last-number fallback is not counted. *Faithful CoT* (chain-of-thought "
           "students) counts an example only when the answer is right AND "
           "the chain passes the rationale verifier (`cot_distill.verifier`).", ""]
  plots.accuracy_bars(rows, out_dir / "accuracy.png")
  report["plots"].append("accuracy.png")
  lines += ["![Accuracy per task and model](accuracy.png)", ""]
  tasks = list(dict.fromkeys(r["task"] for r in rows))
  models = list(dict.fromkeys(r["model"] for r in rows))
  lookup = {(r["task"], r["model"]): r for r in rows}
  lines += ["### Comparison", ""]
  lines += _table(["task"] + models,
                  [[task] + [lookup[(task, m)]["formatted"]
                             if (task, m) in lookup else "" for m in models]
                   for task in tasks])
  lines += ["### Details", ""]
  lines += _table(
      ["task", "split", "model", "format", "decoding", "n",
       "accuracy [95% CI]", "faithful CoT [95% CI]", "answer found", "mean words",
       "mean tokens"],
      [[r["task"], r["split"], r["model"], r["format"], r["decode"], r["n"],
        r["formatted"], r.get("faithful") or "",
        _percent(r["answer_found_rate"]), _number(r["mean_generated_words"]),
        _number(r["mean_generated_tokens"])] for r in rows])
  limited = [f"{run.label} ({run.data['limit']})" for run in evaluations
             if run.data.get("limit")]
  if limited:
    lines += ["Quick runs, first N examples per task only (not comparable "
              "with full-split results): " + ", ".join(limited) + ".", ""]
  calculator_rows = [r for r in rows if r["calculator"]]
  if calculator_rows:
    lines += ["### With the external calculator", "",
              "The calculator recomputes every `a op b = c` in the generated "
              "chain and carries corrected values forward; *fixed* / *broken* "
              "count examples it turned right / wrong.", ""]
    lines += _table(["task", "model", "without calculator", "with calculator",
                     "fixed", "broken"],
                    [[r["task"], r["model"], r["formatted"], r["calculator"],
                      r["calculator_fixed"], r["calculator_broken"]]
                     for r in calculator_rows])
  paired = comparisons.paired_comparisons(evaluations)
  report["paired_comparisons"] = paired
  if paired:
    lines += ["### Paired differences", "",
              "Accuracy of the better model minus the other on the same "
              "examples, with a 95% paired-bootstrap interval; the last two "
              "columns count questions only one of them gets right.", ""]
    lines += _table(
        ["task", "first", "second", "n", "difference [95% CI]",
         "only first right", "only second right"],
        [[c["task"], c["first"], c["second"], c["n"],
          f"{100 * c['difference']:+.1f} pts [{100 * c['interval'][0]:+.1f}, "
          f"{100 * c['interval'][1]:+.1f}]",
          c["only_first_correct"], c["only_second_correct"]]
         for c in paired])
  return lines


def _cross_validation_section(evaluations: Sequence[Run],
                              report: dict[str, Any]) -> list[str]:
  rows = []
  for run in evaluations:
    for dataset, cv in (run.data.get("cross_validation") or {}).items():
      mean = cv["fold_mean"]
      pooled = statistics.accuracy_from_dict(cv["pooled"])
      rows.append([dataset, run.label,
                   ", ".join(_percent(v) for v in mean["fold_accuracies"]),
                   f"{_percent(mean['mean'])} ± "
                   f"{_number(100 * mean['standard_deviation'])}",
                   pooled.format()])
  report["cross_validation_rows"] = rows
  if not rows:
    return []
  return (["## Cross-validation", "",
           "MAWPS and ASDiv-A have no fixed test split; each fold's model is "
           "scored on its own held-out fold. *Mean ± sd* is over folds; "
           "*pooled* counts every example once over all folds (Wilson 95%).",
           ""]
          + _table(["dataset", "model", "fold accuracies", "mean ± sd",
                    "pooled [95% CI]"], rows))


def _self_consistency_section(evaluations: Sequence[Run],
                              out_dir: pathlib.Path,
                              report: dict[str, Any]) -> list[str]:
  curves = []
  for run in evaluations:
    for name, task in comparisons.plain_tasks(run):
      curve = task.get("self_consistency")
      if curve:
        curves.append({"label": f"{name}: {run.label}", **curve,
                       "sample_accuracy": task.get("sample_accuracy")})
      calculator_curve = (task.get("calculator") or {}).get("self_consistency")
      if calculator_curve:
        curves.append({"label": f"{name}: {run.label} + calculator",
                       **calculator_curve, "sample_accuracy": None})
  report["self_consistency"] = curves
  if not curves:
    return []
  plots.self_consistency_curves(curves, out_dir / "self_consistency.png")
  report["plots"].append("self_consistency.png")
  max_k = max(len(c["k"]) for c in curves)
  shown_ks = sorted({1, 2, 4, 8, 16, 32, max_k} & set(range(1, max_k + 1)))
  rows = []
  for curve in curves:
    by_k = dict(zip(curve["k"], curve["accuracy"]))
    rows.append([curve["label"], _percent(curve.get("sample_accuracy"))]
                + [_percent(by_k.get(k)) if k in by_k else "" for k in shown_ks])
  return (["## Self-consistency", "",
           "K chains sampled per question; the answer is the majority vote "
           "over the first k. *One sample* is the mean accuracy of a single "
           "sampled chain.", "",
           "![Self-consistency curves](self_consistency.png)", ""]
          + _table(["task: model", "one sample"] + [f"k={k}" for k in shown_ks],
                   rows))


def _short_source(name: str) -> str:
  """A training source as a table shows it: files by their last two parts."""
  parts = pathlib.PurePath(name).parts
  return "/".join(parts[-2:]) if len(parts) > 2 else name


def _leakage_section(evaluations: Sequence[Run],
                     report: dict[str, Any]) -> list[str]:
  """One row per (model, evaluated task), over every source it was checked
  against; summary.json keeps each comparison separately."""
  rows = []
  for run in evaluations:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for check in run.data.get("leakage") or []:
      grouped.setdefault(check.get("evaluated", ""), []).append(check)
    for evaluated, checks in grouped.items():
      leaks = [c for c in checks if c.get("verdict") != "ok"]
      rows.append([run.label, evaluated,
                   ", ".join(_short_source(str(c.get("against", "")))
                             for c in checks),
                   ", ".join(f"{c['overlap']} in {_short_source(str(c['against']))}"
                             for c in leaks) or "0",
                   "LEAK" if leaks else "ok"])
  notes = [f"- {run.label}: training task not checked: "
           f"{run.data['training_task_unchecked']}"
           for run in evaluations if run.data.get("training_task_unchecked")]
  report["leakage"] = rows
  report["leakage_unchecked"] = notes
  if not rows and not notes:
    return []
  return (["## Held-out data and leakage", "",
           "Overlap of normalised question text between each evaluated split "
           "and the data the model was trained on (the data package's "
           "leakage check): the dataset's own training split, the training "
           "files given to `cot-distill evaluate`, and the checkpoint's "
           "training task. Any overlap means the score is not a held-out "
           "score.", ""]
          + (_table(["model", "evaluated", "compared against",
                     "overlapping questions", "verdict"], rows) if rows else [])
          + (notes + [""] if notes else []))


def _quote(text: str | None) -> str:
  text = (text or "").strip().replace("\n", " ")
  if len(text) > SAMPLE_TEXT_CHARACTERS:
    text = text[:SAMPLE_TEXT_CHARACTERS] + " …"
  return text.replace("`", "'")


def _sample_section(evaluations: Sequence[Run]) -> list[str]:
  lines = []
  for run in evaluations:
    for name, _ in comparisons.plain_tasks(run):
      records = comparisons.load_task_predictions(run, name)
      if not records:
        continue
      # Show both kinds of outcome when there are both.
      right = [r for r in records if r["correct"]][:2]
      wrong = [r for r in records if not r["correct"]][:2]
      chosen = (right[:1] + wrong[:1] + right[1:] + wrong[1:])
      chosen = chosen[:NUM_SAMPLE_PREDICTIONS]
      lines += [f"### {name}: {run.label}", ""]
      for record in chosen:
        verdict = "right" if record["correct"] else "wrong"
        lines += [f"- **{record['id']}** ({verdict}; gold `{record['gold']}`, "
                  f"extracted `{record['predicted']}` by rule "
                  f"`{record['rule']}`)",
                  f"  - question: {_quote(record['question'])}",
                  f"  - output: `{_quote(record['generated'])}`"]
      lines.append("")
  if not lines:
    return []
  return ["## Example predictions", ""] + lines


def _annotation_section(annotations: Sequence[Run], out_dir: pathlib.Path,
                        report: dict[str, Any]) -> list[str]:
  report["annotation"] = [
      {"label": run.label, "path": str(run.path),
       **{k: v for k, v in run.data.items() if k != "manifest"}}
      for run in annotations]
  if not annotations:
    return []
  reasons = sorted({k for run in annotations for k in run.data["outcomes"]
                    if k != "kept"})
  rows = []
  for run in annotations:
    coverage = run.data.get("coverage") or {}
    prompt = run.data.get("prompt") or {}
    prompt_text = str(prompt.get("template_id") or "")
    if prompt.get("hinted") is not None:
      prompt_text += " (hinted)" if prompt["hinted"] else " (unhinted)"
    tokens = run.data.get("tokens") or {}
    rows.append([run.label, run.data.get("status") or "", prompt_text or "n/a",
                 run.data["generated"], run.data["kept"],
                 _percent(run.data["survival"])]
                + [run.data["outcomes"].get(r, 0) for r in reasons]
                + [f"{coverage['questions_with_kept_cot']}/{coverage['questions']}"
                   if coverage else "n/a",
                   tokens.get("completion_tokens", "n/a")
                   if isinstance(tokens, dict) else "n/a"])
  lines = ["## Teacher annotation: filter survival", "",
           "Each teacher chain of thought is kept only if the shared judge "
           "finds the gold answer in it; the others are dropped with a "
           "reason. *Questions covered* counts questions with at least one "
           "kept chain.", ""]
  if any(run.data["generated"] for run in annotations):
    plots.filter_survival(
        [{"label": run.label, "outcomes": run.data["outcomes"]}
         for run in annotations], out_dir / "filter_survival.png")
    report["plots"].append("filter_survival.png")
    lines += ["![Filter survival](filter_survival.png)", ""]
  lines += _table(["run", "status", "prompt", "chains", "kept", "survival"]
                  + [f"dropped: {r}" for r in reasons]
                  + ["questions covered", "completion tokens"], rows)
  return lines


def _training_metric_names(trainings: Sequence[Run]) -> list[str]:
  """Loss, token accuracy and the first eval-task accuracy, when logged."""
  available = {m for run in trainings for m in run.data["series"]}
  chosen = []
  for group in TRAINING_METRIC_GROUPS:
    found = next((m for m in group if m in available), None)
    if found:
      chosen.append(found)
  evaluations = sorted(m for m in available
                       if m.startswith("eval/") and m.endswith("/accuracy"))
  chosen += evaluations[:1]
  return chosen or sorted(available)[:2]


def _training_section(trainings: Sequence[Run], out_dir: pathlib.Path,
                      report: dict[str, Any]) -> list[str]:
  metric_names = _training_metric_names(trainings)
  rows, json_rows = [], []
  for run in trainings:
    series = run.data["series"]
    model = (run.data["model_config"].get("model") or {})
    steps = max((max(s) for s, _ in series.values() if s), default=None)
    row = {"label": run.label, "path": str(run.path), "task": run.data["task"],
           "last_step": steps, "model": model}
    for metric in metric_names:
      values = series.get(metric, ([], []))[1]
      row[f"first_{metric}"] = values[0] if values else None
      row[f"last_{metric}"] = values[-1] if values else None
    json_rows.append(row)
    size = (f"{model.get('num_encoder_layers', '?')}+"
            f"{model.get('num_decoder_layers', '?')} layers, "
            f"d={model.get('emb_dim', '?')}") if model else "n/a"
    rows.append([run.label, size, steps if steps is not None else "n/a"]
                + [f"{_number(row[f'first_{m}'], 4)} → {_number(row[f'last_{m}'], 4)}"
                   for m in metric_names])
  report["training"] = json_rows
  if not trainings:
    return []
  lines = ["## Training", ""]
  if metric_names and any(run.data["series"] for run in trainings):
    plots.training_curves(
        [{"label": run.label, "series": run.data["series"]}
         for run in trainings], metric_names, out_dir / "training_curves.png")
    report["plots"].append("training_curves.png")
    lines += ["![Training curves](training_curves.png)", ""]
  lines += _table(["run", "model", "last step"]
                  + [f"{m} (first → last)" for m in metric_names], rows)
  return lines


def build_report(run_paths: Sequence[pathlib.Path],
                 out_dir: pathlib.Path) -> dict[str, Any]:
  """Read every run under `run_paths`, write report.md/.json and plots."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  all_runs, unreadable = runs_lib.load_runs_tolerantly(
      [pathlib.Path(p) for p in run_paths])
  evaluations = [r for r in all_runs if r.kind == runs_lib.EVALUATION]
  annotations = [r for r in all_runs if r.kind == runs_lib.ANNOTATION]
  trainings = [r for r in all_runs if r.kind == runs_lib.TRAINING]
  created = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  report: dict[str, Any] = {
      "created_at": created,
      "runs": [{"kind": r.kind, "label": r.label, "path": str(r.path)}
               for r in all_runs],
      "plots": [],
      "unreadable": [{"kind": u.kind, "path": str(u.path), "reason": u.reason}
                     for u in unreadable],
  }
  lines = ["# cot-distill report", "",
           f"Generated {created} from {len(all_runs)} run(s).", ""]
  lines += _table(["kind", "run", "directory"],
                  [[r.kind, r.label, str(r.path)] for r in all_runs])
  if unreadable:
    lines += ["", f"## Runs that could not be read ({len(unreadable)})", "",
              "Left out of every section below:", ""]
    lines += _table(["kind", "directory", "reason"],
                    [[u.kind, str(u.path), u.reason] for u in unreadable])
  lines += _accuracy_section(evaluations, out_dir, report)
  lines += _cross_validation_section(evaluations, report)
  lines += _self_consistency_section(evaluations, out_dir, report)
  lines += _leakage_section(evaluations, report)
  lines += _annotation_section(annotations, out_dir, report)
  lines += _training_section(trainings, out_dir, report)
  lines += _sample_section(evaluations)
  report["markdown"] = "report.md"
  (out_dir / "report.md.tmp").write_text("\n".join(lines).rstrip() + "\n",
                                          encoding="utf-8")
  (out_dir / "report.md.tmp").replace(out_dir / "report.md")
  predictions_lib.write_json_atomic(out_dir / "report.json", report)
  return report
