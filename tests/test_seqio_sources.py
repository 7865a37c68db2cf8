"""Data sources: records.jsonl read lazily, split, sharded, with clear errors."""

from __future__ import annotations

import json
import logging

import pytest
import seqio

from cot_distill import seqio_sources
from cot_distill import vocabularies
from cot_distill.data.example import Example


def make_record(index: int, split: str = "train", sample: int = 0) -> dict:
  return {
      "id": f"gsm8k/{split}/{index}", "dataset": "gsm8k", "split": split,
      "question": f"What is {index} + 1?", "answer": str(index + 1),
      "answer_type": "number", "choices": None, "gold_rationale": None, "meta": {},
      "rationale": f"{index} + 1 = {index + 1}. So the answer is {index + 1}.",
      "predicted_answer": str(index + 1), "correct": True, "extraction_rule": "marker_number",
      "sample_index": sample, "teacher": {"model": "fake"}, "prompt": {}, "usage": {},
      "finish_reason": "stop", "created_at": "2024-01-01T00:00:00Z",
  }


def write_run(run_dir, records, tail: str = "") -> None:
  run_dir.mkdir(parents=True, exist_ok=True)
  text = "".join(json.dumps(r) + "\n" for r in records) + tail
  (run_dir / "records.jsonl").write_text(text)


def ids(source, split, **kwargs):
  return [ex["id"].decode() for ex in source.get_dataset(
      split=split, shuffle=False, **kwargs).as_numpy_iterator()]


def test_record_to_features_flattens_a_cot_record():
  record = dict(make_record(3), choices=[["A", "x"], ["B", "y"]])
  assert seqio_sources.record_to_features(record) == {
      "id": "gsm8k/train/3", "dataset": "gsm8k", "split": "train",
      "question": "What is 3 + 1?", "answer": "4", "answer_type": "number",
      "choices": '[["A", "x"], ["B", "y"]]',
      "rationale": "3 + 1 = 4. So the answer is 4."}
  with pytest.raises(ValueError, match=r"f.jsonl:9: missing field\(s\) \['answer'\]"):
    seqio_sources.record_to_features(dict(record, answer=""), where="f.jsonl:9")


def test_annotation_run_source_is_lazy_and_reads_the_run(tmp_path):
  run_dir = tmp_path / "run"
  source = seqio_sources.annotation_run_source(run_dir)  # Nothing exists yet: fine.
  with pytest.raises(FileNotFoundError, match="records.jsonl"):
    source.get_dataset("train")
  write_run(run_dir, [make_record(i) for i in range(5)])
  assert ids(source, "train") == [f"gsm8k/train/{i}" for i in range(5)]
  assert source.num_input_examples("train") == 5
  # A callable run dir is resolved at read time.
  later = seqio_sources.annotation_run_source(lambda: str(run_dir))
  assert later.num_input_examples("train") == 5


def test_validation_split_holds_out_whole_questions(tmp_path):
  records = [make_record(i, sample=s) for i in range(40) for s in range(2)]
  write_run(tmp_path, records)
  source = seqio_sources.annotation_run_source(tmp_path, validation_fraction=0.25)
  train, validation = ids(source, "train"), ids(source, "validation")
  assert sorted(train + validation) == sorted(r["id"] for r in records)
  assert not set(train) & set(validation)
  assert 0 < len(validation) < len(train)
  assert all(validation.count(i) == 2 for i in validation)  # both samples together


def test_shards_partition_the_rows(tmp_path):
  write_run(tmp_path, [make_record(i) for i in range(10)])
  source = seqio_sources.annotation_run_source(tmp_path)
  shards = [ids(source, "train", shard_info=seqio.ShardInfo(k, 3)) for k in range(3)]
  assert sorted(sum(shards, [])) == sorted(ids(source, "train"))
  assert [len(s) for s in shards] == [4, 3, 3]
  # Shuffling with a seed is a permutation, reproducible.
  first = [ex["id"] for ex in source.get_dataset("train", shuffle=True, seed=3).as_numpy_iterator()]
  again = [ex["id"] for ex in source.get_dataset("train", shuffle=True, seed=3).as_numpy_iterator()]
  assert first == again and sorted(first) == sorted(r.encode() for r in ids(source, "train"))


def test_torn_last_line_is_skipped_but_bad_middle_line_names_file_and_line(tmp_path, caplog):
  write_run(tmp_path / "torn", [make_record(0), make_record(1)], tail='{"id": "gsm8k/tr')
  with caplog.at_level(logging.WARNING):
    assert seqio_sources.annotation_run_source(tmp_path / "torn").num_input_examples("train") == 2
  assert "torn last line" in caplog.text
  write_run(tmp_path / "bad", [make_record(0)], tail="not json\n" + json.dumps(make_record(2)) + "\n")
  with pytest.raises(ValueError, match=r"records.jsonl:2: not valid JSON"):
    seqio_sources.annotation_run_source(tmp_path / "bad").num_input_examples("train")


def test_records_from_a_test_split_warn_about_leakage(tmp_path, caplog):
  write_run(tmp_path, [make_record(0, split="test")])
  with caplog.at_level(logging.WARNING):
    seqio_sources.annotation_run_source(tmp_path).num_input_examples("train")
  assert "['test']" in caplog.text and "leakage" in caplog.text


def test_examples_source_from_list_and_jsonl(tmp_path):
  examples = [Example(f"coin_flip_gen/test/{i}", "coin_flip_gen", "test", f"Q{i}?", "yes",
                      "yes_no", gold_rationale=f"R{i}.") for i in range(3)]
  path = tmp_path / "examples.jsonl"
  path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples))
  for source in (seqio_sources.examples_source(examples),
                 seqio_sources.examples_source(str(path))):
    rows = list(source.get_dataset("test", shuffle=False).as_numpy_iterator())
    assert [r["question"] for r in rows] == [b"Q0?", b"Q1?", b"Q2?"]
    assert [r["rationale"] for r in rows] == [b"R0.", b"R1.", b"R2."]  # gold rationale


def test_vocabulary_precedence_and_laziness(monkeypatch, spm_path):
  monkeypatch.delenv(vocabularies.SPM_PATH_ENV, raising=False)
  assert vocabularies.resolve_spm_path() == vocabularies.DEFAULT_SPM_PATH
  monkeypatch.setenv(vocabularies.SPM_PATH_ENV, "/env/spiece.model")
  assert vocabularies.resolve_spm_path() == "/env/spiece.model"
  assert vocabularies.resolve_spm_path("/arg.model") == "/arg.model"
  # Constructing reads nothing: a missing file only fails on first use.
  missing = vocabularies.get_vocabulary("/nonexistent/spiece.model")
  with pytest.raises(Exception):
    missing.encode("x")
  vocabulary = vocabularies.get_vocabulary(spm_path)
  assert vocabulary is vocabularies.get_vocabulary(str(spm_path))  # one instance
  assert vocabulary.encode("Hello world") == [8774, 296]  # SOURCES.md
  assert vocabulary.vocab_size == 32100  # 32,000 pieces + 100 T5 sentinels
