"""Tasks end to end: records -> exact strings and tokens, packing, mixtures, caching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import seqio
from seqio import test_utils

from cot_distill import seqio_sources
from cot_distill import seqio_tasks
from cot_distill import vocabularies

RECORDS = [
    {"id": "svamp/train/0", "dataset": "svamp", "split": "train",
     "question": "Jack had 8 pens.\nHe gave away 3. How many are left?", "answer": "5",
     "answer_type": "number", "choices": None,
     "rationale": "\nJack started with 8 pens and gave 3 away.\n8 - 3 = 5.\nSo the answer is 5.",
     "correct": True, "sample_index": 0},
    {"id": "aqua/train/4", "dataset": "aqua", "split": "train",
     "question": "Pick the even number.", "answer": "B", "answer_type": "multiple_choice",
     "choices": [["A", "3"], ["B", "4"]],
     "rationale": "3 is odd and 4 is even. Therefore, the answer is (B).",
     "correct": True, "sample_index": 0},
]
QUESTION_0 = "Jack had 8 pens. He gave away 3. How many are left?"
QUESTION_1 = "Pick the even number. Answer Choices: (A) 3 (B) 4"


@pytest.fixture(scope="module")
def vocabulary(spm_path):
  return vocabularies.get_vocabulary(spm_path)


@pytest.fixture()
def run_dir(tmp_path):
  (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  return tmp_path


def read(task, split="train", lengths=None):
  return list(task.get_dataset(lengths, split=split, shuffle=False).as_numpy_iterator())


@pytest.mark.parametrize("target_format, expected", [
    ("cot", [(QUESTION_0, "Jack started with 8 pens and gave 3 away. 8 - 3 = 5. The answer is 5."),
             (QUESTION_1, "3 is odd and 4 is even. The answer is B.")]),
    ("answer_only", [(QUESTION_0, "5"), (QUESTION_1, "B")]),
    ("multitask", [("[label] " + QUESTION_0, "5"),
                   ("[rationale] " + QUESTION_0, "Jack started with 8 pens and gave 3 away. 8 - 3 = 5."),
                   ("[label] " + QUESTION_1, "B"),
                   ("[rationale] " + QUESTION_1, "3 is odd and 4 is even.")]),
])
def test_records_to_exact_strings_and_tokens(run_dir, vocabulary, target_format, expected):
  task = seqio_tasks.register_cot_task(f"cot_distill_test.{target_format}", run_dir,
                                       target_format, vocabulary)
  examples = read(task, lengths={"inputs": 64, "targets": 64})
  got = [(e["inputs_pretokenized"].decode(), e["targets_pretokenized"].decode())
         for e in examples]
  assert got == expected
  for example in examples:  # Tokens are the strings' pieces plus EOS (id 1).
    for key in ("inputs", "targets"):
      assert example[key][-1] == 1
      assert vocabulary.decode(example[key].tolist()) == example[f"{key}_pretokenized"].decode()
  if target_format == "answer_only":  # Known pieces: "5" = 305, "B" = 272.
    assert [e["targets"].tolist() for e in examples] == [[305, 1], [272, 1]]


def test_seqio_test_task_injects_a_record_and_scores_its_own_target(vocabulary):
  name = seqio_tasks.register_cot_task("cot_distill_test.injected", "/unused", "cot",
                                       vocabulary).name
  raw = {"validation": seqio_sources.record_to_features(RECORDS[1])}
  output = test_utils.test_preprocessing_single(name, raw)
  assert output["inputs_pretokenized"] == QUESTION_1.encode()
  assert output["targets_pretokenized"] == b"3 is odd and 4 is even. The answer is B."
  # (test_utils.test_task would feed token ids where it encodes strings.)
  metrics = test_utils.test_postprocessing(
      name, raw, predict_output=[output["targets_pretokenized"].decode()])
  assert metrics == {"accuracy": 100.0, "answer_found_rate": 100.0,
                     "answer_fallback_rate": 0.0, "num_examples": 1.0}
  wrong = test_utils.test_postprocessing(name, raw, predict_output=["The answer is A."])
  assert wrong["accuracy"] == 0.0


def test_long_targets_are_dropped_not_truncated(run_dir, vocabulary):
  task = seqio_tasks.register_cot_task("cot_distill_test.short", run_dir, "cot", vocabulary)
  lengths = [len(e["targets"]) for e in read(task, lengths=None)]
  limit = min(lengths)  # Only the shorter target fits (EOS included).
  kept = read(task, lengths={"inputs": 64, "targets": limit})
  assert [len(e["targets"]) for e in kept] == [limit]
  assert kept[0]["targets_pretokenized"].endswith(b"The answer is B.")


def test_packing_keeps_segment_ids_and_positions(run_dir, vocabulary):
  task = seqio_tasks.register_cot_task("cot_distill_test.pack", run_dir, "multitask", vocabulary)
  lengths = {"inputs": 64, "targets": 64}
  unpacked = read(task, lengths=lengths)
  packed = seqio.EncDecFeatureConverter(pack=True)(
      task.get_dataset(lengths, split="train", shuffle=False), lengths)
  rows = list(packed.as_numpy_iterator())
  assert len(rows) < len(unpacked)  # Several examples share a row.
  pairs = []
  for row in rows:
    for side, tokens_key in (("encoder", "encoder_input_tokens"),
                             ("decoder", "decoder_target_tokens")):
      segments, positions = row[f"{side}_segment_ids"], row[f"{side}_positions"]
      used = segments > 0
      assert np.all(row[tokens_key][~used] == 0)  # Padding only after segments.
      ids = segments[used]
      assert np.all(np.diff(ids) >= 0) and ids[0] == 1  # 1, 1, ..., 2, 2, ...
      for segment in np.unique(ids):
        where = np.flatnonzero(segments == segment)
        assert np.array_equal(where, np.arange(where[0], where[-1] + 1))  # contiguous
        assert np.array_equal(positions[where], np.arange(len(where)))  # restart at 0
    for segment in np.unique(row["decoder_segment_ids"][row["decoder_segment_ids"] > 0]):
      enc = row["encoder_input_tokens"][row["encoder_segment_ids"] == segment]
      where = row["decoder_segment_ids"] == segment
      dec = row["decoder_target_tokens"][where]
      # Teacher forcing input is the target shifted right within its own segment.
      assert np.array_equal(row["decoder_input_tokens"][where], np.concatenate([[0], dec[:-1]]))
      assert np.all(row["decoder_loss_weights"][where] == 1)
      pairs.append((enc.tolist(), dec.tolist()))
  expected = [(e["inputs"].tolist(), e["targets"].tolist()) for e in unpacked]
  assert sorted(pairs) == sorted(expected)


def test_register_twice_replaces_and_mixture_rates_by_size(tmp_path, vocabulary):
  small, large = tmp_path / "small", tmp_path / "large"
  for directory, count in ((small, 3), (large, 9)):
    directory.mkdir()
    (directory / "records.jsonl").write_text("".join(
        json.dumps(dict(RECORDS[0], id=f"svamp/train/{i}")) + "\n" for i in range(count)))
  seqio_tasks.register_cot_task("cot_distill_test.a", tmp_path / "missing", "cot", vocabulary)
  a = seqio_tasks.register_cot_task("cot_distill_test.a", small, "cot", vocabulary)
  b = seqio_tasks.register_cot_task("cot_distill_test.b", large, "cot", vocabulary)
  assert seqio.get_mixture_or_task("cot_distill_test.a") is a
  mixture = seqio_tasks.register_mixture("cot_distill_test.ab", [a.name, b.name])
  assert (mixture.get_rate(a), mixture.get_rate(b)) == (3.0, 9.0)
  capped = seqio_tasks.register_mixture("cot_distill_test.ab", [a.name, b.name], maximum=5)
  assert (capped.get_rate(a), capped.get_rate(b)) == (3.0, 5.0)
  example = next(capped.get_dataset({"inputs": 64, "targets": 64}, split="train",
                                    shuffle=False).as_numpy_iterator())
  assert set(example) >= {"inputs", "targets"}


def test_cache_task_round_trip_equals_on_the_fly(tmp_path, run_dir, vocabulary):
  task = seqio_tasks.register_cot_task("cot_distill_test.cached", run_dir, "cot", vocabulary)
  cache_root = str(tmp_path / "cache")
  seqio_tasks.cache_task(task, cache_root)
  seqio.add_global_cache_dirs([cache_root])
  lengths = {"inputs": 64, "targets": 64}
  cached = list(task.get_dataset(lengths, split="train", shuffle=False, use_cached=True)
                .as_numpy_iterator())
  fresh = read(task, lengths=lengths)
  assert len(cached) == len(fresh) == 2
  for a, b in zip(cached, fresh):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert task.get_cached_stats("train")["examples"] == 2


def test_tfds_builder_source_yields_the_same_examples_as_the_loaders(tmp_path, data_dir,
                                                                      vocabulary):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from cot_distill.data import tfds_builders  # pylint: disable=g-import-not-at-top
  tfds.builder(f"{tfds_builders.BUILDER_NAME}/aqua", data_dir=str(tmp_path),
               source_dir=str(data_dir)).download_and_prepare()
  from_tfds = seqio_tasks.register_benchmark_eval_task(
      "cot_distill_test.aqua_tfds", "aqua", "test", vocabulary, tfds_data_dir=str(tmp_path))
  from_files = seqio_tasks.register_benchmark_eval_task(
      "cot_distill_test.aqua_files", "aqua", "test", vocabulary, data_dir=str(data_dir))
  a, b = read(from_tfds, split="test"), read(from_files, split="test")
  assert len(a) == len(b) == 254 == from_tfds.num_input_examples("test")
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert a[0]["inputs_pretokenized"].decode().endswith(
      "Answer Choices: (A) 5(√3 + 1) (B) 6(√3 + √2) (C) 7(√3 – 1) (D) 8(√3 – 2) "
      "(E) None of these")
