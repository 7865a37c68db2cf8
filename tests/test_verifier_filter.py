"""The verifier in the annotation filter, the annotate command and the measurements."""

from __future__ import annotations

import json
import pathlib

import pytest

from cot_distill.data import symbolic
from cot_distill.data.example import AnswerType, Example
from cot_distill.teacher import filtering
from cot_distill.teacher import records
from cot_distill.teacher import runner
from cot_distill.teacher import server as server_lib
from cot_distill.verifier import measure

LABELS = pathlib.Path(__file__).parent / "testdata" / "verifier_gpt3_labels.jsonl"
COIN = Example(id="c/0", dataset="coin_flip", split="train",
               question=("A coin is heads up. Ka flips the coin. Ron does not flip the coin. "
                         "Is the coin still heads up?"),
               answer="no", answer_type=AnswerType.YES_NO)
SOUND = "Ka flips it, so it is now tails up. Ron does not flip it, so it stays tails up."
UNSOUND = "Ka flips it, so it is now heads up. Ron does not flip it, so it stays tails up."


def _classify(verify, hinted=True):
  samples = [filtering.Sample(i, text + " The answer is no.", text + " The answer is no.")
             for i, text in enumerate((SOUND, UNSOUND))]
  return filtering.classify_samples(COIN, samples, teacher={}, prompt={"hinted": hinted},
                                    verify=verify)


def test_verify_modes_in_the_filter():
  kept, dropped = _classify("off")
  assert len(kept) == 2 and not dropped and "verification" not in kept[1]
  kept, dropped = _classify("report")
  assert len(kept) == 2 and [r["verification"]["passed"] for r in kept] == [True, False]
  assert kept[1]["verification"]["reason"] == "step_inconsistent"
  kept, dropped = _classify("filter")
  assert [r["sample_index"] for r in kept] == [0]
  assert dropped[0]["drop_reason"] == "step_inconsistent"
  assert "after Ka" in dropped[0]["verification"]["detail"]
  with pytest.raises(ValueError, match="verify"):
    _classify("strict")


def _annotate(tmp_path, verify, name):
  examples = symbolic.generate_coin_flip(60, 3, seed=5, split="train")
  config = runner.AnnotationConfig(
      dataset="coin_flip_gen", split="train", teacher_url="", model="synthetic-teacher",
      samples=1, temperature=0.7, max_tokens=128, verify=verify)
  options = runner.ExecutionOptions(concurrency=8, progress=False,
                                    cache_dir=str(tmp_path / "cache"))
  with server_lib.start_local_teacher(error_rate=0.2, step_error_rate=0.3, seed=1) as teacher:
    import dataclasses  # pylint: disable=g-import-not-at-top
    config = dataclasses.replace(config, teacher_url=teacher.url)
    return runner.annotate(config, tmp_path / name, options, examples=examples)


def test_annotation_report_lists_exactly_what_filter_drops(tmp_path):
  reported = _annotate(tmp_path, "report", "report")
  filtered = _annotate(tmp_path, "filter", "filter")
  flagged = reported["counts"]["verifier_flagged"]
  assert sum(flagged.values()) > 5
  assert {r: n for r, n in filtered["counts"]["dropped"].items()
          if r in ("arithmetic_error", "step_inconsistent", "hint_parroting") and n} == flagged
  assert filtered["counts"]["kept"] == reported["counts"]["kept"] - sum(flagged.values())
  kept = records.read_records(tmp_path / "filter" / records.RECORDS_FILE)
  assert all(record["verification"]["passed"] for record in kept)
  assert filtered["config"]["verify"] == "filter"


def test_resuming_a_run_from_before_the_verifier_is_not_refused(tmp_path):
  _annotate(tmp_path, "off", "old")
  manifest_path = tmp_path / "old" / records.MANIFEST_FILE
  manifest = json.loads(manifest_path.read_text())
  del manifest["config"]["verify"]
  manifest_path.write_text(json.dumps(manifest))
  config = runner.AnnotationConfig.from_dict(manifest["config"])
  assert config.verify == "off"
  resumed = _annotate(tmp_path, "off", "old")
  assert resumed["counts"]["questions_done"] == 60


def test_annotate_command_refuses_changing_verify_on_resume(tmp_path, capsys):
  from cot_distill import cli  # pylint: disable=g-import-not-at-top
  _annotate(tmp_path, "report", "run")
  code = cli.main(["annotate", "--resume", str(tmp_path / "run"), "--verify", "filter",
                   "--no-progress", "--no-model-check"])
  assert code == 2
  assert "--verify" in capsys.readouterr().err


def test_synthetic_measurement_meets_the_targets():
  scores = measure.synthetic(per_length=15, seed=3)
  for score in scores.values():
    assert score.recall >= 0.95 and score.false_positive_rate <= 0.02


def test_hand_labels_of_real_gpt3_chains(data_dir):
  """Precision/recall against the committed labels (figures in the teacher README)."""
  labels = measure.read_labels(LABELS)
  by_dataset = {}
  for label in labels:
    by_dataset.setdefault(label["id"].split("/")[0], []).append(label)
  assert len(by_dataset["gsm8k"]) >= 100
  assert len(by_dataset["coin_flip"]) + len(by_dataset["last_letters"]) >= 100
  scores, rows = measure.labelled(LABELS, data_dir / "teacher_outputs", data_dir)
  assert len(rows) == len(labels)
  # Every chain the verifier flags is one a reader found wrong, and it drops
  # no more than 2% of the sound ones (the target).
  assert all(row["step_error"] for row in rows if row["flagged"])
  assert scores["all"].false_positive_rate <= 0.02
  assert scores["coin_flip"].recall == 1.0


def test_demo_reports_what_each_filter_keeps(tmp_path):
  """The demo's teacher injects right-answer-wrong-step chains; the answer
  filter keeps every one, the verifier none (ground truth from the server)."""
  from cot_distill import demo  # pylint: disable=g-import-not-at-top
  config = demo.DemoConfig(out_dir=str(tmp_path), size="smoke", teacher_latency_ms=0.0,
                           teacher_step_error_rate=0.3)
  data = demo.generate_data(config)
  run_dirs = demo.annotate(config, data)
  survival = demo.step_error_survival(config, data, run_dirs)
  for task in demo.TASKS:
    assert survival[task]["injected"] > 10
    assert survival[task]["answer_filter_keeps"] == survival[task]["injected"]
    assert survival[task]["verifier_keeps"] == 0
