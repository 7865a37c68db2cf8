"""The local teacher replays a dataset's worked solutions for its questions."""

from __future__ import annotations

import random

import pytest

from cot_distill import errors, verifier
from cot_distill.data import registry
from cot_distill.teacher import exemplars, prompts, server, synthetic


@pytest.fixture(scope="module")
def gsm8k_train(data_dir):
  return registry.load("gsm8k", "train", data_dir)[:20]


def test_the_asked_question_gets_its_own_worked_solution(gsm8k_train):
  worked = synthetic.WorkedSolutions(gsm8k_train)
  assert len(worked) == 20
  builder = prompts.PromptBuilder(
      prompts.PromptTemplate(mode=prompts.PromptMode.HINTED,
                             style=prompts.PromptStyle.COMPLETION),
      exemplars.default_set("gsm8k"))
  for example in gsm8k_train:
    text = builder.build(example).text
    solution = synthetic.solve(text, random.Random(0), error_rate=0.0,
                               vary_wording=False, worked=worked)
    assert solution.answer == example.answer
    assert solution.text.strip().endswith(f"The answer is {example.answer}.")
    # The dataset's lines, as sentences on one line (hinted templates stop
    # at the line's end).
    for line in example.gold_rationale.splitlines():
      assert " ".join(line.split()) in solution.text
    assert "\n" not in solution.text
    # A sound chain: the rationale verifier passes it.
    verdict = verifier.verify(question=example.question, chain=solution.text.strip(),
                              answer=example.answer, answer_type=example.answer_type.value,
                              dataset="gsm8k", hinted=True)
    assert verdict.passed, (solution.text, verdict)


def test_unknown_questions_fall_back_to_restating_the_hint(gsm8k_train):
  worked = synthetic.WorkedSolutions(gsm8k_train[:2])
  solution = synthetic.solve("Q: How many apples?\nAnswer: 7\nExplanation:",
                             random.Random(0), error_rate=0.0, vary_wording=False,
                             worked=worked)
  assert "given answer" in solution.text


def test_a_bad_spec_is_a_user_error():
  with pytest.raises(errors.UserError, match="DATASET:SPLIT"):
    server.load_worked_solutions(["gsm8k"])
  with pytest.raises(errors.UserError, match="no_such"):
    server.load_worked_solutions(["no_such:train"])
