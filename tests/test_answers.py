"""Answer extraction, comparison and answer sentences (cot_distill.answers)."""

from __future__ import annotations

import pytest

from cot_distill import answers
from cot_distill.answers import Extraction
from cot_distill.data.example import AnswerType

AQUA_CHOICES = (("A", "21"), ("B", "21.5"), ("C", "22"), ("D", "22.5"),
                ("E", "23"))
CSQA_CHOICES = (("A", "ignore"), ("B", "enforce"), ("C", "authoritarian"),
                ("D", "yell at"), ("E", "avoid"))
DATE_CHOICES = (("A", "12/14/2026"), ("B", "12/14/1950"), ("C", "12/14/2007"),
                ("D", "12/14/1937"), ("E", "07/14/1938"), ("F", "12/14/1988"))
TRACKING_CHOICES = (("A", "yellow ball"), ("B", "blue ball"), ("C", "pink ball"))


@pytest.mark.parametrize("text, expected", [
    ("He has 3 + 4 = 7 apples. The answer is 7.", Extraction("7", "marker_number")),
    ("The answer is $1,000.50.", Extraction("1000.5", "marker_number")),
    ("So the answer is: 18.0", Extraction("18", "marker_number")),
    ("THE ANSWER IS 40,000 dollars", Extraction("40000", "marker_number")),
    ("The answer is 25%.", Extraction("25", "marker_number")),
    ("The answer is -3 degrees.", Extraction("-3", "marker_number")),
    ("The answer is \u20ac12 and \u00a35.", Extraction("12", "marker_number")),
    # Kojima et al.'s zero-shot-CoT trigger is a marker.
    ("5 + 6 = 11 \nTherefore, the answer (arabic numerals) is 11.",
     Extraction("11", "marker_number")),
    ("Therefore, the answer (arabic numerals) is: \n\nThe boots cost more than $99.",
     Extraction("99", "marker_number")),
    # The LAST marker wins over an earlier, tentative one.
    ("At first the answer is 5. Wait, 2 + 4 = 6. So the final answer is 6.",
     Extraction("6", "marker_number")),
    # A restatement in words: step back to the statement right before it.
    ("The answer is 27. \n\nThe answer (words) is \"twenty-seven.\"",
     Extraction("27", "marker_number")),
    # Digits touching "/" are not numbers.
    ("The answer is 11/12 or 990 pieces.", Extraction("990", "marker_number")),
    ("The answer is 1/4.", Extraction(None, "none")),
    # A committed answer statement without a number is no answer, even if the
    # reasoning before it has numbers.
    ("She has 4 + 4 = 8. The answer is two hundred.", Extraction(None, "none")),
    # Fallback only without any marker: the last number.
    ("5 - 3 = 2, then 2 * 10 = 20 dollars.", Extraction("20", "last_number")),
    ("Nothing numeric here.", Extraction(None, "none")),
    ("", Extraction(None, "none")),
])
def test_extract_number(text, expected):
  assert answers.extract_answer(text, AnswerType.NUMBER) == expected


@pytest.mark.parametrize("text, expected", [
    ("Rena does not flip it. So the answer is yes.", Extraction("yes", "marker_yes_no")),
    ("Therefore, the answer (Yes or No) is:\n\nNo, it could not.", Extraction("no", "marker_yes_no")),
    ("Therefore, the answer (Yes or No) is YES!", Extraction("yes", "marker_yes_no")),
    ("The answer is: it depends.", Extraction(None, "none")),
    # A conditional statement before a non-answer is a hedge, not an answer.
    ("If you mean X, then the answer is yes. \nTherefore, the answer (Yes or No) is unknown.",
     Extraction(None, "none")),
    # An unconditional statement right before the trigger is restated.
    ("The answer is yes. \nTherefore, the answer (Yes or No) is the same.",
     Extraction("yes", "marker_yes_no")),
    ("Is it heads up? No. Then yes, it is.", Extraction("yes", "last_yes_no")),
    ("Nobody knows; nothing.", Extraction(None, "none")),
])
def test_extract_yes_no(text, expected):
  assert answers.extract_answer(text, "yes_no") == expected


@pytest.mark.parametrize("text, choices, expected", [
    ("The answer is (C).", AQUA_CHOICES, Extraction("C", "marker_letter")),
    ("The answer is B) 21.5", AQUA_CHOICES, Extraction("B", "marker_letter")),
    ("The answer is E.", AQUA_CHOICES, Extraction("E", "marker_letter")),
    ("The answer is enforce.", CSQA_CHOICES, Extraction("B", "marker_choice_text")),
    ("The answer is to yell at them.", CSQA_CHOICES, Extraction("D", "marker_choice_text")),
    ("(A) is wrong, (D) fits best.", CSQA_CHOICES,
     Extraction("D", "last_parenthesized_letter")),
    ("They would not ignore it, they would avoid it.", CSQA_CHOICES,
     Extraction("E", "last_choice_text")),
    ("The answer is F.", None, Extraction(None, "none")),  # A-E by default.
])
def test_extract_multiple_choice(text, choices, expected):
  assert answers.extract_answer(text, AnswerType.MULTIPLE_CHOICE, choices) == expected


@pytest.mark.parametrize("text, expected", [
    ("So the answer is (D).", Extraction("D", "marker_letter")),
    ("The answer is 12/14/1937.", Extraction("D", "marker_date")),
    ("The answer is 7/14/1938.", Extraction("E", "marker_date")),
    ("Ten years ago it was 12/14/1940, so it is 12/14/1950.", Extraction("B", "last_date")),
])
def test_extract_date_option(text, expected):
  assert answers.extract_answer(text, AnswerType.DATE_OPTION, DATE_CHOICES) == expected


def test_extract_option_text_reads_longest_choice():
  text = "Alice swaps her ball with Bob. The answer is the pink ball."
  assert answers.extract_answer(text, AnswerType.OPTION_TEXT, TRACKING_CHOICES) == (
      Extraction("C", "marker_choice_text"))


@pytest.mark.parametrize("text, expected", [
    ('Therefore, the answer is "fnenl".', Extraction("fnenl", "marker_quoted")),
    ('Therefore, the answer is "n-a-e-y".', Extraction("naey", "marker_quoted")),
    ('Therefore, the answer is "n a o a."', Extraction("naoa", "marker_quoted")),
    ("The answer is aaye.", Extraction("aaye", "marker_token")),
    ("The answer is NKRE.", Extraction("nkre", "marker_token")),
    ('The last letter of "Jeff" is "f", of "Jen" is "n": "fn"', Extraction("fn", "last_quoted")),
    ("Putting them together: nkre", Extraction("nkre", "final_token")),
])
def test_extract_letters(text, expected):
  assert answers.extract_answer(text, AnswerType.LETTERS) == expected


@pytest.mark.parametrize("predicted, gold, answer_type, expected", [
    ("18", "18.0", "number", True),
    ("18.0", "18", "number", True),
    ("40000", "40,000", "number", True),
    ("$1,000", "1000", "number", True),
    ("0.30000000000000004", "0.3", "number", True),
    ("33.3", "33.33", "number", False),
    ("17", "18", "number", False),
    (None, "18", "number", False),
    ("Yes", "yes", "yes_no", True),
    ("no", "Yes", "yes_no", False),
    ("b", "B", "multiple_choice", True),
    ("(B)", "B", "multiple_choice", True),
    ("A", "B", "date_option", False),
    ("NKRE", "nkre", "letters", True),
    ("nkr", "nkre", "letters", False),
])
def test_answers_match(predicted, gold, answer_type, expected):
  assert answers.answers_match(predicted, gold, answer_type) is expected


def test_judge_combines_extraction_and_comparison():
  verdict = answers.judge("3 * 6 = 18. The answer is 18.", "18.0", AnswerType.NUMBER)
  assert verdict == answers.Verdict(predicted="18", rule="marker_number", correct=True)
  verdict = answers.judge("I cannot say.", "yes", AnswerType.YES_NO)
  assert verdict == answers.Verdict(predicted=None, rule="none", correct=False)


@pytest.mark.parametrize("answer, answer_type, expected", [
    ("40,000", "number", "The answer is 40000."),
    ("18.0", "number", "The answer is 18."),
    ("Yes", "yes_no", "The answer is yes."),
    ("b", "multiple_choice", "The answer is B."),
    ("NKRE", "letters", "The answer is nkre."),
])
def test_answer_sentence(answer, answer_type, expected):
  sentence = answers.answer_sentence(answer, answer_type)
  assert sentence == expected
  # The sentence reads back as the same answer (filter and target agree).
  assert answers.judge(sentence, answer, answer_type).correct


def test_answer_sentence_rejects_unreadable_answer():
  with pytest.raises(ValueError, match="number"):
    answers.answer_sentence("many", "number")


@pytest.mark.parametrize("rationale, expected", [
    ("He has 3. So the answer is 3.5.", "He has 3."),
    ("He has 3.\nTherefore, the answer is 3. ", "He has 3."),
    ("Add them: 2 + 2 = 4. The answer is $4,000.", "Add them: 2 + 2 = 4."),
    ("The answer is 3. But wait, more follows.", "The answer is 3. But wait, more follows."),
    ("No marker at all.  ", "No marker at all."),
    ("The answer is yes.", ""),
])
def test_strip_answer_sentence(rationale, expected):
  assert answers.strip_answer_sentence(rationale) == expected


def test_strip_then_append_gives_one_answer_sentence():
  rationale = "Jeff flips, so tails. Jen flips, so heads. So the answer is yes."
  target = answers.strip_answer_sentence(rationale) + " " + answers.answer_sentence("yes", "yes_no")
  assert target == "Jeff flips, so tails. Jen flips, so heads. The answer is yes."


@pytest.mark.parametrize("text, answer_type, source", [
    ("So the answer is 18.", "number", "marker"),
    ("Answer: (B)", "multiple_choice", "marker"),
    ("lol 72 72 the cat 3", "number", "fallback"),
    ("yes yes no", "yes_no", "fallback"),
    ("nothing here", "number", "none"),
    ("The answer is (A) or (B).", "multiple_choice", "none"),
])
def test_answer_source_separates_stated_answers_from_fallbacks(text, answer_type, source):
  assert answers.answer_source(answers.extract_answer(text, answer_type).rule) == source


def test_empty_final_marker_falls_back_to_the_previous_marker_however_far():
  reasoning = "She adds the parts one by one, and it takes a while to explain. " * 4
  text = f"So the answer is 42. {reasoning}\nTherefore, the answer (arabic numerals) is"
  assert answers.extract_answer(text, "number") == answers.Extraction("42", "marker_number")
  # Punctuation alone after the marker is empty too.
  assert answers.extract_answer("The answer is 7. Therefore, the answer is: .",
                                "number").answer == "7"
  # A non-empty statement with no answer still stops the walk (no stray number).
  assert answers.extract_answer(
      f"So the answer is 42. {reasoning} The answer is: it depends.", "number"
  ) == answers.Extraction(None, "none")


@pytest.mark.parametrize("text", [
    "Therefore, among A through C, the answer is (A) or (B).",
    "Therefore, among A through C, the answer is either A or C.",
    "Therefore, among A through C, the answer is Sam or Helga.",
    "The answer is (A) Sam. or (B)",  # second sentence: not a hedge, see below
])
def test_hedge_between_two_options_is_no_answer(text):
  choices = (("A", "Sam."), ("B", "Helga."), ("C", "Karl."))
  extraction = answers.extract_answer(text, "option_text", choices)
  if text.endswith("(B)"):
    assert extraction == answers.Extraction("A", "marker_letter")
  else:
    assert extraction == answers.Extraction(None, "hedge")


def test_no_hedge_when_the_same_option_is_named_twice_or_numbers_are_involved():
  choices = (("A", "Sam."), ("B", "Helga."), ("C", "Karl."))
  assert answers.extract_answer("The answer is (A) Sam, or A.", "option_text",
                                choices).answer == "A"
  assert answers.extract_answer("The answer is 5 or 6.", "number").answer == "5"


def test_choice_text_matches_without_the_options_final_period():
  choices = (("A", "brown ball."), ("B", "red ball."), ("C", "purple ball."))
  assert answers.extract_answer("So the answer is the red ball, I think.",
                                "option_text", choices) == answers.Extraction(
                                    "B", "marker_choice_text")


def test_large_integers_compare_exactly():
  assert not answers.answers_match("1000001", "1000000", "number")
  assert answers.answers_match("1,000,000.0", "1000000", "number")
  assert answers.answers_match("0.6666666666666667", "0.6666666666666666", "number")


def test_decimal_fraction_numerator_is_not_a_number():
  """'75.44/8 or 9.43': neither 75 nor 75.44 is the answer; 9.43 is."""
  assert answers.extract_answer("The answer is 75.44/8 or 9.43.", "number").answer == "9.43"
  assert answers.extract_answer("The answer is 3/8 or 0.375.", "number").answer == "0.375"
