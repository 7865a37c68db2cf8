"""Preprocessors: exact strings per target format, clean-up, length filtering."""

from __future__ import annotations

import pytest
import seqio
import tensorflow as tf
from seqio import test_utils

from cot_distill import preprocessors
from cot_distill import seqio_sources
from cot_distill import vocabularies

GSM8K_RECORD = {
    "id": "gsm8k/train/7", "dataset": "gsm8k", "split": "train",
    "question": "Tom has 3 apples\nand buys 2.  How many apples does he have?",
    "answer": "5", "answer_type": "number", "choices": None,
    "rationale": " Tom starts with 3 apples.\n\nHe buys 2, so 3 + 2 = 5.\nSo the answer is 5.",
    "correct": True, "sample_index": 0,
}
MC_RECORD = {
    "id": "aqua/train/2", "dataset": "aqua", "split": "train",
    "question": "Which number is largest?", "answer": "C",
    "answer_type": "multiple_choice",
    "choices": [["A", "12"], ["B", "7"], ["C", "40"]],
    "rationale": "40 is bigger than 12 and 7.\nTherefore, the answer is (C).",
}
YES_NO_RECORD = {
    "id": "strategyqa/train/0", "dataset": "strategyqa", "split": "train",
    "question": "Is ice cold?", "answer": "Yes", "answer_type": "yes_no",
    "choices": None, "rationale": "Ice is frozen water, which is cold.",
}


def raw(record):
  return seqio_sources.record_to_features(record)


# ----------------------------------------------------------------------------
# Pure functions.


def test_clean_rationale_strips_teacher_answer_sentence_and_collapses_space():
  assert (preprocessors.clean_rationale(GSM8K_RECORD["rationale"])
          == "Tom starts with 3 apples. He buys 2, so 3 + 2 = 5.")
  # No answer sentence: only whitespace changes.
  assert preprocessors.clean_rationale("A\n\tB.  C.") == "A B. C."
  # An answer sentence mid-text is content, not the trailing answer: kept.
  assert (preprocessors.clean_rationale("The answer is 4. Then add 1 to get 5.")
          == "The answer is 4. Then add 1 to get 5.")


def test_format_question_appends_choices_kojima_style():
  assert (preprocessors.format_question(MC_RECORD["question"], MC_RECORD["choices"])
          == "Which number is largest? Answer Choices: (A) 12 (B) 7 (C) 40")
  assert preprocessors.format_question("Q?\n", None) == "Q?"
  assert preprocessors.format_question("Q?", "") == "Q?"


def test_cot_format_exact_strings():
  assert preprocessors.cot_example(raw(GSM8K_RECORD)) == {
      "inputs": "Tom has 3 apples and buys 2. How many apples does he have?",
      "targets": "Tom starts with 3 apples. He buys 2, so 3 + 2 = 5. The answer is 5."}
  assert preprocessors.cot_example(raw(MC_RECORD)) == {
      "inputs": "Which number is largest? Answer Choices: (A) 12 (B) 7 (C) 40",
      "targets": "40 is bigger than 12 and 7. The answer is C."}
  # Gold answers are written canonically ("Yes" -> "yes").
  assert (preprocessors.cot_example(raw(YES_NO_RECORD))["targets"]
          == "Ice is frozen water, which is cold. The answer is yes.")


def test_answer_only_and_multitask_exact_strings():
  assert preprocessors.answer_only_example(raw(MC_RECORD)) == {
      "inputs": "Which number is largest? Answer Choices: (A) 12 (B) 7 (C) 40",
      "targets": "C"}
  assert preprocessors.multitask_examples(raw(YES_NO_RECORD)) == [
      {"inputs": "[label] Is ice cold?", "targets": "yes"},
      {"inputs": "[rationale] Is ice cold?",
       "targets": "Ice is frozen water, which is cold."}]
  no_rationale = dict(raw(YES_NO_RECORD), rationale="So the answer is yes.")
  assert preprocessors.multitask_examples(no_rationale) == [
      {"inputs": "[label] Is ice cold?", "targets": "yes"}]


def test_eval_format_uses_prefix_and_answer_sentence():
  assert preprocessors.eval_example(raw(MC_RECORD), "[label] ") == {
      "inputs": "[label] Which number is largest? Answer Choices: (A) 12 (B) 7 (C) 40",
      "targets": "The answer is C."}


def test_unknown_format_and_unwritable_answer_fail_clearly():
  with pytest.raises(ValueError, match="unknown target format"):
    preprocessors.format_record(raw(GSM8K_RECORD), "rationale_only")
  with pytest.raises(ValueError, match="cannot be written as a number"):
    preprocessors.answer_only_example(dict(raw(GSM8K_RECORD), answer="many"))


# ----------------------------------------------------------------------------
# tf.data preprocessors.


def _raw_dataset(records):
  rows = [raw(r) for r in records]
  return tf.data.Dataset.from_tensor_slices(
      {k: [row[k] for row in rows] for k in preprocessors.RAW_FEATURE_KEYS})


def test_format_examples_cot_keeps_scoring_fields():
  ds = preprocessors.format_examples(_raw_dataset([GSM8K_RECORD, MC_RECORD]), "cot")
  test_utils.assert_dataset(ds, [
      {"inputs": "Tom has 3 apples and buys 2. How many apples does he have?",
       "targets": "Tom starts with 3 apples. He buys 2, so 3 + 2 = 5. The answer is 5.",
       "id": "gsm8k/train/7", "answer": "5", "answer_type": "number", "choices": ""},
      {"inputs": "Which number is largest? Answer Choices: (A) 12 (B) 7 (C) 40",
       "targets": "40 is bigger than 12 and 7. The answer is C.",
       "id": "aqua/train/2", "answer": "C", "answer_type": "multiple_choice",
       "choices": '[["A", "12"], ["B", "7"], ["C", "40"]]'},
  ])


def test_format_examples_multitask_emits_two_examples_per_record():
  ds = preprocessors.format_examples(_raw_dataset([YES_NO_RECORD]), "multitask")
  common = {"id": "strategyqa/train/0", "answer": "Yes", "answer_type": "yes_no",
            "choices": ""}
  test_utils.assert_dataset(ds, [
      {"inputs": "[label] Is ice cold?", "targets": "yes", **common},
      {"inputs": "[rationale] Is ice cold?",
       "targets": "Ice is frozen water, which is cold.", **common}])


def test_format_examples_error_names_the_record():
  bad = dict(GSM8K_RECORD, id="gsm8k/train/99", answer="lots")
  ds = preprocessors.format_examples(_raw_dataset([bad]), "cot")
  with pytest.raises(Exception, match="gsm8k/train/99"):
    list(ds.as_numpy_iterator())


def test_filter_by_token_length_drops_instead_of_truncating(spm_path):
  vocabulary = vocabularies.get_vocabulary(spm_path)
  features = {k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")}
  ds = tf.data.Dataset.from_tensor_slices({
      "inputs": tf.ragged.constant([[5, 6], [5, 6], [5, 6, 7, 8, 9]]),
      "targets": tf.ragged.constant([[1, 2, 3], [1, 2, 3, 4], [1]]),
  })
  # Limit 4 with EOS: 3 target tokens fit exactly, 4 do not; inputs of 5 do not.
  kept = preprocessors.filter_by_token_length(
      ds, features, sequence_length={"inputs": 5, "targets": 4})
  test_utils.assert_dataset(kept, [{"inputs": [5, 6], "targets": [1, 2, 3]}])
  # Explicit limits win over the sequence length.
  kept = preprocessors.filter_by_token_length(
      ds, features, sequence_length={"inputs": 5, "targets": 4}, max_target_tokens=5,
      max_input_tokens=6)
  assert len(list(kept.as_numpy_iterator())) == 3
  # No limits: everything passes.
  assert len(list(preprocessors.filter_by_token_length(ds, features).as_numpy_iterator())) == 3


def test_eval_format_never_fails_on_an_unwritable_gold_answer():
  record = dict(raw(GSM8K_RECORD), answer="Mrs. Hilt")  # as in ASDiv's "number" answers
  assert preprocessors.eval_example(record)["targets"] == "The answer is Mrs. Hilt."
