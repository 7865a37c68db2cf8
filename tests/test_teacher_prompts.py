"""Prompt templates and exemplar sets: exact strings, ids, files, leakage."""

from __future__ import annotations

import json

import pytest

from cot_distill import answers
from cot_distill.data import registry
from cot_distill.data.example import AnswerType, Example
from cot_distill.teacher import exemplars
from cot_distill.teacher import prompts

TINY_SET = exemplars.ExemplarSet("tiny", (
    exemplars.Exemplar("Ann has 2 apples and buys 3 more. How many apples does she have?",
                       "5", "Ann starts with 2 apples. 2 + 3 = 5."),
    exemplars.Exemplar("Which is a fruit?", "B", "A pear is a fruit.",
                       (("A", "stone"), ("B", "pear"))),
))
QUERY = Example(id="toy/train/0", dataset="toy", split="train",
                question="Bo has 4 pens and loses 1. How many pens are left?", answer="3",
                answer_type=AnswerType.NUMBER)


def builder(mode, style, exemplar_set=TINY_SET):
  return prompts.PromptBuilder(prompts.PromptTemplate(prompts.PromptMode(mode),
                                                      prompts.PromptStyle(style)), exemplar_set)


def test_hinted_completion_prompt_gives_answer_before_rationale():
  prompt = builder("hinted", "completion").build(QUERY)
  assert prompt.text == (
      "Q: Ann has 2 apples and buys 3 more. How many apples does she have?\n"
      "Answer: 5\n"
      "Explanation: Ann starts with 2 apples. 2 + 3 = 5. The answer is 5.\n\n"
      "Q: Which is a fruit? Answer Choices: (A) stone (B) pear\n"
      "Answer: (B) pear\n"
      "Explanation: A pear is a fruit. The answer is B.\n\n"
      "Q: Bo has 4 pens and loses 1. How many pens are left?\n"
      "Answer: 3\n"
      "Explanation:")
  # One-line exemplars: the CoT ends with its line (after "The answer is X.").
  assert prompt.stop == ("\n",)


def test_few_shot_completion_prompt_is_wei_style_without_hint():
  prompt = builder("few_shot", "completion").build(QUERY)
  assert prompt.text.endswith("Q: Bo has 4 pens and loses 1. How many pens are left?\nA:")
  assert "Answer: 3" not in prompt.text
  assert prompt.text.startswith(
      "Q: Ann has 2 apples and buys 3 more. How many apples does she have?\n"
      "A: Ann starts with 2 apples. 2 + 3 = 5. The answer is 5.\n\n")


def test_zero_shot_two_stages():
  zero = builder("zero_shot", "completion", None)
  first = zero.build(QUERY)
  assert first.text == ("Q: Bo has 4 pens and loses 1. How many pens are left?\n"
                        "A: Let's think step by step.")
  second = zero.build_answer_stage(QUERY, first, " Bo has 4 - 1 = 3 pens.")
  assert second.text == first.text + (" Bo has 4 - 1 = 3 pens. "
                                      "\nTherefore, the answer (arabic numerals) is")
  judged = zero.judged_text(QUERY, " Bo has 4 - 1 = 3 pens.", " 3.")
  assert answers.judge(judged, "3", AnswerType.NUMBER).correct
  assert zero.exemplar_set_id is None


def test_chat_prompts_use_turns_and_hint_in_user_turn():
  messages = builder("hinted", "chat").build(QUERY).messages
  assert [m["role"] for m in messages] == ["system", "user", "assistant", "user",
                                           "assistant", "user"]
  assert messages[1]["content"] == (
      "Q: Ann has 2 apples and buys 3 more. How many apples does she have?\nAnswer: 5")
  assert messages[2]["content"] == "Ann starts with 2 apples. 2 + 3 = 5. The answer is 5."
  assert messages[-1]["content"].endswith("\nAnswer: 3")
  unhinted = builder("few_shot", "chat").build(QUERY).messages
  assert unhinted[-1]["content"] == "Q: Bo has 4 pens and loses 1. How many pens are left?"
  zero = builder("zero_shot", "chat", None)
  first = zero.build(QUERY)
  second = zero.build_answer_stage(QUERY, first, "Bo has 3 pens.")
  assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
  assert second.messages[-1]["content"] == "Therefore, the answer (arabic numerals) is"


def test_answer_triggers_follow_kojima():
  assert prompts.answer_trigger(AnswerType.YES_NO, None) == "\nTherefore, the answer (Yes or No) is"
  choices = tuple((l, l.lower()) for l in "ABCDEF")
  assert prompts.answer_trigger(AnswerType.DATE_OPTION, choices) == (
      "\nTherefore, among A through F, the answer is")


def test_template_ids_and_hashes_are_stable_and_sensitive():
  template = prompts.PromptTemplate(prompts.PromptMode.HINTED, prompts.PromptStyle.COMPLETION)
  assert template.template_id == "hinted-completion-v2"
  same = prompts.PromptTemplate(prompts.PromptMode.HINTED, prompts.PromptStyle.COMPLETION)
  assert template.template_hash == same.template_hash
  changed = prompts.PromptTemplate(prompts.PromptMode.HINTED, prompts.PromptStyle.COMPLETION,
                                   hint_prefix="Gold: ")
  assert changed.template_hash != template.template_hash
  other_mode = prompts.PromptTemplate(prompts.PromptMode.FEW_SHOT, prompts.PromptStyle.COMPLETION)
  assert other_mode.template_hash != template.template_hash


def test_exemplar_set_id_is_a_content_hash():
  renamed = exemplars.ExemplarSet("another name", TINY_SET.exemplars, "elsewhere")
  assert renamed.id == TINY_SET.id
  edited = exemplars.ExemplarSet("tiny", TINY_SET.exemplars[:1])
  assert edited.id != TINY_SET.id


@pytest.mark.parametrize("dataset", sorted(exemplars.DEFAULT_SET_FOR_DATASET))
def test_every_dataset_has_an_eight_shot_default_set(dataset):
  chosen = exemplars.default_set(dataset)
  assert len(chosen) == 8
  for item in chosen.exemplars:
    assert not item.rationale.rstrip().endswith(f"The answer is {item.answer}.")
    if item.choices:
      assert item.answer in dict(item.choices)


@pytest.mark.parametrize("name", ["coin_flip", "last_letters", "tracking_shuffled_objects"])
def test_symbolic_exemplars_are_right(name):
  """Their rationales state the answer and our judge agrees with it."""
  answer_type = {"coin_flip": AnswerType.YES_NO, "last_letters": AnswerType.LETTERS,
                 "tracking_shuffled_objects": AnswerType.OPTION_TEXT}[name]
  for item in exemplars.load_shipped_set(name).exemplars:
    text = f"{item.rationale} The answer is {item.answer}."
    assert answers.judge(text, item.answer, answer_type, item.choices).correct
    if name == "last_letters":
      words = item.question.split('"')[1].split()
      assert item.answer == "".join(w[-1] for w in words).lower()
    if name == "coin_flip":
      flips = item.question.count(" flips the coin.")
      assert item.answer == ("yes" if flips % 2 == 0 else "no")


def test_reasoning_teacher_file_round_trips_wei_exemplars(data_dir):
  path = data_dir / "prompts" / "few_shot_cot_prompts.json"
  original = json.loads(path.read_text())["gsm8k"]["prompt"]
  loaded = exemplars.load_exemplar_file(path, "gsm8k")
  assert len(loaded) == 8 and loaded.exemplars[0].answer == "6"
  rebuilt = "\n".join(f"Q: {e.question}\nA: {e.rationale} The answer is {e.answer}."
                      for e in loaded.exemplars)
  assert rebuilt == original
  # Our dataset names map onto the file's keys.
  assert len(exemplars.load_exemplar_file(path, "strategyqa_bigbench")) == 6
  assert exemplars.load_exemplar_file(path, "aqua").exemplars[0].answer == "A"


def test_own_format_file_and_errors(tmp_path):
  good = tmp_path / "mine.json"
  good.write_text(json.dumps({"name": "mine", "exemplars": [
      {"question": "Q1?", "answer": "yes", "rationale": "Because."}]}))
  assert exemplars.load_exemplar_file(good).exemplars[0].rationale == "Because."
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"exemplars": [{"question": "Q1?", "answer": "yes"}]}))
  with pytest.raises(exemplars.ExemplarFileError, match=r"bad.json: exemplars\[0\].*rationale"):
    exemplars.load_exemplar_file(bad)
  broken = tmp_path / "broken.json"
  broken.write_text('{"exemplars": [\n  {"question": }\n]}')
  with pytest.raises(exemplars.ExemplarFileError, match=r"broken.json:2: invalid JSON"):
    exemplars.load_exemplar_file(broken)


_EVALUATION_SPLITS = [("gsm8k", "test"), ("svamp", "test"), ("multiarith", "test"),
                      ("addsub", "test"), ("singleeq", "test"), ("aqua", "test"),
                      ("commonsenseqa", "dev"), ("strategyqa_bigbench", "train"),
                      ("coin_flip", "test"), ("last_letters", "test"),
                      ("date_understanding", "test"), ("tracking_shuffled_objects", "test")]


def test_shipped_exemplars_never_come_from_evaluation_data(data_dir):
  """No shipped exemplar question appears in an evaluation split."""
  questions = []
  for name, split in _EVALUATION_SPLITS:
    questions += [e.question for e in registry.load(name, split, data_dir=data_dir)]
  for name in exemplars.shipped_set_names():
    assert exemplars.check_no_overlap(exemplars.load_shipped_set(name), questions) == []
