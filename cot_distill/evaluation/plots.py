"""PNG figures for the report (matplotlib, Agg, no pyplot state).

Figures are built on `matplotlib.figure.Figure` with an Agg canvas instead
of `pyplot`, so plotting never picks a GUI backend, never leaks global
figures, and works the same on a headless CI machine.

Each function takes plain lists/dicts (what report.py collected) and a path,
writes one PNG and returns the path; none reads run directories itself.
"""

from __future__ import annotations

import math
import pathlib
from typing import Mapping, Sequence

from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DOTS_PER_INCH = 110
# Colour-blind-safe palette (Okabe & Ito), cycled over models / runs.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7",
           "#56B4E9", "#F0E442", "#000000")
# Fixed colours for filter outcomes so every report reads the same way.
OUTCOME_COLOURS = {
    "kept": "#009E73", "wrong_answer": "#D55E00", "no_answer": "#E69F00",
    "truncated": "#CC79A7", "empty": "#999999", "duplicate": "#56B4E9",
    "failed": "#000000",
}


def _new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height), dpi=DOTS_PER_INCH)
  FigureCanvasAgg(figure)
  return figure


def _save(figure: Figure, path: pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.tight_layout()
  temporary = path.with_name(f".{path.stem}.tmp.png")
  figure.savefig(temporary, format="png")
  temporary.replace(path)
  return path


def accuracy_bars(rows: Sequence[Mapping], path: pathlib.Path, *,
                  title: str = "Accuracy with 95% intervals") -> pathlib.Path:
  """Grouped bars: one group per task, one bar per model label.

  rows: dicts with "task", "model", "accuracy", "low", "high" (fractions).
  """
  tasks = list(dict.fromkeys(r["task"] for r in rows))
  models = list(dict.fromkeys(r["model"] for r in rows))
  figure = _new_figure(max(5.0, 1.2 + 0.55 * len(tasks) * max(1, len(models))),
                       4.2)
  axes = figure.add_subplot(1, 1, 1)
  width = 0.8 / max(1, len(models))
  lookup = {(r["task"], r["model"]): r for r in rows}
  for model_index, model in enumerate(models):
    xs, heights, errors_low, errors_high = [], [], [], []
    for task_index, task in enumerate(tasks):
      row = lookup.get((task, model))
      if row is None or row["accuracy"] is None or math.isnan(row["accuracy"]):
        continue
      xs.append(task_index - 0.4 + width * (model_index + 0.5))
      heights.append(100 * row["accuracy"])
      errors_low.append(100 * (row["accuracy"] - row["low"]))
      errors_high.append(100 * (row["high"] - row["accuracy"]))
    axes.bar(xs, heights, width=width * 0.95, label=model,
             color=PALETTE[model_index % len(PALETTE)],
             yerr=[errors_low, errors_high], capsize=3,
             error_kw={"elinewidth": 1})
    # Values inside the bars, where the error bars do not cover them.
    for x, height in zip(xs, heights):
      if height >= 8:
        axes.text(x, height / 2, f"{height:.1f}", ha="center", va="center",
                  fontsize=7, color="white", rotation=90 if width < 0.2 else 0)
  axes.set_xticks(range(len(tasks)))
  # Long task names ("last_letters_test") collide when upright; tilt them
  # whenever the labels would not fit side by side.
  tilt = len(tasks) > 4 or max(len(t) for t in tasks) * len(tasks) > 48
  axes.set_xticklabels(tasks, rotation=25 if tilt else 0,
                       ha="right" if tilt else "center")
  axes.set_ylabel("accuracy (%)")
  axes.set_ylim(0, 105)
  axes.set_title(title)
  axes.grid(axis="y", alpha=0.3)
  axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return _save(figure, path)


def filter_survival(rows: Sequence[Mapping], path: pathlib.Path
                    ) -> pathlib.Path:
  """Stacked horizontal bars of teacher CoT outcomes per annotation run.

  rows: dicts with "label" and "outcomes" {outcome: count}; bars show the
  share of generated CoTs kept and dropped by each reason.
  """
  figure = _new_figure(7.5, 1.2 + 0.45 * max(1, len(rows)))
  axes = figure.add_subplot(1, 1, 1)
  outcomes = list(OUTCOME_COLOURS)
  for row in rows:
    for name in row["outcomes"]:
      if name not in outcomes:
        outcomes.append(name)
  labels = [row["label"] for row in rows]
  lefts = [0.0] * len(rows)
  for outcome_index, outcome in enumerate(outcomes):
    shares = []
    for row in rows:
      total = sum(row["outcomes"].values()) or 1
      shares.append(100 * row["outcomes"].get(outcome, 0) / total)
    if not any(shares):
      continue
    axes.barh(labels, shares, left=lefts, label=outcome,
              color=OUTCOME_COLOURS.get(outcome,
                                        PALETTE[outcome_index % len(PALETTE)]))
    for y, (left, share) in enumerate(zip(lefts, shares)):
      if share >= 6:
        axes.text(left + share / 2, y, f"{share:.0f}%", ha="center",
                  va="center", fontsize=7, color="white")
    lefts = [left + share for left, share in zip(lefts, shares)]
  axes.set_xlim(0, 100)
  axes.set_xlabel("share of teacher chains of thought (%)")
  axes.set_title("Filter survival per annotation run")
  axes.invert_yaxis()
  axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return _save(figure, path)


def training_curves(runs: Sequence[Mapping], metric_names: Sequence[str],
                    path: pathlib.Path) -> pathlib.Path:
  """One panel per metric, one line per training run, against step.

  runs: dicts with "label" and "series" {metric: ([steps], [values])}.
  """
  metric_names = list(metric_names) or ["loss"]
  figure = _new_figure(5.0 * len(metric_names), 3.6)
  for panel, metric in enumerate(metric_names, start=1):
    axes = figure.add_subplot(1, len(metric_names), panel)
    for run_index, run in enumerate(runs):
      series = run["series"].get(metric)
      if not series:
        continue
      steps, values = series
      axes.plot(steps, values, label=run["label"], linewidth=1.2,
                marker="o" if len(steps) < 15 else None, markersize=3,
                color=PALETTE[run_index % len(PALETTE)])
    axes.set_xlabel("step")
    axes.set_title(metric)
    axes.grid(alpha=0.3)
    if "loss" in metric and _all_positive(runs, metric):
      axes.set_yscale("log")
    axes.legend(fontsize=7)
  return _save(figure, path)


def _all_positive(runs: Sequence[Mapping], metric: str) -> bool:
  values = [v for run in runs for v in run["series"].get(metric, ([], []))[1]]
  return bool(values) and min(values) > 0


def self_consistency_curves(curves: Sequence[Mapping], path: pathlib.Path
                            ) -> pathlib.Path:
  """Accuracy of the majority vote over k samples against k, with bands.

  curves: dicts with "label", "k", "accuracy", "interval" ([low, high]).
  """
  figure = _new_figure(6.0, 4.0)
  axes = figure.add_subplot(1, 1, 1)
  for index, curve in enumerate(curves):
    colour = PALETTE[index % len(PALETTE)]
    ks = curve["k"]
    axes.plot(ks, [100 * a for a in curve["accuracy"]], marker="o",
              markersize=3, label=curve["label"], color=colour)
    if curve.get("interval"):
      axes.fill_between(ks, [100 * low for low, _ in curve["interval"]],
                        [100 * high for _, high in curve["interval"]],
                        color=colour, alpha=0.15, linewidth=0)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel("samples per question (k)")
  axes.set_ylabel("majority-vote accuracy (%)")
  axes.set_title("Self-consistency: accuracy vs number of samples")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7)
  return _save(figure, path)
