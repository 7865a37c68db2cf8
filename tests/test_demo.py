"""The README's main command, at the reduced `smoke` size: every stage runs
through the real teacher server, client, filter, SeqIO tasks, trainer and
evaluator, and a rerun resumes instead of redoing the work."""

from __future__ import annotations

import json
import pathlib

import pytest

from cot_distill import cli
from cot_distill import demo


@pytest.mark.slow
def test_demo_smoke_runs_end_to_end_and_resumes(tmp_path, capsys):
  out = tmp_path / "demo"
  assert cli.main(["demo", "--out", str(out), "--size", "smoke"]) == 0
  printed = capsys.readouterr().out
  for task in demo.TASKS:
    assert task in printed
  assert "answer-only" in printed and "CoT" in printed

  # Annotation: every question was answered once and the filter's counts
  # agree with the files it wrote.
  for task in demo.TASKS:
    run_dir = out / "annotations" / task
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    kept = (run_dir / "records.jsonl").read_text().splitlines()
    dropped = (run_dir / "dropped.jsonl").read_text().splitlines()
    assert counts["questions_done"] == demo.SIZES["smoke"].train_examples
    assert counts["kept"] == len(kept)
    assert sum(counts["dropped"].values()) == len(dropped)
    assert 0 < len(dropped) < len(kept)  # 20% injected errors were filtered
    assert all(json.loads(line)["correct"] for line in kept)

  # Both students were evaluated on in- and out-of-distribution splits, and
  # the summaries agree with their saved predictions.
  for target_format in demo.FORMATS:
    summary = json.loads(
        (out / "evaluations" / target_format / "summary.json").read_text())
    assert summary["target_format"] == target_format
    for task in demo.TASKS:
      for split in ("test", "ood"):
        name = f"{task}_{split}"
        task_summary = summary["tasks"][name]
        lines = (out / "evaluations" / target_format / name /
                 "predictions.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == demo.SIZES["smoke"].test_examples
        correct = sum(bool(r["correct"]) for r in records)
        assert task_summary["accuracy"]["correct"] == correct

  report = out / "report" / "report.md"
  assert report.is_file()
  pngs = list((out / "report").rglob("*.png"))
  assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

  # A rerun reuses every stage's outputs and reports the same table.
  table_lines = [line for line in printed.splitlines() if line.startswith(demo.TASKS)]
  assert cli.main(["demo", "--out", str(out), "--size", "smoke"]) == 0
  rerun = capsys.readouterr().out
  assert [line for line in rerun.splitlines() if line.startswith(demo.TASKS)] == table_lines
