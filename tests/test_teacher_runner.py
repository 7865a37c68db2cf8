"""The filter, the run directory and the runner (in-process, real HTTP)."""

from __future__ import annotations

import json

import pytest

from cot_distill import answers
from cot_distill.data import symbolic
from cot_distill.data.example import AnswerType, Example
from cot_distill.teacher import filtering
from cot_distill.teacher import records
from cot_distill.teacher import runner
from cot_distill.teacher import server as server_lib

EXAMPLE = Example(id="toy/train/0", dataset="toy", split="train", question="2 + 3?",
                  answer="5", answer_type=AnswerType.NUMBER, meta={"source": [1, 2]})
TEACHER = {"model": "m", "temperature": 0.7, "top_p": 1.0, "max_tokens": 9, "n": 7,
           "seed": 0, "endpoint": "completions"}
PROMPT = {"template_id": "t", "template_hash": "h", "exemplar_set_id": "e", "hinted": True,
          "style": "completion", "mode": "hinted"}


def test_every_drop_reason_and_distinct_correct_samples():
  samples = [
      filtering.Sample(0, " 2 + 3 = 5. The answer is 5.", " 2 + 3 = 5. The answer is 5."),
      filtering.Sample(1, "2 + 3 = 5.  The answer is 5.", "2 + 3 = 5.  The answer is 5."),
      filtering.Sample(2, "2 + 3 = 6. The answer is 6.", "2 + 3 = 6. The answer is 6."),
      filtering.Sample(3, "I do not know.", "I do not know."),
      filtering.Sample(4, "2 + 3 is", "2 + 3 is", finish_reason="length"),
      filtering.Sample(5, "  \n", "  \n"),
      filtering.Sample(6, "", "", error="timeout (gave up after 6 attempts)"),
      filtering.Sample(7, "Adding gives 5. The answer is 5.", "Adding gives 5. The answer is 5."),
  ]
  kept, dropped = filtering.classify_samples(EXAMPLE, samples, teacher=TEACHER, prompt=PROMPT,
                                             created_at="2026-01-01T00:00:00+00:00")
  assert [r["sample_index"] for r in kept] == [0, 7]
  assert [(r["sample_index"], r["drop_reason"]) for r in dropped] == [
      (1, "duplicate"), (2, "wrong_answer"), (3, "no_answer"), (4, "truncated"),
      (5, "empty"), (6, "failed")]
  record = kept[0]
  assert record["rationale"] == " 2 + 3 = 5. The answer is 5."
  assert (record["predicted_answer"], record["correct"], record["extraction_rule"]) == (
      "5", True, "marker_number")
  assert record["teacher"] == TEACHER and record["prompt"] == PROMPT
  assert dropped[-1]["error"].startswith("timeout")
  for key, value in EXAMPLE.to_dict().items():
    assert record[key] == value


def test_filter_uses_the_shared_judge():
  text = "So the answer is $1,000.00."
  kept, _ = filtering.classify_samples(
      Example(id="a/b/0", dataset="a", split="b", question="q", answer="1000",
              answer_type=AnswerType.NUMBER), [filtering.Sample(0, text, text)],
      teacher=TEACHER, prompt=PROMPT)
  verdict = answers.judge(text, "1000", AnswerType.NUMBER)
  assert kept[0]["predicted_answer"] == verdict.predicted
  assert kept[0]["extraction_rule"] == verdict.rule


def test_example_fields_equals_to_dict():
  with_choices = Example(id="x/y/1", dataset="x", split="y", question="q", answer="B",
                         answer_type="multiple_choice", choices=(("A", "a"), ("B", "b")),
                         gold_rationale="r", meta={"k": {"n": [1]}})
  for example in (EXAMPLE, with_choices):
    assert filtering.example_fields(example) == example.to_dict()


def test_apportion_sums_exactly():
  assert filtering.apportion(10, [1, 1, 1]) == [4, 3, 3]
  assert sum(filtering.apportion(101, [3.0, 5.0, 0.0])) == 101
  assert filtering.apportion(5, [0, 0]) == [3, 2]


def line(id_, index, reason=None):
  record = {"id": id_, "sample_index": index, "usage": {"prompt_tokens": 1,
                                                         "completion_tokens": 2}}
  if reason:
    record["drop_reason"] = reason
  return json.dumps(record) + "\n"


def test_recovery_cuts_torn_lines_and_incomplete_questions(tmp_path):
  (tmp_path / records.RECORDS_FILE).write_text(
      line("q/0", 0) + line("q/1", 1) + line("q/2", 0) + '{"id": "q/2", "sample_in')
  (tmp_path / records.DROPPED_FILE).write_text(
      line("q/0", 1, "wrong_answer") + line("q/1", 0, "duplicate") + line("q/3", 1, "empty"))
  run = records.RunDirectory.open(tmp_path, samples=2)
  run.close()
  # q/0 and q/1 are complete; q/2 lost its second line to the kill; q/3 had
  # only its dropped half on disk.
  assert run.done_ids == {"q/0", "q/1"}
  assert run.repaired == {"torn_lines": 1, "incomplete_questions": 2,
                          "failed_questions_to_retry": 0}
  kept = records.read_records(tmp_path / records.RECORDS_FILE)
  dropped = records.read_records(tmp_path / records.DROPPED_FILE)
  assert [(r["id"], r["sample_index"]) for r in kept] == [("q/0", 0), ("q/1", 1)]
  assert [(r["id"], r["sample_index"]) for r in dropped] == [("q/0", 1), ("q/1", 0)]
  assert run.counts == {"kept": 2, "wrong_answer": 1, "duplicate": 1}
  assert run.tokens == {"prompt_tokens": 4, "completion_tokens": 8}


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
  (tmp_path / records.RECORDS_FILE).write_text(line("q/0", 0) + "garbage\n" + line("q/1", 0))
  with pytest.raises(records.RunDirectoryError, match=r"records.jsonl:2: not a JSON object"):
    records.RunDirectory.open(tmp_path, samples=1)


def coin_examples(count, people=3):
  return symbolic.generate_coin_flip(count, num_people=people, seed=11, split="train")


def config(url, **overrides):
  values = dict(dataset="coin_flip_gen", split="train", teacher_url=url, model="synthetic-teacher",
                samples=2, temperature=0.7, max_tokens=128)
  values.update(overrides)
  return runner.AnnotationConfig(**values)


def options(tmp_path, **overrides):
  values = dict(concurrency=8, progress=False, cache_dir=str(tmp_path / "cache"),
                backoff_base_s=0.01, backoff_cap_s=0.05, request_timeout_s=5.0)
  values.update(overrides)
  return runner.ExecutionOptions(**values)


def all_lines(directory):
  return (records.read_records(directory / records.RECORDS_FILE),
          records.read_records(directory / records.DROPPED_FILE))


def test_annotation_with_transport_faults(tmp_path):
  examples = coin_examples(40)
  faults = server_lib.Faults(rate_429=0.1, rate_500=0.1, rate_malformed=0.1,
                             rate_truncated=0.1, retry_after_s=0.05)
  with server_lib.start_local_teacher(error_rate=0.2, faults=faults, seed=2) as teacher:
    manifest = runner.annotate(config(teacher.url), tmp_path / "run",
                               options(tmp_path, max_attempts=30), examples=examples)
    truncated_responses = teacher.server.stats["fault_truncated"]
  kept, dropped = all_lines(tmp_path / "run")
  pairs = [(r["id"], r["sample_index"]) for r in kept + dropped]
  assert sorted(pairs) == sorted((e.id, i) for e in examples for i in range(2))
  reasons = [r["drop_reason"] for r in dropped]
  assert reasons.count("truncated") == 2 * truncated_responses > 0
  assert "failed" not in reasons
  assert manifest["status"] == "complete"
  assert manifest["counts"]["kept"] == len(kept)
  assert manifest["counts"]["dropped"]["truncated"] == reasons.count("truncated")
  assert manifest["requests"]["retries"] > 0
  for record in kept:
    assert record["predicted_answer"] == record["answer"] and record["correct"]


def test_failed_requests_are_recorded_with_reason(tmp_path):
  with server_lib.start_local_teacher(faults=server_lib.Faults(rate_500=1.0)) as teacher:
    # A breaker that never opens: every question spends its attempts.
    manifest = runner.annotate(config(teacher.url), tmp_path / "run",
                               options(tmp_path, max_attempts=2, max_consecutive_failures=100),
                               examples=coin_examples(3))
  kept, dropped = all_lines(tmp_path / "run")
  assert kept == [] and len(dropped) == 6
  assert {r["drop_reason"] for r in dropped} == {"failed"}
  assert {r["failure_class"] for r in dropped} == {"server_error"}
  assert all("gave up after 2 attempts" in r["error"] for r in dropped)
  assert manifest["counts"]["dropped"]["failed"] == 6
  assert manifest["counts"]["failed_by_class"] == {"server_error": 6}
  # Nothing answered: the run failed, whatever the filter would have said.
  assert manifest["status"] == "failed" and manifest["stopped"] is None
  assert runner.exit_code(manifest) == 1 and runner.exit_code(manifest, 1.0) == 0


@pytest.mark.parametrize("mode, style", [("hinted", "chat"), ("few_shot", "completion"),
                                         ("zero_shot", "completion"), ("zero_shot", "chat")])
def test_modes_and_styles_end_to_end(tmp_path, mode, style):
  examples = coin_examples(10)
  with server_lib.start_local_teacher(error_rate=0.0) as teacher:
    manifest = runner.annotate(config(teacher.url, prompt_mode=mode, style=style),
                               tmp_path / "run", options(tmp_path), examples=examples)
    requests = len(teacher.server.log)
  kept, dropped = all_lines(tmp_path / "run")
  assert {r["drop_reason"] for r in dropped} <= {"duplicate"}
  assert len(kept) + len(dropped) == 20
  assert requests == (10 if mode != "zero_shot" else 10 + 20)
  assert kept[0]["prompt"]["mode"] == mode and kept[0]["prompt"]["style"] == style
  assert manifest["prompt"]["template_id"] == f"{mode}-{style}-v2"
  if mode == "zero_shot":
    assert manifest["prompt"]["exemplar_set_id"] is None
    assert kept[0]["answer_completion"].strip().rstrip(".") == kept[0]["answer"]


def test_rerun_costs_nothing_and_other_config_is_refused(tmp_path):
  examples = coin_examples(12)
  with server_lib.start_local_teacher(error_rate=0.2) as teacher:
    first = runner.annotate(config(teacher.url), tmp_path / "run", options(tmp_path),
                            examples=examples)
    assert len(teacher.server.log) == 12
    again = runner.annotate(config(teacher.url), tmp_path / "run", options(tmp_path),
                            examples=examples)
    # Same questions into a new directory: all answers come from the cache.
    fresh = runner.annotate(config(teacher.url), tmp_path / "fresh", options(tmp_path),
                            examples=examples)
    assert len(teacher.server.log) == 12
    assert again["counts"] == first["counts"] == fresh["counts"]
    assert fresh["requests"]["cache_hits"] == 12 and fresh["requests"]["sent"] == 0
    assert all_lines(tmp_path / "run")[0] == records.read_records(
        tmp_path / "run" / records.RECORDS_FILE)
    with pytest.raises(runner.ConfigMismatchError, match="temperature"):
      runner.annotate(config(teacher.url, temperature=0.1), tmp_path / "run",
                      options(tmp_path), examples=examples)


def test_manifest_has_no_secret_and_names_everything(tmp_path, monkeypatch):
  monkeypatch.setenv("TEACHER_KEY_FOR_TEST", "sk-very-secret-value")
  with server_lib.start_local_teacher(api_key="sk-very-secret-value") as teacher:
    manifest = runner.annotate(config(teacher.url, api_key_env="TEACHER_KEY_FOR_TEST"),
                               tmp_path / "run", options(tmp_path), examples=coin_examples(4))
  assert manifest["counts"]["dropped"]["failed"] == 0
  assert manifest["teacher"]["api_key_env"] == "TEACHER_KEY_FOR_TEST"
  assert manifest["prompt"]["exemplar_set_id"] and manifest["prompt"]["template_hash"]
  assert manifest["dataset"]["fingerprint"] == runner.dataset_fingerprint(coin_examples(4))
  for path in list((tmp_path / "run").iterdir()) + list((tmp_path / "cache").iterdir()):
    assert b"sk-very-secret-value" not in path.read_bytes()


def test_retry_failed_redoes_only_failed_questions(tmp_path):
  examples = coin_examples(6)
  with server_lib.start_local_teacher(faults=server_lib.Faults(rate_500=0.5), seed=4) as teacher:
    first = runner.annotate(config(teacher.url), tmp_path / "run",
                            options(tmp_path, max_attempts=1), examples=examples)
  failed = first["counts"]["dropped"]["failed"]
  assert 0 < failed < 12
  with server_lib.start_local_teacher() as teacher:
    second = runner.annotate(config(teacher.url), tmp_path / "run",
                             options(tmp_path, retry_failed=True), examples=examples)
    assert len(teacher.server.log) == failed // 2  # One request per failed question.
  assert second["counts"]["dropped"]["failed"] == 0 and second["counts"]["samples"] == 12
  kept, dropped = all_lines(tmp_path / "run")
  assert sorted((r["id"], r["sample_index"]) for r in kept + dropped) == sorted(
      (e.id, i) for e in examples for i in range(2))


def test_progress_line_shows_drops_by_reason_and_timeouts_from_the_first_update(capsys, caplog):
  import collections  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import client as client_lib  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import concurrency  # pylint: disable=g-import-not-at-top
  run = types.SimpleNamespace(counts=collections.Counter(), tokens={"prompt_tokens": 0,
                                                                    "completion_tokens": 0})
  teacher = types.SimpleNamespace(stats=client_lib.ClientStats(), request_timeout_s=5.0,
                                  concurrency=concurrency.AdaptiveLimit(16))
  progress = runner._Progress(3, 0, "annotate", enabled=True)  # pylint: disable=protected-access
  progress.update(run, teacher, force=True, count=False)  # At start.
  run.counts.update(kept=1, wrong_answer=1)
  teacher.stats.reasons["timeout"] = 2
  caplog.set_level(logging.WARNING)
  progress.update(run, teacher)  # The first answered question, at once.
  progress.close()
  line = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
  assert "kept=1" in line and "wrong_answer=1" in line and "TIMEOUTS=2" in line, line
  assert "limit=4" in line
  assert any("requests are timing out (2 so far" in r.getMessage() for r in caplog.records)
