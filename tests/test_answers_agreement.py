"""Our judge against the verdicts in Kojima et al.'s real teacher logs.

Issue 2 requires >= 98% agreement per log and every class of disagreement
explained. The figures below are exact: a change to the extractor that moves
any record shows up here, with the record and the reason.
"""

from __future__ import annotations

import pytest

from cot_distill import answers
from cot_distill.commands import answers as answers_command
from cot_distill.teacher import kojima_logs
from conftest import REPO_ROOT

# log -> (records, log correct, our correct, {class: count}, disagreeing records)
EXPECTED = {
    "coin_flip": (500, 457, 457, {}, []),
    # GT "40,000" vs the log's "40000" (exact strings), and "14.00" vs "14".
    "gsm8k": (1319, 537, 542,
              {"gold_thousands_separator": 4, "decimal_zeros": 1},
              [95, 266, 699, 709, 1179]),
    # Stage 2 wrote '"n-a-e-y"'; the log kept the hyphens.
    "last_letters": (500, 288, 296, {"separated_letters": 8},
                     [5, 170, 198, 267, 319, 334, 372, 469]),
    # CoT ends "The answer is yes."; stage 2 says "the same for both questions."
    "strategyqa": (2290, 1254, 1255, {"answer_before_trigger": 1}, [1496]),
    "svamp": (1000, 621, 621, {}, []),
}


@pytest.fixture(scope="module")
def agreements(data_dir):
  return {name: answers_command.log_agreement(kojima_logs.parse_log(
      data_dir / "teacher_outputs" / f"{name}_zero_shot_cot.log"))
          for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_agreement_figures(agreements, name):
  records, log_correct, our_correct, classes, indices = EXPECTED[name]
  result = agreements[name]
  assert (result.records, result.log_correct, result.our_correct) == (
      records, log_correct, our_correct)
  assert result.counts_by_class() == classes
  assert [d.index for d in result.disagreements] == indices
  assert result.agreement >= answers_command.MINIMUM_AGREEMENT
  assert "other" not in result.counts_by_class()


def test_every_disagreement_is_our_correct_reading(agreements):
  """In every class the log says wrong and we say right, with gold's answer."""
  for result in agreements.values():
    for item in result.disagreements:
      assert item.our_prediction is not None
      assert answers.answers_match(
          item.our_prediction, item.gold, answers_command.KOJIMA_ANSWER_TYPES[result.dataset])


def test_disagreement_examples(agreements):
  by_index = {(r.dataset, d.index): d for r in agreements.values() for d in r.disagreements}
  assert by_index[("gsm8k", 95)] == answers_command.Disagreement(
      95, "gold_thousands_separator", "40000", "40000", "40,000")
  assert by_index[("gsm8k", 699)] == answers_command.Disagreement(
      699, "decimal_zeros", "14.00", "14", "14")
  assert by_index[("last_letters", 5)] == answers_command.Disagreement(
      5, "separated_letters", "n-a-e-y", "naey", "naey")
  assert by_index[("strategyqa", 1496)] == answers_command.Disagreement(
      1496, "answer_before_trigger", "", "yes", "yes")


def test_same_prediction_as_log_on_trigger_split_cases(data_dir):
  """Records whose CoT or stage 2 contains the trigger are read as the log did
  where the verdict matters: last_letters 70 (trigger inside the CoT) and
  gsm8k 583/621 (stage 2 repeats the trigger; both verdicts are 'wrong')."""
  letters = kojima_logs.parse_log(data_dir / "teacher_outputs" / "last_letters_zero_shot_cot.log")
  record = letters.records[69]
  verdict = answers.judge(letters.completion(record), record.gold, "letters")
  assert verdict.predicted == record.pred_mode == "eeka"
  # Stage 2 restates the trigger with another number: we read the last
  # statement, the log the first number; gold is neither.
  gsm8k = kojima_logs.parse_log(data_dir / "teacher_outputs" / "gsm8k_zero_shot_cot.log")
  for index, ours, logged in ((583, "10", "6"), (621, "160", "40")):
    record = gsm8k.records[index - 1]
    verdict = answers.judge(gsm8k.completion(record), record.gold, "number")
    assert (verdict.predicted, record.pred_mode) == (ours, logged)
    assert not verdict.correct and not record.log_correct


def test_agreement_command_prints_table(data_dir, capsys):
  parser = _parser()
  args = parser.parse_args(["answers", "agreement", "--logs-dir", str(data_dir / "teacher_outputs")])
  assert args.func(args) == 0
  out = capsys.readouterr().out
  assert "gsm8k_zero_shot_cot.log             1319   40.71%   41.09%    99.62%" in out
  assert "last_letters_zero_shot_cot.log       500   57.60%   59.20%    98.40%  separated_letters=8" in out
  assert "gold_thousands_separator: GT has thousands separators" in out


def test_agreement_command_fails_below_threshold_and_without_dir(data_dir, monkeypatch, capsys):
  parser = _parser()
  args = parser.parse_args(["answers", "agreement", "--logs-dir",
                            str(data_dir / "teacher_outputs"), "--min-agreement", "99"])
  assert args.func(args) == 1
  assert "last_letters_zero_shot_cot.log" in capsys.readouterr().err
  monkeypatch.delenv("COT_DISTILL_DATA_DIR", raising=False)
  args = parser.parse_args(["answers", "agreement"])
  assert args.func(args) == 2


def test_agreement_command_reports_malformed_log(tmp_path, capsys):
  (tmp_path / "bad.log").write_text("not a log\n")
  parser = _parser()
  args = parser.parse_args(["answers", "agreement", "--logs-dir", str(tmp_path)])
  assert args.func(args) == 1
  assert f"{tmp_path / 'bad.log'}:1:" in capsys.readouterr().err


def _parser():
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  answers_command.register(parser.add_subparsers())
  return parser


# Every disagreement on a log in Kojima's format, for all twelve families,
# gets the class its scenario produces; none is "other".
import kojima_log_testing  # noqa: E402


@pytest.mark.parametrize("name", sorted(kojima_log_testing.FAMILIES))
def test_every_disagreement_on_every_family_is_named(data_dir, tmp_path, name):
  split = next(iter(kojima_log_testing.FAMILIES[name]))
  written = kojima_log_testing.write_log(data_dir, name, split, tmp_path / "x.log")
  result = answers_command.log_agreement(kojima_logs.parse_log(tmp_path / "x.log"))
  assert result.disagreements
  for item in result.disagreements:
    scenario = written[item.index - 1]["scenario"]
    expected = kojima_log_testing.SCENARIO_CLASSES[scenario]
    if item.category == answers_command.GOLD_THOUSANDS_SEPARATOR:
      assert "," in item.gold  # GSM8K's "40,000": correct answers the log scores wrong.
    else:
      assert item.category == expected, (item, scenario)
  assert answers_command.OTHER not in result.counts_by_class()


def test_classify_sees_the_choices_the_judge_sees(tmp_path):
  """An option-text answer is classed as such (it was 'other' without choices)."""
  log_text = (
      "*****************************\n"
      "Namespace(api_log_file_name='x', cot_trigger=\"Let's think step by step.\", "
      "dataset='object_tracking', direct_answer_trigger='\\nTherefore, among A through C, "
      "the answer is', method='zero_shot_cot')\n"
      "*****************************\n"
      "*************************\n1st data\n1_th_sampling\n"
      "Q: Alice has the \nWhich choice is true ? Answer Choices: (A) Sam. (B) Helga. (C) Karl.\n"
      "A: Let's think step by step. Swaps. \nTherefore, among A through C, the answer is Helga.\n"
      "pred_before :  Helga.\npred_after : \npred_list : ['']\npred_mode : \nGT : B\n"
      "*************************\naccuracy : 0.0\n")
  (tmp_path / "t.log").write_text(log_text)
  result = answers_command.log_agreement(kojima_logs.parse_log(tmp_path / "t.log"))
  assert [(d.category, d.our_prediction) for d in result.disagreements] == [
      (answers_command.OPTION_TEXT, "B")]


def test_every_class_is_documented():
  readme = (REPO_ROOT / "cot_distill" / "teacher" / "README.md").read_text()
  for name in answers_command.DISAGREEMENT_CLASSES:
    assert f"`{name}`" in readme, name
