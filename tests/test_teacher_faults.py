"""Issue 14: annotation against broken, slow and odd teachers ends in bounded
time with the right status and exit code; bad inputs end with exit 2 and a
message naming file, line and field."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

import pytest

from cot_distill.commands import annotate as annotate_command
from cot_distill.data import symbolic
from cot_distill.teacher import cache as cache_lib
from cot_distill.teacher import client as client_lib
from cot_distill.teacher import concurrency
from cot_distill.teacher import records
from cot_distill.teacher import server as server_lib

MODEL = "synthetic-teacher"


def run_annotate(*argv):
  parser = argparse.ArgumentParser()
  annotate_command.register(parser.add_subparsers())
  args = parser.parse_args(["annotate", *map(str, argv)])
  return args.func(args)


def examples_file(tmp_path, count=6, samples_seed=3):
  examples = symbolic.generate_coin_flip(count, num_people=3, seed=samples_seed, split="train")
  path = tmp_path / "examples.jsonl"
  path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  return path


def annotate_args(tmp_path, url, *extra, out="run"):
  return ["--dataset", "coin_flip_gen", "--examples", examples_file(tmp_path),
          "--teacher-url", url, "--model", MODEL, "--out", tmp_path / out,
          "--cache-dir", tmp_path / "cache", "--no-progress", "--timeout", "0.5", *extra]


def dead_url():
  with server_lib.start_local_teacher() as teacher:
    return teacher.url  # Nothing listens there once stopped.


@pytest.mark.parametrize("faults, failure_class", [
    (None, "connection"),  # A dead port.
    (server_lib.Faults(rate_html=1.0), "not_json"),
    (server_lib.Faults(rate_malformed=1.0), "not_json"),
    (server_lib.Faults(rate_500=1.0), "server_error"),
    (server_lib.Faults(rate_empty=1.0), "empty_choices"),
    (server_lib.Faults(rate_timeout=1.0, timeout_s=30.0), "timeout"),  # A hung server.
], ids=["dead_port", "html", "invalid_json", "http_500", "empty_choices", "hung"])
def test_every_fault_class_stops_early_with_failed_status(tmp_path, capsys, faults,
                                                          failure_class):
  started = time.monotonic()
  if faults is None:
    code = run_annotate(*annotate_args(tmp_path, dead_url()))
    requests = None
  else:
    with server_lib.start_local_teacher(faults=faults) as teacher:
      code = run_annotate(*annotate_args(tmp_path, teacher.url))
      requests = teacher.server.stats["requests"]
  elapsed = time.monotonic() - started
  assert code == 1
  assert elapsed < 15, f"took {elapsed:.1f}s"
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["status"] == "failed"
  assert manifest["stopped"]["failure_class"] == failure_class
  assert manifest["stopped"]["consecutive_failures"] == 5
  assert manifest["counts"]["kept"] == 0
  if requests is not None:
    assert requests <= 8, "the breaker should stop long before every question is tried"
  printed = capsys.readouterr().out
  assert "FAILED" in printed and failure_class in printed
  assert f"annotate --resume {tmp_path / 'run'}" in printed


def test_a_stopped_run_resumes_against_a_healthy_teacher(tmp_path):
  assert run_annotate(*annotate_args(tmp_path, dead_url())) == 1
  with server_lib.start_local_teacher() as teacher:
    assert run_annotate("--resume", tmp_path / "run", "--teacher-url", teacher.url,
                        "--cache-dir", tmp_path / "cache", "--no-progress") == 0
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["status"] == "complete" and manifest["stopped"] is None
  assert manifest["counts"]["questions_done"] == 6 and manifest["counts"]["samples"] == 6


def test_a_bad_key_stops_before_any_question_is_sent(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("FAULTS_TEST_KEY", "sk-wrong-key-123")
  with server_lib.start_local_teacher(api_key="sk-right-key") as teacher:
    code = run_annotate(*annotate_args(tmp_path, teacher.url, "--api-key-env",
                                       "FAULTS_TEST_KEY"))
    paths = [entry.path for entry in teacher.server.log]
  assert code == 1
  assert paths == ["/v1/models"]  # Refused once; no completion request at all.
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["status"] == "failed" and manifest["stopped"]["failure_class"] == "auth"
  printed = capsys.readouterr().out
  assert "auth" in printed and "sk-wrong-key-123" not in printed
  for path in (tmp_path / "run").iterdir():
    assert b"sk-wrong-key-123" not in path.read_bytes()


def test_some_failures_make_a_partial_run_and_allow_failures_accepts_them(tmp_path, capsys):
  faults = server_lib.Faults(rate_500=0.3)
  with server_lib.start_local_teacher(faults=faults, seed=1) as teacher:
    args = annotate_args(tmp_path, teacher.url, "--max-attempts", "1",
                         "--max-consecutive-failures", "50")
    code = run_annotate(*args)
    manifest = records.read_manifest(tmp_path / "run")
    failed = manifest["counts"]["dropped"]["failed"]
    assert 0 < failed < 6 and manifest["status"] == "partial" and code == 1
    assert manifest["counts"]["failed_by_class"] == {"server_error": failed}
    assert "server_error" in capsys.readouterr().out
    # The same finished run, judged with a tolerance: exit 0.
    assert run_annotate(*args, "--allow-failures", "0.9") == 0


def test_oversized_completions_are_cut_before_records_and_cache(tmp_path):
  faults = server_lib.Faults(rate_oversized=1.0, oversized_chars=2_000_000)
  with server_lib.start_local_teacher(faults=faults) as teacher:
    code = run_annotate(*annotate_args(tmp_path, teacher.url, "--max-tokens", "64",
                                       "--timeout", "20"))
  assert code == 0  # Nothing failed: the samples were answered, and dropped.
  dropped = records.read_records(tmp_path / "run" / records.DROPPED_FILE)
  assert [r["drop_reason"] for r in dropped] == ["oversized_response"] * 6
  cap = client_lib.response_char_cap(64, 16.0)
  assert all(len(r["rationale"]) == cap for r in dropped)
  assert (tmp_path / "run" / records.DROPPED_FILE).stat().st_size < 6 * cap * 2 + 20_000
  assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) < 6 * cap * 2
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["counts"]["dropped"]["oversized_response"] == 6


class SerialServer(server_lib.TeacherServer):
  """A llama.cpp-like teacher: computes one request at a time, ignores `n`,
  and records what it was asked."""

  def __init__(self, compute_s, **kwargs):
    super().__init__(**kwargs)
    self.compute_s = compute_s
    self.bodies = []
    self.waiting = 0
    self.most_waiting = 0
    self._lock = None

  async def _generate(self, path, request):
    self._lock = self._lock or asyncio.Lock()
    self.bodies.append(request)
    self.waiting += 1
    self.most_waiting = max(self.most_waiting, self.waiting)
    async with self._lock:
      self.waiting -= 1
      await asyncio.sleep(self.compute_s)
      return await super()._generate(path, {**request, "n": 1})


def test_a_serial_server_that_ignores_n_is_annotated_without_timeouts(tmp_path, caplog):
  server = SerialServer(0.08, model_name=MODEL)
  caplog.set_level(logging.WARNING)
  with server_lib.start_local_teacher(server=server) as teacher:
    code = run_annotate(*annotate_args(tmp_path, teacher.url, "--samples", "2",
                                       "--concurrency", "16", "--timeout", "1"))
  assert code == 0
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["status"] == "complete"
  assert manifest["counts"]["dropped"]["failed"] == 0 and manifest["counts"]["samples"] == 12
  assert manifest["requests"]["failed_attempts_this_session"] == {}
  assert manifest["teacher"]["ignores_n"] is True
  assert sum("ignores `n`" in r.getMessage() for r in caplog.records) == 1
  # Only the first wave asked for n=2; everything after, one sample per request.
  asked = [body["n"] for body in server.bodies]
  assert asked.count(2) <= 4 and asked.count(1) == 12
  assert server.most_waiting <= 8  # A fixed limit would queue 16.


def test_the_same_server_with_fixed_concurrency_times_out(tmp_path, caplog):
  """The control: 16 requests in flight queue past the time-out."""
  server = SerialServer(0.08, model_name=MODEL)
  caplog.set_level(logging.WARNING)
  with server_lib.start_local_teacher(server=server) as teacher:
    run_annotate(*annotate_args(tmp_path, teacher.url, "--samples", "4", "--separate-requests",
                                "--concurrency", "16", "--timeout", "1",
                                "--fixed-concurrency", "--max-attempts", "1"))
  manifest = records.read_manifest(tmp_path / "run")
  assert manifest["requests"]["failed_attempts_this_session"].get("timeout", 0) > 0
  assert any("requests are timing out" in r.getMessage() for r in caplog.records)


def test_stop_sequences_reach_the_server(tmp_path):
  server = SerialServer(0.0, model_name=MODEL)
  with server_lib.start_local_teacher(server=server) as teacher:
    assert run_annotate(*annotate_args(tmp_path, teacher.url, out="hinted")) == 0
    hinted = [body.get("stop") for body in server.bodies]
    server.bodies.clear()
    assert run_annotate(*annotate_args(tmp_path, teacher.url, "--prompt-mode", "zero_shot",
                                       out="zero")) == 0
  assert hinted == [["\n"]] * 6  # One-line exemplars: stop at the end of the line.
  stops = [body.get("stop") for body in server.bodies]
  assert stops.count(["\n\nQ:", "\nQ:"]) == 6  # Stage 1.
  assert stops.count(["\n"]) == 6  # Stage 2: the answer line.


def test_a_mistyped_model_is_an_error_naming_the_served_models(tmp_path, capsys):
  with server_lib.start_local_teacher() as teacher:
    args = annotate_args(tmp_path, teacher.url)
    args[args.index(MODEL)] = "synthetic-teachr"
    assert run_annotate(*args) == 2
    assert teacher.server.stats["requests"] == 0
  error = capsys.readouterr().err
  assert "'synthetic-teachr' is not served" in error and MODEL in error
  assert not (tmp_path / "run").exists()


def test_the_cache_is_keyed_on_the_endpoint(tmp_path):
  cache = cache_lib.ResponseCache(tmp_path / "cache")
  prompt = "Q: A coin is heads up. Ada flips the coin. Is the coin still heads up?\nA:"

  async def ask(url):
    async with client_lib.TeacherClient(url, MODEL, cache=cache) as teacher:
      await teacher.generate(client_lib.COMPLETION, prompt, client_lib.SamplingParams())
      return teacher.stats.cache_hits
  with server_lib.start_local_teacher() as first, server_lib.start_local_teacher() as second:
    assert asyncio.run(ask(first.url)) == 0
    assert asyncio.run(ask(first.url)) == 1
    assert asyncio.run(ask(second.url)) == 0  # Another server: not its answer.
    assert len(second.server.log) == 1


@pytest.mark.parametrize("line, field", [
    ({"dataset": "d", "split": "train", "question": "q", "answer": "yes",
      "answer_type": "yes_no"}, "'id': missing"),
    ({"id": "d/train/0", "dataset": "d", "split": "train", "question": None, "answer": "yes",
      "answer_type": "yes_no"}, "'question': must be a non-empty string, got null"),
    ({"id": "d/train/0", "dataset": "d", "split": "train", "question": "q", "answer": "A",
      "answer_type": "multiple_choice", "choices": "AB"}, "'choices': must be a list"),
    ({"id": "d/train/0", "dataset": "d", "split": "train", "question": "q", "answer": "5",
      "answer_type": "yes_no"}, "'answer': a yes_no question needs 'yes' or 'no'"),
    ({"id": "d/train/0", "dataset": "d", "split": "train", "question": "q", "answer": "F",
      "answer_type": "multiple_choice", "choices": [["A", "a"], ["B", "b"]]},
     "'answer': must be one of the choice labels"),
])
def test_bad_example_lines_name_file_line_and_field(tmp_path, capsys, line, field):
  good = symbolic.generate_coin_flip(1, num_people=2, seed=0, split="train")[0].to_dict()
  path = tmp_path / "examples.jsonl"
  path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
  code = run_annotate("--dataset", "coin_flip_gen", "--examples", path, "--teacher-url",
                      dead_url(), "--model", MODEL, "--out", tmp_path / "run", "--no-progress")
  error = capsys.readouterr().err
  assert code == 2
  assert f"{path}:2: field {field}" in error, error
  assert not (tmp_path / "run").exists()


def test_an_empty_examples_file_is_an_error(tmp_path, capsys):
  path = tmp_path / "examples.jsonl"
  path.write_text("\n")
  code = run_annotate("--dataset", "coin_flip_gen", "--examples", path, "--teacher-url",
                      dead_url(), "--model", MODEL, "--out", tmp_path / "run")
  assert code == 2 and "holds no examples" in capsys.readouterr().err


def test_a_records_line_without_id_names_file_line_and_field(tmp_path, capsys):
  with server_lib.start_local_teacher() as teacher:
    assert run_annotate(*annotate_args(tmp_path, teacher.url)) == 0
    records_file = tmp_path / "run" / records.RECORDS_FILE
    lines = records_file.read_text().splitlines(keepends=True)
    broken = json.loads(lines[0])
    del broken["id"]
    records_file.write_text(json.dumps(broken) + "\n" + "".join(lines[1:]))
    assert run_annotate("--resume", tmp_path / "run", "--no-progress") == 2
  error = capsys.readouterr().err
  assert f"{records_file}:1: field 'id' is missing" in error


def test_adaptive_limit_grows_then_halves_once_per_round_trip():
  limit = concurrency.AdaptiveLimit(16, initial=2)
  ticket = 0
  for _ in range(6):  # Slow start: +1 per on-time answer.
    limit.on_success(ticket, 0.1)
  assert limit.allowed == 8
  old_ticket = ticket
  limit.on_congestion(old_ticket)
  assert limit.allowed == 4
  limit.on_congestion(old_ticket)  # Sent before the decrease: no second halving.
  assert limit.allowed == 4
  for _ in range(8):  # Additive increase now: about +1 per round trip of 4.
    limit.on_success(limit._epoch, 0.1)  # pylint: disable=protected-access
  assert limit.allowed == 5
  for _ in range(20):  # Latency far above the fastest: requests are queueing.
    limit.on_success(limit._epoch, 2.0)  # pylint: disable=protected-access
  assert limit.allowed < 5


def test_breaker_counts_one_class_in_a_row():
  breaker = concurrency.CircuitBreaker(3)
  breaker.failure("timeout", "a")
  breaker.failure("server_error", "b")  # Another class restarts the count.
  breaker.failure("timeout", "c")
  breaker.success()
  breaker.failure("timeout", "d")
  breaker.failure("timeout", "e")
  breaker.failure("rate_limited", "429s do not count")
  with pytest.raises(concurrency.CircuitOpenError, match="3 consecutive timeout"):
    breaker.failure("timeout", "f")
  with pytest.raises(concurrency.CircuitOpenError):
    breaker.check()
  with pytest.raises(concurrency.CircuitOpenError, match="first auth error"):
    concurrency.CircuitBreaker(3).failure("auth", "http 401")
