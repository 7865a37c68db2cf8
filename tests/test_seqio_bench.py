"""`cot-distill bench seqio` runs end to end on a small records file and prints its figures."""

from __future__ import annotations

import argparse
import json

from cot_distill.benchmarks import seqio as bench_seqio


def test_bench_seqio_prints_rates_packing_and_trainer_ratio(tmp_path, spm_path, capsys):
  with open(tmp_path / "records.jsonl", "w") as f:
    for i in range(40):
      f.write(json.dumps({
          "id": f"gsm8k/train/{i}", "dataset": "gsm8k", "split": "train",
          "question": f"Ann has {i} pens and buys 2 more. How many pens does she have?",
          "answer": str(i + 2), "answer_type": "number", "choices": None,
          "rationale": f"Ann starts with {i} pens. {i} + 2 = {i + 2}.", "correct": True}) + "\n")
  parser = argparse.ArgumentParser()
  bench_seqio.register(parser.add_subparsers())
  args = parser.parse_args(["seqio", "--records", str(tmp_path), "--spm-path", str(spm_path),
                            "--batch-size", "4", "--inputs-length", "64",
                            "--targets-length", "64", "--examples", "64",
                            "--trainer-step-seconds", "2"])
  assert args.func(args) == 0
  out = capsys.readouterr().out
  assert "(40 records, 40 within 64/64 tokens)" in out
  for name in ("source", "tokenize", "packed"):
    assert f"  {name} " in out
  # Short examples pack several to a row; 4 x 64 positions per 2 s step = 128/s.
  per_row = float(out.split("packing: ")[1].split(" examples per row")[0])
  assert per_row > 1.5
  assert "trainer: 128 target positions/s (given step 2 s x 4 x 64, not measured in this run)" in out
  needed = float(out.split(" rows/s = ")[1].split(" examples/s needed")[0])
  assert abs(needed - 128 / 64 * per_row) < 0.06
  assert "ratio pipeline/trainer:" in out


def test_bench_seqio_measures_the_trainer_in_the_same_run(tmp_path, spm_path, capsys):
  with open(tmp_path / "records.jsonl", "w") as f:
    for i in range(24):
      f.write(json.dumps({
          "id": f"gsm8k/train/{i}", "dataset": "gsm8k", "split": "train",
          "question": f"Bo has {i} cups and breaks 1. How many cups are left?",
          "answer": str(i - 1), "answer_type": "number", "choices": None,
          "rationale": f"Bo had {i} cups. {i} - 1 = {i - 1}.", "correct": True}) + "\n")
  parser = argparse.ArgumentParser()
  bench_seqio.register(parser.add_subparsers())
  args = parser.parse_args(["seqio", "--records", str(tmp_path), "--spm-path", str(spm_path),
                            "--batch-size", "8", "--inputs-length", "32",
                            "--targets-length", "32", "--examples", "32",
                            "--trainer-model", "t5_1_1_tiny", "--trainer-steps", "1"])
  assert args.func(args) == 0
  out = capsys.readouterr().out
  trainer = next(line for line in out.splitlines()
                 if line.startswith("trainer: ") and "target positions/s" in line)[9:]
  assert "measured in this run: t5_1_1_tiny bfloat16 Adafactor step on a packed batch" in trainer
  step = float(trainer.split("median ")[1].split(" s x 8 x 32")[0])
  tokens = float(trainer.split(" target positions/s")[0])
  assert abs(tokens - 8 * 32 / step) <= 0.5 + 0.01 * tokens  # the ratio divides by this run
  # The other run's figure is only in the reference block, after the ratio.
  assert out.index("ratio pipeline/trainer:") < out.index("reference (") < out.index("650")
