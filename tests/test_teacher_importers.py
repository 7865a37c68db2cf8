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


# ---------------------------------------------------------------------------
# All twelve of Kojima et al.'s log families, every split we have, written in
# their format from the raw files (tests/kojima_log_testing.py).

import kojima_log_testing  # noqa: E402  (tests/ is on sys.path under pytest)

from cot_distill import cli  # noqa: E402
from cot_distill.teacher import alignment  # noqa: E402

ALL_SPLITS = [(name, split) for name, splits in kojima_log_testing.FAMILIES.items()
              for split in splits]
# Scenarios whose teacher text states a wrong answer or none (a hedge).
DROPPED_SCENARIOS = {"wrong": "wrong_answer", "hedge": "no_answer"}


@pytest.mark.parametrize("name, split", ALL_SPLITS)
def test_every_record_of_every_split_aligns_and_is_filtered(data_dir, tmp_path, name, split):
  log_path = tmp_path / f"{name}_zero_shot_cot.log"
  written = kojima_log_testing.write_log(data_dir, name, split, log_path)
  manifest = importers.import_kojima_log(log_path, tmp_path / "run", data_dir=data_dir)
  dataset = importers.KOJIMA_DATASETS[name].dataset
  assert (manifest["dataset"]["name"], manifest["dataset"]["split"]) == (dataset, split)
  report = manifest["alignment"]
  assert report["records"] == report["aligned"] == len(written) == manifest["dataset"]["examples"]
  assert sum(report["unaligned"].values()) == 0 and report["gold_differs"] == 0
  if name == "bigbench_date":  # Options reshuffled: matched by stem + choice set.
    assert report["by_method"]["stem_and_choice_set"] == len(written)
  kept = records.read_records(tmp_path / "run" / records.RECORDS_FILE)
  dropped = records.read_records(tmp_path / "run" / records.DROPPED_FILE)
  assert len({r["id"] for r in kept + dropped}) == len(written)  # Each example once.
  assert manifest["counts"]["kept"] == len(kept)
  for record in kept + dropped:
    source = written[record["source"]["log_index"] - 1]
    assert record["source"]["log_gold"] == source["gold"]
    expected = DROPPED_SCENARIOS.get(source["scenario"])
    assert record.get("drop_reason") == expected, (record["source"], source["scenario"])
  # The gold answer kept is the log's own (re-lettered where options moved).
  by_gold = [alignment.split_choices(r["source"]["log_question"])[1] for r in kept[:100]]
  for record, log_choices in zip(kept, by_gold):
    if log_choices:
      assert [list(c) for c in log_choices] == [
          [label, text] for label, text in record["choices"]] or name == "aqua"
      assert record["answer"] == record["source"]["log_gold"]


@pytest.mark.parametrize("name", ["aqua", "gsm8k", "object_tracking"])
def test_direct_answer_logs_import(data_dir, tmp_path, name):
  log_path = tmp_path / f"{name}_zero_shot.log"
  written = kojima_log_testing.write_log(data_dir, name, "test", log_path, method="zero_shot")
  manifest = importers.import_kojima_log(log_path, tmp_path / "run", data_dir=data_dir)
  assert manifest["alignment"]["aligned"] == len(written)
  assert manifest["prompt"]["mode"] == "zero_shot_direct"
  kept = records.read_records(tmp_path / "run" / records.RECORDS_FILE)
  assert kept and all(r["rationale"] == r["answer_completion"].strip() for r in kept)


def test_wrong_dataset_or_split_fails_clearly(data_dir, tmp_path, capsys):
  log = data_dir / "teacher_outputs" / "svamp_zero_shot_cot.log"
  with pytest.raises(importers.ImportSourceError,
                     match=r"our 'svamp' split 'test'.*--dataset gsm8k --split train"):
    importers.import_kojima_log(log, tmp_path / "a", data_dir=data_dir,
                                dataset="gsm8k", split="train")
  with pytest.raises(importers.ImportSourceError, match="--split train"):
    importers.import_kojima_log(log, tmp_path / "b", data_dir=data_dir, split="train")
  code = cli.main(["annotate", "--from-log", str(log), "--out", str(tmp_path / "c"),
                   "--data-dir", str(data_dir), "--dataset", "gsm8k", "--split", "train"])
  assert code != 0
  error = capsys.readouterr().err
  assert "svamp" in error and "--dataset gsm8k --split train" in error
  assert not (tmp_path / "c" / records.MANIFEST_FILE).exists()
  # Matching flags are accepted.
  assert cli.main(["annotate", "--from-log", str(log), "--out", str(tmp_path / "d"),
                   "--data-dir", str(data_dir), "--dataset", "svamp", "--split", "test"]) == 0


def test_partial_alignment_is_reported_per_reason_and_none_is_an_error(data_dir, tmp_path):
  log_path = tmp_path / "aqua_zero_shot_cot.log"
  kojima_log_testing.write_log(data_dir, "aqua", "test", log_path)
  text = log_path.read_text()
  # Record 1: a question we do not have; record 2: its options changed.
  questions = [line for line in text.split("\n") if line.startswith("Q: ")]
  text = text.replace(questions[0], "Q: A question nobody asked? Answer Choices: (A) 1 (B) 2", 1)
  text = text.replace(questions[1], questions[1].rpartition("(E)")[0] + "(E) 123456789", 1)
  log_path.write_text(text)
  manifest = importers.import_kojima_log(log_path, tmp_path / "run", data_dir=data_dir)
  assert manifest["alignment"]["unaligned"] == {
      "question_not_in_dataset": 1, "choices_differ": 1, "already_aligned": 0}
  assert manifest["alignment"]["unaligned_log_indices"] == {
      "question_not_in_dataset": [1], "choices_differ": [2]}
  assert manifest["alignment"]["aligned"] == 252
  # A log aligned to the wrong examples: nothing aligns, and that is an error.
  gsm8k = registry.load("gsm8k", "test", data_dir=data_dir)
  with pytest.raises(importers.ImportSourceError,
                     match=r"0 of 254 records aligned.*question_not_in_dataset=254"):
    importers.import_kojima_log(log_path, tmp_path / "none", examples=gsm8k)
  assert not (tmp_path / "none" / records.MANIFEST_FILE).exists()


def test_jsonl_alignment_report_and_error_on_zero(tmp_path):
  examples = [Example(id="d/s/0", dataset="d", split="s", question='Is "ice" cold?',
                      answer="yes", answer_type=AnswerType.YES_NO)]
  source = tmp_path / "cots.jsonl"
  write_jsonl(source, [{"question": "Is \u201cice\u201d   cold?", "rationale": "The answer is yes."},
                       {"question": "Unknown?", "rationale": "The answer is no."}])
  manifest = importers.import_jsonl(source, tmp_path / "run", examples=examples,
                                    dataset="d", split="s")
  assert manifest["alignment"]["aligned"] == 1
  assert manifest["alignment"]["unaligned_lines"] == {"question_not_in_dataset": [2]}
  write_jsonl(source, [{"question": "Unknown?", "rationale": "The answer is no."}])
  with pytest.raises(importers.ImportSourceError, match="0 of 1 records aligned"):
    importers.import_jsonl(source, tmp_path / "run2", examples=examples, dataset="d", split="s")


def test_split_choices_undoes_their_rewriting():
  stem, choices = alignment.split_choices(
      "Area? Answer Choices: (A)  (ay\u2212by) /2 (B) 5 (\u221a3 + 1)  (C) 8.75 (D) 8.75")
  assert stem == "Area?"
  assert [label for label, _ in choices] == ["A", "B", "C", "D"]
  assert alignment.text_key(choices[1][1]) == alignment.text_key("5(\u221a3 + 1)")
  stem, choices = alignment.split_choices(
      "Alice has the \nWhich choice is true ? Answer Choices: (A) Sam. (B) Helga. (C) Karl.")
  assert stem == "Alice has the" and choices[2] == ("C", "Karl.")
  assert alignment.split_choices("No choices here (A) x") == ("No choices here (A) x", None)


def test_reordered_options_are_relettered_and_repeats_are_counted():
  example = Example(id="d/t/0", dataset="d", split="t", question="Pick?", answer="A",
                    answer_type="multiple_choice", choices=(("A", "x"), ("B", "y"), ("C", "x")))
  aligner = alignment.Aligner([example])
  result = aligner.align("Pick? Answer Choices: (A) y (B) x (C) x", gold="B")
  assert result.method == alignment.STEM_AND_CHOICE_SET
  assert result.example.choices == (("A", "y"), ("B", "x"), ("C", "x"))
  assert result.example.answer == "B" and result.gold_agrees
  assert result.example.meta["dataset_lettering"]["answer"] == "A"
  assert aligner.align("Pick? Answer Choices: (A) x (B) y (C) x") == "already_aligned"
