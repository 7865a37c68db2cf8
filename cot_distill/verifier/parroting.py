"""Hint parroting: a hinted chain that restates the given answer instead of reaching it.

The paper's prompts give the gold answer after the question, so a weak
teacher can end right without reasoning. With hinted prompts a chain fails
when it

  * refers to the given answer: "the answer is given as", "as stated",
    "the given answer", "working from the answer", "we are told the answer";
  * has no step: once its final answer sentence is set aside, no sentence
    is left that does anything but state the answer;
  * states its final answer before its first step: an answer marker ("the
    answer is X"), a leading "Yes,"/"No," for yes/no questions, or (for
    numbers) the answer's value where the question does not contain it,
    comes before the first sentence that does anything else (a sentence
    that computes the answer, "48 + 24 = 72", is a step).

These checks read only the chain's shape, so they apply to every task,
StrategyQA and CommonsenseQA included (whose facts nothing here can check).
"""

from __future__ import annotations

import fractions
import re

from cot_distill import answers
from cot_distill.verifier import arithmetic
from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import text as text_lib

_GIVEN_RE = re.compile(
    r"answer\s+(?:is|was)\s+(?:already\s+)?(?:given|provided|stated|shown)"
    r"|\bas\s+(?:stated|given)\b|\bgiven\s+answer|\bprovided\s+answer"
    r"|\b(?:working|going)\s+(?:back\s+)?from\s+the\s+(?:given\s+)?answer"
    r"|\btold\s+(?:that\s+)?the\s+answer|\bthe\s+hint\b|\baccording\s+to\s+the\s+answer",
    re.IGNORECASE)
_MARKER_RE = re.compile(r"\banswer\s+(?:is|would\s+be|will\s+be)\b|\banswer\s*:", re.IGNORECASE)
_LEADING_YES_NO_RE = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def _states_answer(sentence: str, answer: str | None, answer_type: str,
                   question_numbers: set) -> bool:
  if _MARKER_RE.search(sentence):
    return True
  if answer_type == "yes_no" and _LEADING_YES_NO_RE.match(sentence):
    return True
  if answer_type == "number" and answer is not None:
    value = text_lib.parse_number(answer)
    if value is not None and value not in question_numbers:
      # "48 + 24 = 72" derives the answer in the sentence that states it.
      return (value in text_lib.numbers(sentence)
              and value not in arithmetic.expression_values(sentence))
  return False


def check(question: str, chain: str, answer: str | None, answer_type: str
          ) -> list[findings_lib.Finding]:
  """Findings for a chain written from a hinted prompt."""
  found: list[findings_lib.Finding] = []
  body = answers.strip_answer_sentence(chain)
  for match in _GIVEN_RE.finditer(chain):
    sentence = next((s for o, s in text_lib.sentences(chain)
                     if o <= match.start() < o + len(s) + 1), match.group(0))
    found.append(findings_lib.Finding(match.start(), findings_lib.HINT_PARROTING,
                                      text_lib.excerpt(sentence),
                                      "the chain refers to the answer given in the prompt"))
    break
  question_numbers: set[fractions.Fraction] = set(text_lib.numbers(question))
  sentences = text_lib.sentences(body)
  stated = [_states_answer(s, answer, answer_type, question_numbers) for _, s in sentences]
  if not sentences or all(stated):
    found.append(findings_lib.Finding(0, findings_lib.HINT_PARROTING,
                                      text_lib.excerpt(chain),
                                      "the chain has no step before its answer"))
  elif stated[0]:
    offset, sentence = sentences[0]
    found.append(findings_lib.Finding(offset, findings_lib.HINT_PARROTING,
                                      text_lib.excerpt(sentence),
                                      "the chain states its answer before any step"))
  return found
