"""Importers: the five GPT-3 logs and generic JSONL, through the same filter."""

from __future__ import annotations

import json

import pytest

from cot_distill.commands import answers as answers_command
from cot_distill.data import registry
from cot_distill.data.example import AnswerType, Example
from cot_distill.teacher import importers
from cot_distill.teacher import kojima_logs
from cot_distill.teacher import records

# log -> (records, the log's own correct count, our kept count). Every
# difference is one the answers engineer documents in
# tests/test_answers_agreement.py (log's exact-string scoring: gold "40,000",
# "14.00", hyphenated letters; one CoT answering before the trigger).
EXPECTED = {
    "gsm8k": (1319, 537, 542),
    "svamp": (1000, 621, 621),
    "strategyqa": (2290, 1254, 1255),
    "last_letters": (500, 288, 296),
    "coin_flip": (500, 457, 457),
}


@pytest.fixture(scope="module")
def imported(data_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("imports")
  return {name: (out / name, importers.import_kojima_log(
      data_dir / "teacher_outputs" / f"{name}_zero_shot_cot.log", out / name,
      data_dir=data_dir)) for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kept_counts_equal_log_correct_up_to_documented_disagreements(
    imported, data_dir, name):
  total, log_correct, our_kept = EXPECTED[name]
  directory, manifest = imported[name]
  kept = records.read_records(directory / records.RECORDS_FILE)
  dropped = records.read_records(directory / records.DROPPED_FILE)
  assert manifest["log"]["unaligned_records"] == 0
  assert len(kept) + len(dropped) == total
  assert manifest["log"]["log_correct"] == log_correct
  assert len(kept) == manifest["counts"]["kept"] == our_kept
  # Kept means "log correct" except exactly the documented disagreements.
  log = kojima_logs.parse_log(data_dir / "teacher_outputs" / f"{name}_zero_shot_cot.log")
  documented = {d.index for d in answers_command.log_agreement(log).disagreements}
  kept_but_log_wrong = {r["source"]["log_index"] for r in kept if not r["source"]["log_correct"]}
  assert kept_but_log_wrong == documented
  assert manifest["log"]["dropped_but_log_correct"] == 0
  # Every record is aligned to its own question and gold answer.
  examples = {e.id: e for e in registry.load(manifest["dataset"]["name"],
                                             manifest["dataset"]["split"], data_dir=data_dir)}
  assert len({r["id"] for r in kept + dropped}) == total
  for record in kept[:50]:
    assert record["answer"] == examples[record["id"]].answer
    assert record["prompt"]["mode"] == "zero_shot"
    assert record["teacher"]["model"] == "text-davinci-002"


def test_imported_record_fields(imported):
  directory, _ = imported["coin_flip"]
  record = records.read_records(directory / records.RECORDS_FILE)[0]
  for key in ("id", "question", "answer", "answer_type", "rationale", "predicted_answer",
              "correct", "extraction_rule", "sample_index", "teacher", "prompt", "usage",
              "finish_reason", "created_at"):
    assert key in record
  assert not record["rationale"].startswith("Let's think step by step.")
  assert record["correct"] is True and record["sample_index"] == 0


def test_reimport_is_a_no_op_and_a_different_source_is_refused(imported, data_dir):
  directory, manifest = imported["svamp"]
  again = importers.import_kojima_log(
      data_dir / "teacher_outputs" / "svamp_zero_shot_cot.log", directory, data_dir=data_dir)
  assert again == manifest
  with pytest.raises(ValueError, match="different run"):
    importers.import_kojima_log(data_dir / "teacher_outputs" / "coin_flip_zero_shot_cot.log",
                                directory, data_dir=data_dir)


def write_jsonl(path, lines):
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_generic_jsonl_with_gold_in_the_file(tmp_path):
  source = tmp_path / "cots.jsonl"
  write_jsonl(source, [
      {"q": "1 + 1?", "out": {"text": "1 + 1 = 2. The answer is 2."}, "gold": "2"},
      {"q": "1 + 1?", "out": {"text": "One and one make 2. The answer is 2."}, "gold": "2"},
      {"q": "1 + 1?", "out": {"text": "1 + 1 = 3. The answer is 3."}, "gold": "2"},
      {"q": "2 * 3?", "out": {"text": "2 * 3 = 6."}, "gold": "6"},
  ])
  manifest = importers.import_jsonl(source, tmp_path / "run", question_field="q",
                                    rationale_field="out.text", answer_field="gold",
                                    answer_type="number", dataset="mine", split="train")
  kept = records.read_records(tmp_path / "run" / records.RECORDS_FILE)
  dropped = records.read_records(tmp_path / "run" / records.DROPPED_FILE)
  assert [(r["id"], r["sample_index"]) for r in kept] == [
      ("mine/train/0", 0), ("mine/train/0", 1), ("mine/train/1", 0)]
  assert [(r["id"], r["drop_reason"]) for r in dropped] == [("mine/train/0", "wrong_answer")]
  assert kept[2]["extraction_rule"] == "last_number"
  assert manifest["counts"]["kept"] == 3 and manifest["counts"]["questions"] == 2


def test_generic_jsonl_aligned_to_a_dataset_with_predicted_field(tmp_path):
  examples = [Example(id="d/s/0", dataset="d", split="s", question="Is  ice cold?",
                      answer="yes", answer_type=AnswerType.YES_NO)]
  source = tmp_path / "cots.jsonl"
  write_jsonl(source, [{"question": "Is ice cold?", "rationale": "Ice is frozen water.",
                        "pred": "yes"},
                       {"question": "Unknown question?", "rationale": "x", "pred": "no"}])
  manifest = importers.import_jsonl(source, tmp_path / "run", predicted_field="pred",
                                    examples=examples, dataset="d", split="s")
  kept = records.read_records(tmp_path / "run" / records.RECORDS_FILE)
  assert [r["id"] for r in kept] == ["d/s/0"]
  assert kept[0]["rationale"] == "Ice is frozen water."
  assert manifest["unaligned_lines"] == 1


def test_generic_jsonl_errors_name_file_and_line(tmp_path):
  source = tmp_path / "bad.jsonl"
  source.write_text('{"question": "a", "rationale": "b", "answer": "1"}\n{"question": "c"}\n')
  with pytest.raises(importers.ImportSourceError, match=r"bad.jsonl:2: missing field 'rationale'"):
    importers.import_jsonl(source, tmp_path / "run", answer_type="number")
  with pytest.raises(importers.ImportSourceError, match="--answer-type"):
    importers.import_jsonl(source, tmp_path / "run")
