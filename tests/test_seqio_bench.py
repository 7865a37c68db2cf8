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
  assert "trainer: 128 target positions/s (measured step 2 s x 4 x 64)" in out
  needed = float(out.split(" rows/s = ")[1].split(" examples/s needed")[0])
  assert abs(needed - 128 / 64 * per_row) < 0.06
  assert "ratio pipeline/trainer:" in out
