"""Bad input names the file and the line: missing files, malformed records.

Each test writes a small broken file in the layout of shared/data under
tmp_path and checks the exact `path:line` the loader reports.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from cot_distill.data import readers, registry
from cot_distill.data.errors import DataFormatError, MissingDataError

MAWPS_HEADER = "Question,Numbers,Equation,Answer,group_nums,Body,Ques_Statement\n"


def write(root: pathlib.Path, relative: str, text: str | bytes) -> pathlib.Path:
  path = root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text, encoding="utf-8")
  return path


def expect_error(name: str, split: str, root: pathlib.Path, path: pathlib.Path,
                 line: int | None, fragment: str) -> DataFormatError:
  with pytest.raises(DataFormatError) as caught:
    registry.load(name, split, root)
  error = caught.value
  assert (error.path, error.line) == (str(path), line)
  location = str(path) if line is None else f"{path}:{line}"
  assert str(error).startswith(f"{location}: ")
  assert fragment in str(error)
  return error


def test_missing_file_names_the_file_and_the_fix(tmp_path):
  with pytest.raises(MissingDataError) as caught:
    registry.load("gsm8k", "test", tmp_path)
  assert isinstance(caught.value, FileNotFoundError)
  message = str(caught.value)
  assert str(tmp_path / "gsm8k" / "test.jsonl") in message
  assert "cot-distill datasets download gsm8k" in message


def test_malformed_jsonl_line(tmp_path):
  good = json.dumps({"question": "Q?", "answer": "Two.\n#### 2"})
  path = write(tmp_path, "gsm8k/test.jsonl", f"{good}\n{good}\n{{\"question\": \"Q\", \n{good}\n")
  expect_error("gsm8k", "test", tmp_path, path, 3, "malformed JSON line")


def test_jsonl_record_without_answer_marker(tmp_path):
  good = json.dumps({"question": "Q?", "answer": "Two.\n#### 2"})
  bad = json.dumps({"question": "Q?", "answer": "Two."})
  path = write(tmp_path, "gsm8k/train.jsonl", f"{good}\n\n{bad}\n")
  expect_error("gsm8k", "train", tmp_path, path, 3, "'#### <number>'")


def test_json_array_element_missing_field_reports_its_line(tmp_path):
  item = {"ID": "x", "Body": "B.", "Question": "Q?", "Equation": "1", "Answer": 1.0, "Type": "t"}
  broken = {key: value for key, value in item.items() if key != "Body"}
  text = "[\n" + json.dumps(item, indent=1) + ",\n" + json.dumps(broken, indent=1) + "\n]\n"
  path = write(tmp_path, "svamp/SVAMP.json", text)
  broken_line = 2 + len(json.dumps(item, indent=1).splitlines())
  expect_error("svamp", "test", tmp_path, path, broken_line, "missing field 'Body'")


def test_json_array_wrong_type(tmp_path):
  item = {"iIndex": 0, "sQuestion": "Q?", "lEquations": [], "lSolutions": [True]}
  path = write(tmp_path, "multiarith/MultiArith.json", "[\n" + json.dumps(item) + "\n]")
  expect_error("multiarith", "test", tmp_path, path, 2, "not a number")


def test_json_syntax_error_line(tmp_path):
  path = write(tmp_path, "addsub/AddSub.json", '[\n {"iIndex": 1,\n  "sQuestion": oops}\n]')
  expect_error("addsub", "test", tmp_path, path, 3, "malformed JSON")


def test_bigbench_example_with_two_correct_options(tmp_path):
  examples = [{"input": "Today?", "target_scores": {"01/01/2020": 1, "01/02/2020": 0}},
              {"input": "Today?", "target_scores": {"01/01/2020": 1, "01/02/2020": 1}}]
  text = '{"name": "date_understanding",\n "examples": [\n' + ",\n".join(
      json.dumps(e) for e in examples) + "\n]}\n"
  path = write(tmp_path, "bigbench_date/task.json", text)
  expect_error("date_understanding", "test", tmp_path, path, 4, "exactly one option")


def test_bigbench_object_without_examples(tmp_path):
  path = write(tmp_path, "coin_flip/coin_flip.json", '{"items": []}')
  expect_error("coin_flip", "test", tmp_path, path, None, "no 'examples' list")


def test_csv_row_with_extra_field_reports_its_start_line(tmp_path):
  rows = ('"A ""quoted""\nquestion number0 ?",8.0,number0,8.0,[],b,q\n'
          "Q number0 ?,1.0,number0,1.0,[],b,q,EXTRA\n")
  path = write(tmp_path, "mawps/cv_mawps/fold1/dev.csv", MAWPS_HEADER + rows)
  # The first row spans lines 2-3, so the bad row starts on line 4.
  expect_error("mawps", "fold1_dev", tmp_path, path, 4, "expected 7 fields, found 8")


def test_csv_mask_beyond_numbers(tmp_path):
  path = write(tmp_path, "mawps/cv_mawps/fold0/train.csv",
               MAWPS_HEADER + "Q number0 number1 ?,3.0,+ number0 number1,4.0,[],b,q\n")
  expect_error("mawps", "fold0_train", tmp_path, path, 2, "mask beyond the 1 values")


def test_csv_wrong_header(tmp_path):
  path = write(tmp_path, "mawps/cv_mawps/fold0/dev.csv", "Question,Answer\nQ,1\n")
  expect_error("mawps", "fold0_dev", tmp_path, path, 1, "header is")


def test_malformed_xml_and_incomplete_problem(tmp_path):
  path = write(tmp_path, "asdiv/ASDiv.xml",
               "<ProblemSet>\n<Problem ID='a'>\n<Body>B</Body>\n</ProblemSet>\n")
  expect_error("asdiv", "test", tmp_path, path, 4, "malformed XML")
  path = write(tmp_path, "asdiv/ASDiv.xml",
               "<ProblemSet>\n<Problem ID='a'><Body>B</Body><Question>Q</Question>"
               "<Answer>1 (x)</Answer></Problem>\n<Problem ID='b'>\n<Body>B</Body>"
               "<Question>Q</Question></Problem>\n</ProblemSet>\n")
  expect_error("asdiv", "test", tmp_path, path, 3, "lacks Answer")


def test_fold_file_with_unknown_problem_id(tmp_path):
  write(tmp_path, "asdiv/ASDiv.xml",
        "<ProblemSet><Problem ID='a'><Body>B</Body><Question>Q</Question>"
        "<Answer>1 (x)</Answer></Problem></ProblemSet>")
  path = write(tmp_path, "asdiv/nfolds/asdiv-a/fold2.txt", "a\n\nnot-there\n")
  expect_error("asdiv_a", "fold2", tmp_path, path, 3, "'not-there' is not in")


def test_invalid_utf8_line(tmp_path):
  path = write(tmp_path, "aqua/test.json", b'{"question": "ok"}\n{"question": "\xff"}\n')
  expect_error("aqua", "test", tmp_path, path, 2, "not valid UTF-8")


def test_multiple_choice_gold_not_a_label(tmp_path):
  record = {"question": "Q?", "options": ["A)1", "B)2"], "rationale": "r", "correct": "C"}
  path = write(tmp_path, "aqua/test.json", json.dumps(record) + "\n")
  expect_error("aqua", "test", tmp_path, path, 1, "'C' is not one of the choice labels")


def test_unknown_dataset_and_split():
  with pytest.raises(KeyError, match="unknown dataset 'nope'"):
    registry.load("nope", "test")
  with pytest.raises(ValueError, match="has no split 'validation'; splits: train, test"):
    registry.load("gsm8k", "validation")


def test_record_field_rejects_bool_for_number(tmp_path):
  record = readers.Record(tmp_path / "f.json", 7, {"Answer": True})
  with pytest.raises(DataFormatError, match=r"f.json:7: field 'Answer' has type bool"):
    record.field("Answer", (int, float))
