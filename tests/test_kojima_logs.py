"""Parser for Kojima et al.'s zero-shot-CoT logs (cot_distill.teacher.kojima_logs)."""

from __future__ import annotations

import pytest

from cot_distill.teacher import kojima_logs

HEADER = (
    "*****************************\n"
    "Namespace(api_log_file_name='./log/x.json', cot_trigger=\"Let's think step by step.\", "
    "dataset='svamp', direct_answer_trigger='\\nTherefore, the answer (arabic numerals) is', "
    "direct_answer_trigger_for_zeroshot='The answer (arabic numerals) is', method='zero_shot_cot')\n"
    "*****************************\n"
    "setup data loader ...\n"
    "data size : 2\n")
RECORD_1 = (
    "*************************\n"
    "1st data\n"
    "1_th_sampling\n"
    "Q: Tom has 2 apples and buys 3. How many?\n"
    "A: Let's think step by step. \n"
    "Tom has 2 + 3 = 5 apples. \n"
    "Therefore, the answer (arabic numerals) is:\n"
    "\n"
    "5\n"
    "pred_before : :\n"
    "\n"
    "5\n"
    "pred_after : 5\n"
    "pred_list : ['5']\n"
    "pred_mode : 5\n"
    "GT : 5\n"
    "*************************\n")
RECORD_2 = (
    "*************************\n"
    "2st data\n"
    "1_th_sampling\n"
    "Q: Ann has 1,000 coins and loses 1. How many?\n"
    "A: Let's think step by step. Note: the answer (arabic numerals) is not 1000.\n"
    "Therefore, the answer (arabic numerals) is 7. \n"
    "Therefore, the answer (arabic numerals) is 999.\n"
    "pred_before :  999.\n"
    "pred_after : 999\n"
    "pred_list : ['999']\n"
    "pred_mode : 999\n"
    "GT : 999\n"
    "*************************\n")
FOOTER = "accuracy : 100.0\n./log/x_api_log.json\n"


def _write(tmp_path, text, name="tiny.log"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return path


def test_parse_small_log(tmp_path):
  log = kojima_logs.parse_log(_write(tmp_path, HEADER + RECORD_1 + RECORD_2 + FOOTER))
  assert (log.dataset, log.cot_trigger, log.trigger) == (
      "svamp", "Let's think step by step.", "\nTherefore, the answer (arabic numerals) is")
  assert log.verbatim_pred_before and log.accuracy == 100.0
  first, second = log.records
  assert first.index == 1 and first.line == 7  # the '1st data' line
  assert first.question == "Tom has 2 apples and buys 3. How many?"
  assert first.cot == " \nTom has 2 + 3 = 5 apples."
  assert first.answer_text == ":\n\n5"
  assert first.pred_before == ":\n\n5"
  assert (first.pred_after, first.pred_mode, first.gold) == ("5", "5", "5")
  assert log.completion(first) == (
      " \nTom has 2 + 3 = 5 apples. \nTherefore, the answer (arabic numerals) is:\n\n5")
  # The trigger appears twice; the split is where the remainder is pred_before.
  assert second.cot == " Note: the answer (arabic numerals) is not 1000.\nTherefore, the answer (arabic numerals) is 7."
  assert second.answer_text == " 999."
  assert second.log_correct


def test_older_format_normalises_pred_before(tmp_path):
  header = HEADER.replace("api_log_file_name='./log/x.json', ", "")
  record = RECORD_1.replace("pred_before : :\n\n5\n", "pred_before : 5\n")
  log = kojima_logs.parse_log(_write(tmp_path, header + record + FOOTER))
  assert not log.verbatim_pred_before
  assert log.records[0].answer_text == ":\n\n5"
  assert log.records[0].pred_before == "5"


# Line numbers: the header is lines 1-5, RECORD_1 lines 6-22 ("1st data" is
# 7, "A:" is 10, "GT" is 21), the footer starts at 23.
@pytest.mark.parametrize("broken, line, message", [
    (HEADER.replace("Namespace(", "Nothing(") + RECORD_1 + FOOTER, 1, "Namespace"),
    (HEADER.replace("dataset='svamp', ", "") + RECORD_1 + FOOTER, 2, "dataset="),
    (HEADER + RECORD_1.replace("1st data", "first data") + FOOTER, 7, "<k>st data"),
    (HEADER + RECORD_1.replace("GT : 5", "Gold : 5") + FOOTER, 21, "'GT : "),
    (HEADER + RECORD_1.replace("pred_before : :\n\n5", "pred_before : 6") + FOOTER, 10,
     "followed by pred_before"),
    (HEADER + RECORD_1 + RECORD_1 + FOOTER, 24, "expected record 2, found 1"),
    (HEADER + RECORD_1 + "accuracy : high\n", 23, "not a number"),
    (HEADER + RECORD_1, 23, "footer"),
    (HEADER + RECORD_1[:-len("*" * 25 + "\n")], 6, "not closed"),
])
def test_malformed_input_names_file_and_line(tmp_path, broken, line, message):
  path = _write(tmp_path, broken)
  with pytest.raises(kojima_logs.LogFormatError, match=message) as error:
    kojima_logs.parse_log(path)
  assert str(error.value).startswith(f"{path}:{line}: ")
  assert error.value.line == line


def test_missing_file_raises(tmp_path):
  with pytest.raises(FileNotFoundError):
    kojima_logs.parse_log(tmp_path / "absent.log")


# Counts from shared/data/SOURCES.md: records, pred_mode == GT, and the
# records whose pred_before spans several lines.
REAL_LOGS = {
    "gsm8k": (1319, 537, 40.71266110689917, 117),
    "svamp": (1000, 621, 62.1, 111),
    "strategyqa": (2290, 1254, 54.75982532751091, 8),
    "last_letters": (500, 288, 57.599999999999994, 0),
    "coin_flip": (500, 457, 91.4, 21),
}


@pytest.fixture(scope="module")
def real_logs(data_dir):
  return {name: kojima_logs.parse_log(data_dir / "teacher_outputs" / f"{name}_zero_shot_cot.log")
          for name in REAL_LOGS}


@pytest.mark.parametrize("name", sorted(REAL_LOGS))
def test_real_log_counts_match_sources(real_logs, name):
  records, correct, footer, multi_line = REAL_LOGS[name]
  log = real_logs[name]
  assert log.dataset == name
  assert len(log.records) == records
  assert [r.index for r in log.records] == list(range(1, records + 1))
  assert sum(r.log_correct for r in log.records) == correct
  assert log.accuracy == footer
  assert sum("\n" in r.pred_before for r in log.records) == multi_line
  assert all(r.question and "\n" not in r.question for r in log.records)


def test_real_log_split_cases_from_sources(real_logs):
  # CoTs that already contain the trigger: splitting at the FIRST occurrence
  # would cut them short.
  letters = real_logs["last_letters"]
  inside = [r.index for r in letters.records if letters.trigger in r.cot]
  assert inside == [70, 84, 99, 163, 492]
  assert letters.records[69].answer_text == ' "eeka".'
  # Stage-2 outputs that repeat the trigger: the LAST occurrence is wrong.
  gsm8k = real_logs["gsm8k"]
  repeated = [r.index for r in gsm8k.records if gsm8k.trigger in r.answer_text]
  assert repeated == [583, 621]
  assert gsm8k.records[620].answer_text.startswith(" 40. \n\nBraylen")
  # Older format: pred_before is the stage-2 text without ":" and stripped.
  assert not gsm8k.verbatim_pred_before
  assert all(r.answer_text.replace(":", "").strip() == r.pred_before.strip()
             for r in gsm8k.records)
  svamp = real_logs["svamp"]
  assert svamp.verbatim_pred_before
  assert all(r.answer_text == r.pred_before for r in svamp.records)
