"""SIGKILL an annotation at several instants, rerun the same command: nothing
lost, nothing duplicated, and the API key in no file or log."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

from cot_distill.data import symbolic
from cot_distill.teacher import records
from cot_distill.teacher import server as server_lib

SECRET = "sk-resume-test-7f3a9c1e"
# Runs `cot-distill annotate ...` through the command module alone, so the
# test does not depend on every other subcommand being importable.
# Logging at DEBUG, so the key check below covers every log line.
CLI = ("import argparse, logging, sys; from cot_distill.commands import annotate; "
       "logging.basicConfig(level=logging.DEBUG); "
       "p = argparse.ArgumentParser(); annotate.register(p.add_subparsers()); "
       "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def annotate_command(url, examples_file, out, cache):
  return [sys.executable, "-c", CLI, "annotate", "--dataset", "coin_flip_gen",
          "--split", "train", "--examples", str(examples_file), "--teacher-url", url,
          "--model", "synthetic-teacher", "--samples", "2", "--out", str(out), "--concurrency", "8",
          "--cache-dir", str(cache), "--api-key-env", "RESUME_TEST_KEY", "--timeout", "10"]


def line_count(directory):
  total = 0
  for name in (records.RECORDS_FILE, records.DROPPED_FILE):
    try:
      total += (directory / name).read_bytes().count(b"\n")
    except FileNotFoundError:
      pass
  return total


def run_and_kill(command, env, log, directory, kill_after_lines, deadline_s=60):
  """Starts the command; SIGKILLs it once `kill_after_lines` lines exist."""
  process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
  started = time.monotonic()
  while process.poll() is None and time.monotonic() - started < deadline_s:
    if line_count(directory) >= kill_after_lines:
      os.kill(process.pid, signal.SIGKILL)
      break
    time.sleep(0.005)
  return process.wait(timeout=deadline_s)


def test_sigkill_at_several_instants_then_resume(tmp_path):
  examples = symbolic.generate_coin_flip(200, num_people=3, seed=5, split="train")
  examples_file = tmp_path / "examples.jsonl"
  examples_file.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  out, cache, log_path = tmp_path / "run", tmp_path / "cache", tmp_path / "annotate.log"
  env = dict(os.environ, RESUME_TEST_KEY=SECRET)
  with server_lib.start_local_teacher(error_rate=0.2, latency_ms=15, api_key=SECRET,
                                      seed=9) as teacher, open(log_path, "w") as log:
    command = annotate_command(teacher.url, examples_file, out, cache)
    return_codes = []
    for kill_after_lines in (0, 100, 200, 320):  # 0: killed during start-up.
      return_codes.append(run_and_kill(command, env, log, out, kill_after_lines))
    final = subprocess.run(command, env=env, stdout=log, stderr=log, timeout=120)
    requests = len(teacher.server.log)
  assert final.returncode == 0, log_path.read_text()[-2000:]
  assert -signal.SIGKILL in return_codes
  kept = records.read_records(out / records.RECORDS_FILE)
  dropped = records.read_records(out / records.DROPPED_FILE)
  pairs = collections.Counter((r["id"], r["sample_index"]) for r in kept + dropped)
  expected = {(e.id, i) for e in examples for i in range(2)}
  assert set(pairs) == expected, "lost records"
  assert max(pairs.values()) == 1, "duplicated records"
  manifest = records.read_manifest(out)
  assert manifest["status"] == "complete" and manifest["sessions"] >= 2
  assert manifest["counts"]["kept"] == len(kept)
  assert manifest["counts"]["samples"] == 400
  assert sum(manifest["counts"]["dropped"].values()) == len(dropped)
  # The cache means resumed sessions resend at most what was in flight.
  assert requests <= 200 + 4 * 8
  for path in [log_path, *out.iterdir(), *cache.iterdir()]:
    assert SECRET.encode() not in path.read_bytes(), path


def test_same_command_with_other_settings_is_refused(tmp_path):
  examples = symbolic.generate_coin_flip(5, num_people=2, seed=1, split="train")
  examples_file = tmp_path / "examples.jsonl"
  examples_file.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  with server_lib.start_local_teacher() as teacher:
    command = annotate_command(teacher.url, examples_file, tmp_path / "run", tmp_path / "c")
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    changed = [*command, "--prompt-mode", "few_shot"]
    result = subprocess.run(changed, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "--resume" in result.stderr and "prompt_mode" in result.stderr
  assert "Traceback" not in result.stderr
  resumed = subprocess.run([sys.executable, "-c", CLI, "annotate", "--resume",
                            str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"), "--json"],
                           capture_output=True, text=True, timeout=120)
  assert resumed.returncode == 0, resumed.stderr
  assert json.loads(resumed.stdout.splitlines()[-1])["status"] == "complete"


def run_annotate(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  from cot_distill.commands import annotate  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  annotate.register(parser.add_subparsers())
  args = parser.parse_args(["annotate", *argv])
  return args.func(args)


def test_resume_takes_new_connection_settings_and_records_them(tmp_path, capsys):
  """Issue 14 item 5: `--resume DIR --teacher-url NEW` used to keep the old URL."""
  examples = symbolic.generate_coin_flip(5, num_people=2, seed=1, split="train")
  examples_file = tmp_path / "examples.jsonl"
  examples_file.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  out, cache = tmp_path / "run", tmp_path / "cache"
  with server_lib.start_local_teacher() as first:
    assert run_annotate(["--dataset", "coin_flip_gen", "--examples", str(examples_file),
                         "--limit", "3", "--teacher-url", first.url, "--model",
                         "synthetic-teacher", "--out", str(out), "--cache-dir", str(cache),
                         "--no-progress"]) == 0
    assert len(first.server.log) == 3
  with server_lib.start_local_teacher(model_name="renamed-teacher") as second:
    code = run_annotate(["--resume", str(out), "--teacher-url", second.url, "--model",
                         "renamed-teacher", "--limit", "5", "--concurrency", "2",
                         "--timeout", "9", "--cache-dir", str(cache), "--no-progress"])
    assert code == 0
    assert len(second.server.log) == 2  # The two new questions went to the new URL.
  manifest = records.read_manifest(out)
  assert manifest["teacher"]["base_url"] == second.url and manifest["sessions"] == 2
  changed = {c["field"]: (c["from"], c["to"]) for c in manifest["changes"]}
  assert changed["teacher_url"] == (first.url, second.url)
  assert changed["model"] == ("synthetic-teacher", "renamed-teacher")
  assert changed["limit"] == (3, 5) and changed["concurrency"] == (16, 2)
  assert changed["request_timeout_s"] == (60.0, 9.0)
  assert manifest["status"] == "complete" and manifest["counts"]["questions_done"] == 5
  printed = capsys.readouterr().out
  assert "COMPLETE" in printed and "Next:" in printed


def test_resume_refuses_what_shapes_the_records(tmp_path, capsys):
  examples = symbolic.generate_coin_flip(2, num_people=2, seed=1, split="train")
  examples_file = tmp_path / "examples.jsonl"
  examples_file.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  out = tmp_path / "run"
  with server_lib.start_local_teacher() as teacher:
    assert run_annotate(["--dataset", "coin_flip_gen", "--examples", str(examples_file),
                         "--teacher-url", teacher.url, "--model", "synthetic-teacher",
                         "--out", str(out), "--no-cache", "--no-progress"]) == 0
    before = (out / records.MANIFEST_FILE).read_bytes()
    capsys.readouterr()
    for flag, value, field in (("--prompt-mode", "few_shot", "prompt_mode"),
                               ("--samples", "3", "samples"),
                               ("--exemplars", str(examples_file), "exemplars_path"),
                               ("--dataset", "last_letters_gen", "dataset"),
                               ("--max-tokens", "99", "max_tokens")):
      assert run_annotate(["--resume", str(out), flag, value, "--no-cache"]) == 2
      error = capsys.readouterr().err
      assert flag in error and field in error, error
    assert (out / records.MANIFEST_FILE).read_bytes() == before  # Nothing touched.
