"""The rationale verifier: checks the steps of a chain of thought, not only its answer.

The answer judge (`cot_distill.answers`) asks whether a chain ENDS right;
with the gold answer in the prompt (the paper's hint) a teacher can end
right after wrong work. `verify` checks what a program can check in a chain,
by task family, and returns a `Verification` naming the first failing step:

  family       datasets                       checks
  arithmetic   gsm8k svamp asdiv mawps         every equation recomputed exactly
               multiarith addsub singleeq      (`arithmetic`); with the hint, a
               aqua                            number answer must be one the
                                               chain reached
  coin_flip    coin_flip, coin_flip_gen        state after each person (`coin_flip`)
  last_letters last_letters, last_letters_gen  letter of each word (`last_letters`)
  objects      tracking_shuffled_objects       holdings after each swap (`tracking`)
  dates        date_understanding              dates valid, offsets exact (`dates`)
  free_form    strategyqa, commonsenseqa       none beyond parroting: their facts
                                               cannot be checked by a program

Every chain also gets the self-contradiction check (an answer statement
inside the chain that differs from its final answer), and with hinted
prompts the parroting checks (`parroting`). Verdict reasons: `arithmetic_error` (an equation is wrong),
`step_inconsistent` (a step contradicts the question or the chain's own
answer), `hint_parroting` (the chain restates the given answer instead of
deriving it). The same function serves the annotation filter and the
faithful-CoT accuracy of students, so both mean the same thing by a sound
chain.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from cot_distill import answers
from cot_distill.verifier import arithmetic
from cot_distill.verifier import coin_flip
from cot_distill.verifier import dates
from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import last_letters
from cot_distill.verifier import parroting
from cot_distill.verifier import text as text_lib
from cot_distill.verifier import tracking

ARITHMETIC_ERROR = findings_lib.ARITHMETIC_ERROR
STEP_INCONSISTENT = findings_lib.STEP_INCONSISTENT
HINT_PARROTING = findings_lib.HINT_PARROTING
REASONS = findings_lib.REASONS

ARITHMETIC, COIN_FLIP, LAST_LETTERS = "arithmetic", "coin_flip", "last_letters"
OBJECTS, DATES, FREE_FORM = "objects", "dates", "free_form"
_FAMILIES = {
    ARITHMETIC: ("gsm8k", "svamp", "asdiv", "asdiv_a", "mawps", "multiarith", "addsub",
                 "singleeq", "aqua"),
    COIN_FLIP: ("coin_flip", "coin_flip_gen"),
    LAST_LETTERS: ("last_letters", "last_letters_gen"),
    OBJECTS: ("tracking_shuffled_objects",),
    DATES: ("date_understanding",),
    FREE_FORM: ("strategyqa", "strategyqa_bigbench", "commonsenseqa"),
}
# Families whose steps the verifier recomputes (free_form gets parroting only).
STEP_CHECKED = (ARITHMETIC, COIN_FLIP, LAST_LETTERS, OBJECTS, DATES)


@dataclasses.dataclass(frozen=True)
class Verification:
  """The verifier's verdict on one chain.

  Attributes:
    passed: no check failed.
    reason: None, or the first failing step's reason (`REASONS`).
    step: that step as written (one line, cut short).
    detail: what the check found ("900 + 135 is 1035, not 990").
    family: the task family whose checks ran (None: only the generic ones).
    checks: names of the checks that ran.
  """

  passed: bool
  reason: str | None = None
  step: str | None = None
  detail: str | None = None
  family: str | None = None
  checks: tuple[str, ...] = ()

  def to_dict(self) -> dict[str, Any]:
    """The record/prediction field: compact, JSON-ready."""
    data = {"passed": self.passed, "family": self.family, "checks": list(self.checks)}
    if not self.passed:
      data.update(reason=self.reason, step=self.step, detail=self.detail)
    return data


def family(dataset: str | None, answer_type: str | None = None,
           question: str = "") -> str | None:
  """The family of checks for a dataset (by registry name, a generated
  task's name or prefix, else by the question's shape); None if unknown."""
  name = (dataset or "").lower()
  for family_name, names in _FAMILIES.items():
    if name in names or any(name.startswith(n + "_") or name.startswith(n + "/")
                            for n in names):
      return family_name
  if coin_flip.parse_question(question) is not None:
    return COIN_FLIP
  if last_letters.parse_words(question):
    return LAST_LETTERS
  if str(getattr(answer_type, "value", answer_type)) == "number":
    return ARITHMETIC
  return None


def _arithmetic(chain: str, answer: str | None, answer_type: str, hinted: bool
                ) -> list[findings_lib.Finding]:
  found = []
  for equation in arithmetic.equations(chain):
    if not equation.correct:
      at = max(0, chain.find(equation.left.split()[0]))
      found.append(findings_lib.Finding(
          at, ARITHMETIC_ERROR, equation.text,
          f"{equation.left} is {_format(equation.value)}, not {equation.stated}"))
      break
  if hinted and answer_type == "number" and answer is not None:
    # Without the hint a chain may leave its last sum to the answer
    # sentence; with it, an answer the chain never reaches is the hint's.
    body = answers.strip_answer_sentence(chain)
    value = text_lib.parse_number(answer)
    if value is not None and not arithmetic.derives(body, value):
      found.append(findings_lib.Finding(
          len(body), HINT_PARROTING, text_lib.excerpt(chain[len(body):] or chain[-120:]),
          f"the final answer {answer} is not a number the chain reached"))
  return found


# "to get the answer: 18 + 38", 'the answer would be "eo" + "nr" = "eonr"': the
# marker introduces a sum, not an answer.
_EXPRESSION_NEXT_RE = re.compile(r"[^\w$]*\$?\d[\d,.]*%?\s*(?:[-+*/×÷x]|plus|minus|times)\s*\$?\d"
                                 r"|[^\w$]*[\"“']\w+[\"”']\s*\+")


def _contradiction(chain: str, answer: str | None, answer_type: str, choices
                   ) -> list[findings_lib.Finding]:
  """The chain's own answer statement, before its final one, disagrees with it.

  "So the answer is 48. ... The answer is 41." (or a zero-shot chain that
  says "the answer is yes" before its answer stage says "No").
  """
  if answer is None:
    return []
  body = answers.strip_answer_sentence(chain)
  marker = answers.last_marker(body)
  if marker is None or _EXPRESSION_NEXT_RE.match(body, marker.end()):
    return []
  own = answers.extract_answer(body, answer_type, choices)
  if answers.answer_source(own.rule) != "marker" or answers.answers_match(
      own.answer, answer, answer_type):
    return []
  sentence = next((s for o, s in reversed(text_lib.sentences(body)) if o <= marker.start()),
                  body[marker.start():])
  return [findings_lib.Finding(marker.start(), STEP_INCONSISTENT, text_lib.excerpt(sentence),
                               f"the chain concludes {own.answer} but answers {answer}")]


def _format(value) -> str:
  if value.denominator == 1:
    return str(value.numerator)
  return f"{float(value):.6g}"


def verify(*, question: str, chain: str, answer: str | None,
           answer_type: str, dataset: str | None = None, hinted: bool = False,
           choices: Sequence[tuple[str, str]] | None = None) -> Verification:
  """Checks a chain of thought's steps.

  Args:
    question: the question as the teacher/student saw it.
    chain: the chain of thought, with or without its final answer sentence.
    answer: the final answer the judge extracted (canonical form), or None.
    answer_type: `AnswerType` value ("number", "yes_no", ...).
    dataset: registry or generated-task name (picks the family).
    hinted: the prompt gave the gold answer (adds the parroting checks).
    choices: the question's options, for the objects family's conclusion.
  """
  answer_type = str(getattr(answer_type, "value", answer_type))
  family_name = family(dataset, answer_type, question)
  checks: list[str] = []
  found: list[findings_lib.Finding] = []
  if family_name == ARITHMETIC:
    checks.append("arithmetic")
    found += _arithmetic(chain, answer, answer_type, hinted)
  elif family_name in (COIN_FLIP, LAST_LETTERS, OBJECTS, DATES):
    module = {COIN_FLIP: coin_flip, LAST_LETTERS: last_letters, OBJECTS: tracking,
              DATES: dates}[family_name]
    # The chain's own steps: its final answer sentence states, not derives.
    body = answers.strip_answer_sentence(chain)
    result = (module.check(question, body, answer, choices) if module is tracking
              else module.check(question, body, answer))
    if result is not None:
      checks.append(family_name)
      found += result
  checks.append("contradiction")
  found += _contradiction(chain, answer, answer_type, choices)
  if hinted:
    checks.append("parroting")
    found += parroting.check(question, chain, answer, answer_type)
  if not found:
    return Verification(True, family=family_name, checks=tuple(checks))
  first = min(found, key=lambda f: f.position)
  return Verification(False, first.reason, first.step, first.detail, family_name,
                      tuple(checks))
