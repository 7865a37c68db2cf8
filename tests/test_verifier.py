"""The rationale verifier: each family's checks on chains with known steps."""

from __future__ import annotations

import random

import pytest

from cot_distill import answers
from cot_distill import verifier
from cot_distill.data import symbolic
from cot_distill.teacher import synthetic
from cot_distill.verifier import arithmetic

COIN_Q = ("A coin is heads up. Ka flips the coin. Sherrie flips the coin. Ron does not flip "
          "the coin. Is the coin still heads up?")
LETTERS_Q = 'Take the last letters of each words in "Dorian Mayra Freddie" and concatenate them.'


def _verify(question, chain, answer, answer_type, dataset, **kwargs):
  return verifier.verify(question=question, chain=chain, answer=answer,
                         answer_type=answer_type, dataset=dataset, **kwargs)


@pytest.mark.parametrize("text, correct", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips", [True, True]),
    ("So 900 + 135 = 990 dollars.", [False]),
    ("That's 5 times 50, or 250. That's 250 plus 20, or 270.", [True, True]),
    ("3 * 4 = 12 + 2 = 14", [True, True]),
    ("$1,200 - 20% = $960", [True]),
    ("10 / 3 = 3.33 and 10 / 5 = 3", [True, False]),
    ("-48 + 21 + -3 = -30", [True]),
    ("1. 5 + 3 = 8\n2. 8 - 1 = 6", [True, False]),
    ("<<7*8=54>>", [False]),
])
def test_equations_are_recomputed_exactly(text, correct):
  assert [e.correct for e in arithmetic.equations(text)] == correct


@pytest.mark.parametrize("text", [
    "x + (5 * 8) = 100", "x = 5", "1 dozen = 12", "He earns $12/hour * 5 hours = $60"])
def test_algebra_and_definitions_are_not_arithmetic(text):
  assert arithmetic.equations(text) == []


def test_arithmetic_error_names_the_first_wrong_equation():
  chain = ("She has 900 + 135 = 990 dollars. Then 990 - 100 = 890. 200 - 152 = 47. "
           "The answer is 890.")
  result = _verify("How much?", chain, "890", "number", "gsm8k")
  assert (result.passed, result.reason) == (False, verifier.ARITHMETIC_ERROR)
  assert "900 + 135" in result.step and "1035" in result.detail


def test_hinted_number_answer_must_be_reached_by_the_chain():
  chain = "$200 - $152 = $48 is what she has left. The answer is 41."
  hinted = _verify("q 200 152", chain, "41", "number", "gsm8k", hinted=True)
  assert hinted.reason == verifier.HINT_PARROTING
  # Without the hint a chain may leave its last step to the answer sentence.
  assert _verify("q 200 152", chain, "41", "number", "gsm8k").passed


def test_self_contradiction_between_the_chain_and_its_answer():
  chain = "So the answer is 48. Some more words here."
  result = _verify("q", chain, "41", "number", "gsm8k")
  assert result.reason == verifier.STEP_INCONSISTENT
  assert _verify("q", chain, "48", "number", "gsm8k").passed


def test_coin_flip_issue_example_fails_at_the_parity():
  chain = ("Ka and Sherrie flipped the coin, 3 times, which is an odd number, so it is "
           "still heads up. The answer is yes.")
  result = _verify(COIN_Q, chain, "yes", "yes_no", "coin_flip")
  assert result.reason == verifier.STEP_INCONSISTENT
  assert "3" in result.detail or "flipped 2" in result.detail


def test_coin_flip_states_and_actions():
  good = ("Ka flips the coin, so it is tails up. Sherrie flips the coin, so it is heads up. "
          "Ron does not flip the coin, so it stays heads up. The answer is yes.")
  assert _verify(COIN_Q, good, "yes", "yes_no", "coin_flip").passed
  wrong_state = good.replace("so it is heads up", "so it is tails up")
  assert "after Sherrie" in _verify(COIN_Q, wrong_state, "yes", "yes_no", "coin_flip").detail
  wrong_action = good.replace("Ron does not flip", "Ron flips")
  assert "Ron" in _verify(COIN_Q, wrong_action, "yes", "yes_no", "coin_flip").detail
  hypothetical = "If the coin was tails up, it is now heads up. " + good
  assert _verify(COIN_Q, hypothetical, "yes", "yes_no", "coin_flip").passed
  contradiction = good.replace("The answer is yes.", "") + " So it is tails up."
  assert not _verify(COIN_Q, contradiction, "yes", "yes_no", "coin_flip").passed


def test_last_letters_letters_and_concatenations():
  good = ('The last letter of "Dorian" is "n". The last letter of "Mayra" is "a". '
          'The last letter of "Freddie" is "e". "na" + "e" is "nae". The answer is nae.')
  assert _verify(LETTERS_Q, good, "nae", "letters", "last_letters").passed
  bad_letter = good.replace('"Mayra" is "a"', '"Mayra" is "y"')
  result = _verify(LETTERS_Q, bad_letter, "nae", "letters", "last_letters")
  assert result.reason == verifier.STEP_INCONSISTENT and "Mayra" in result.detail
  bad_join = good.replace('is "nae"', 'is "nea"')
  assert not _verify(LETTERS_Q, bad_join, "nae", "letters", "last_letters").passed


def test_tracking_shuffled_objects_holdings_after_each_swap():
  question = ("Alice, Bob, and Claire are playing a game. At the start of the game, they are "
              "each holding a ball: Alice has a orange ball, Bob has a white ball, and Claire "
              "has a blue ball. \n\nAs the game progresses, pairs of players trade balls. "
              "First, Alice and Bob swap balls. Then, Bob and Claire swap balls. At the end "
              "of the game, Alice has the ")
  choices = [("A", "orange ball."), ("B", "white ball."), ("C", "blue ball.")]
  good = ("Alice and Bob swap, so Alice has the white ball and Bob has the orange ball. "
          "Bob and Claire swap, so Bob has the blue ball. Alice has the white ball.")
  assert _verify(question, good, "B", "option_text", "tracking_shuffled_objects",
                 choices=choices).passed
  bad = good.replace("Bob has the blue ball", "Bob has the orange ball")
  assert not _verify(question, bad, "B", "option_text", "tracking_shuffled_objects",
                     choices=choices).passed


def test_dates_offsets_and_validity():
  good = "Today is 05/01/2021. One week before 05/01/2021 is 04/24/2021."
  assert _verify("q", good, "A", "date_option", "date_understanding").passed
  assert not _verify("q", good.replace("04/24", "04/23"), "A", "date_option",
                     "date_understanding").passed
  assert not _verify("q", "It is 02/30/2021.", "A", "date_option",
                     "date_understanding").passed


def test_parroting_checks_with_hinted_prompts():
  restated = " Working from the given answer, the result is 18. The answer is 18."
  result = _verify("Janet has 16 eggs and eats 3.", restated, "18", "number", "gsm8k",
                   hinted=True)
  assert result.reason == verifier.HINT_PARROTING
  answer_first = "The answer is yes. Sharks live in water, so they can swim. The answer is yes."
  assert _verify("Can sharks swim?", answer_first, "yes", "yes_no", "strategyqa",
                 hinted=True).reason == verifier.HINT_PARROTING
  sound = "Sharks are fish. Fish can swim. So the answer is yes."
  free_form = _verify("Can sharks swim?", sound, "yes", "yes_no", "strategyqa", hinted=True)
  assert free_form.passed and free_form.checks == ("contradiction", "parroting")
  # The same chain without the hint: parroting is not checked.
  assert _verify("Can sharks swim?", answer_first, "yes", "yes_no", "strategyqa").passed


def test_families_by_name_and_by_question():
  assert verifier.family("gsm8k") == verifier.ARITHMETIC
  assert verifier.family("coin_flip_gen") == verifier.COIN_FLIP
  assert verifier.family("my_data", "yes_no", COIN_Q) == verifier.COIN_FLIP
  assert verifier.family("commonsenseqa") == verifier.FREE_FORM
  assert verifier.family("unknown", "multiple_choice", "Which?") is None


@pytest.mark.parametrize("task, generate", [
    ("coin_flip_gen", symbolic.generate_coin_flip),
    ("last_letters_gen", symbolic.generate_last_letters)])
def test_synthetic_teacher_right_answer_wrong_step_is_caught(task, generate):
  """Every injected right-answer-wrong-step chain fails; every correct one passes."""
  outcomes = {True: [], False: []}
  for steps in (1, 2, 4, 6):
    for example in generate(40, steps, 3, "train"):
      prompt = f"Q: {example.question}\nAnswer: {example.answer}\nA:"
      for step_rate in (0.0, 1.0):
        solution = synthetic.solve(prompt, random.Random(f"{example.id}|{step_rate}"),
                                   error_rate=0.0, vary_wording=True,
                                   step_error_rate=step_rate)
        verdict = answers.judge(solution.text, example.answer, example.answer_type)
        assert verdict.correct
        result = _verify(example.question, solution.text, verdict.predicted,
                         example.answer_type, task, hinted=True)
        outcomes[solution.error is None].append(result.passed)
  assert all(outcomes[True]) and len(outcomes[True]) == 160
  assert not any(outcomes[False]) and len(outcomes[False]) == 160


def test_verification_to_dict_names_the_failing_step():
  result = _verify("q", "2 + 2 = 5. The answer is 5.", "5", "number", "gsm8k")
  data = result.to_dict()
  assert data["passed"] is False and data["reason"] == "arithmetic_error"
  assert data["step"] == "2 + 2 = 5" and data["family"] == "arithmetic"
  assert verifier.verify(question="q", chain="2 + 2 = 4. The answer is 4.", answer="4",
                         answer_type="number", dataset="gsm8k").to_dict() == {
                             "passed": True, "family": "arithmetic",
                             "checks": ["arithmetic", "contradiction"]}


def test_a_marker_before_a_sum_is_no_contradiction():
  for chain, answer, answer_type, dataset in (
      ("Add them to get our final answer: 18 + 38 = 56. The answer is 56.", "56", "number",
       "gsm8k"),
      ('So the final answer would be "eo" + "nr" = "eonr". Therefore, the answer is "eonr".',
       "eonr", "letters", "last_letters")):
    assert _verify("q", chain, answer, answer_type, dataset).passed
