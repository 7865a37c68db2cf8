"""The issue's acceptance run: 2,000 generated coin-flip questions annotated
against `cot-distill teacher serve` with 20% injected errors, SIGKILLed
mid-run and resumed; the kept CoTs are exactly the correct ones, checked by
recomputing every answer independently of the teacher and of the judge."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cot_distill.teacher import records

COMMAND_RUNNER = ("import argparse, sys; from cot_distill.commands import {name}; "
                  "p = argparse.ArgumentParser(); {name}.register(p.add_subparsers()); "
                  "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
QUESTIONS, SAMPLES = 2000, 2


def cli(name, *arguments):
  return [sys.executable, "-c", COMMAND_RUNNER.format(name=name), name, *arguments]


def true_answer(question: str) -> str:
  """Heads up after an even number of flips (our own count, not the server's)."""
  flips = len(re.findall(r"\b\w+ flips the coin\.", question))
  return "yes" if flips % 2 == 0 else "no"


def stated_answer(rationale: str) -> str | None:
  found = re.findall(r"The answer is (yes|no)\.", rationale)
  return found[-1] if found else None


@pytest.mark.slow
def test_annotate_2000_generated_coin_flips_with_errors_and_a_kill(tmp_path):
  server = subprocess.Popen(cli("teacher", "serve", "--port", "0", "--error-rate", "0.2",
                                "--latency-ms", "2", "--seed", "4"),
                            stdout=subprocess.PIPE, text=True)
  try:
    url = server.stdout.readline().split()[-1]
    out = tmp_path / "run"
    command = cli("annotate", "--dataset", "coin_flip_gen", "--split", "train",
                  "--generate-n", str(QUESTIONS), "--steps", "4", "--seed", "0",
                  "--teacher-url", url, "--model", "synthetic-teacher",
                  "--samples", str(SAMPLES), "--out", str(out), "--concurrency", "32",
                  "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 50
    while first.poll() is None and time.monotonic() < deadline:
      done = sum((out / name).read_bytes().count(b"\n") for name in
                 (records.RECORDS_FILE, records.DROPPED_FILE) if (out / name).exists())
      if done >= QUESTIONS * SAMPLES // 3:
        os.kill(first.pid, signal.SIGKILL)
        break
      time.sleep(0.01)
    assert first.wait(timeout=30) == -signal.SIGKILL, "the run ended before it was killed"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
  finally:
    server.terminate()
    server.wait(timeout=10)
    server.stdout.close()

  kept = records.read_records(out / records.RECORDS_FILE)
  dropped = records.read_records(out / records.DROPPED_FILE)
  pairs = collections.Counter((r["id"], r["sample_index"]) for r in kept + dropped)
  assert len(pairs) == QUESTIONS * SAMPLES and max(pairs.values()) == 1
  assert {r["id"] for r in kept + dropped} == {
      f"coin_flip_gen/train/{i}" for i in range(QUESTIONS)}

  correct_rationales = collections.defaultdict(list)
  for record in sorted(kept + dropped, key=lambda r: (r["id"], r["sample_index"])):
    assert true_answer(record["question"]) == record["answer"]
    if stated_answer(record["rationale"]) == record["answer"]:
      correct_rationales[record["id"]].append(" ".join(record["rationale"].split()))
  # Kept == correct and distinct (first occurrence); dropped correct ones are duplicates.
  for record in kept:
    assert stated_answer(record["rationale"]) == record["answer"]
  kept_by_id = collections.defaultdict(list)
  for record in sorted(kept, key=lambda r: r["sample_index"]):
    kept_by_id[record["id"]].append(" ".join(record["rationale"].split()))
  for id_, rationales in correct_rationales.items():
    assert kept_by_id[id_] == list(dict.fromkeys(rationales))
  reasons = collections.Counter(r["drop_reason"] for r in dropped)
  assert set(reasons) <= {"wrong_answer", "duplicate"}
  assert 0.15 < reasons["wrong_answer"] / (QUESTIONS * SAMPLES) < 0.25
  manifest = json.loads((out / records.MANIFEST_FILE).read_text())
  assert manifest["status"] == "complete" and manifest["counts"]["kept"] == len(kept)
