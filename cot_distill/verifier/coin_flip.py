"""Coin flip: the coin's state after each person, recomputed from the question.

The question lists people in order, each flipping the coin or not; the coin
starts heads up. A chain's checkable claims, each compared with the truth:

  * an action: "Jen flips the coin" / "Jeff does not flip the coin";
  * a state in a sentence naming people: "..., so the coin is now tails up"
    is the state after the last of them in the question's order (a state
    stated as where the coin "started" is skipped);
  * the flippers: "flipped by Jen and Giselle", "2 people flipped: A and B";
  * a count: "flipped 3 times", "two people flipped";
  * a parity: "3 times, which is an even number", "an odd number of flips";
  * parity and state together: "an odd number of flips ... heads up" fails;
  * the conclusion: the chain's last heads/tails statement is the final
    state, and must agree with the final answer (yes = heads up), which is
    how "3 times, which is odd ... still heads up. The answer is yes." fails
    (at the parity, the first wrong step).
A sentence states a state when it says "heads" or "tails" ("not heads up",
"no longer heads up" read as tails). Hypothetical sentences ("if", "whether")
and hedges ("heads up or tails up") are skipped, as is any claim the check
cannot place.
"""

from __future__ import annotations

import dataclasses
import re

from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import text as text_lib

_QUESTION_RE = re.compile(r"A coin is heads up\.(?P<steps>.*?)Is the coin still heads up\?",
                          re.DOTALL)
_PERSON_RE = re.compile(r"\s*(?P<name>[^.]+?) (?P<verb>does not flip|flips) the coin\.")
_FLIP = r"(?:flips|flipped|reverses|reversed|turns over)"
_NO_FLIP = (r"(?:does not|doesn't|did not|didn't|does n't)\s+(?:flip|reverse)"
            r"|(?:never|not)\s+(?:flips|flipped)")
_STATE_RE = re.compile(r"\b(heads|tails)\b", re.IGNORECASE)
# "started heads up", "was initially heads up": the start, not a claim.
_STARTED_RE = re.compile(r"\b(?:start\w*|initially|originally|began|begins)\W+(?:\w+\W+){0,3}$",
                         re.IGNORECASE)
_NEGATED_RE = re.compile(r"(?:\bnot|\bno longer|n't)\s+(?:\w+\s+){0,2}$", re.IGNORECASE)
# Hypotheticals ("If the coin was tails up, it is now heads up") and
# hedges ("heads up or tails up") claim nothing about this coin.
_CONDITIONAL_RE = re.compile(r"\b(?:if|whether|either|unless)\b|\b(?:heads|tails)\W+(?:\w+\W+){0,2}?"
                             r"or\W+(?:\w+\W+){0,2}?(?:heads|tails)\b", re.IGNORECASE)
_FLIPPER_LIST_RE = re.compile(r"flipped by|flipped the coin\s*:|(?:people|persons)\s+"
                              r"(?:who\s+)?flipped|flippers", re.IGNORECASE)
_COUNT_RES = (
    re.compile(r"\b(\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
               r"\s+times?\b", re.IGNORECASE),
    re.compile(r"flipped\s+(once|twice|thrice)\b", re.IGNORECASE),
    re.compile(r"\b(\w+)\s+(?:people|persons|of them)\s+(?:who\s+)?flipped", re.IGNORECASE),
    re.compile(r"\b(\w+)\s+(?:flips|times)\s+in\s+total", re.IGNORECASE),
)
_COUNT_WORD = r"\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_PARITY_RE = re.compile(rf"\b({_COUNT_WORD})\b(?:\s+\w+){{0,3}}?,?\s+(?:which\s+)?is\s+(?:an\s+)?"
                        r"(odd|even)\b", re.IGNORECASE)
_PARITY_OF_FLIPS_RE = re.compile(r"\b(odd|even)\s+number\s+of\s+(?:flips|times|people)",
                                 re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Question:
  people: tuple[tuple[str, bool], ...]  # (name, flips), in order

  @property
  def flippers(self) -> tuple[str, ...]:
    return tuple(name for name, flips in self.people if flips)

  def heads_after(self, position: int) -> bool:
    """Heads up after people[0..position] (position -1: the start)."""
    flips = sum(1 for _, f in self.people[:position + 1] if f)
    return flips % 2 == 0


def parse_question(question: str) -> Question | None:
  match = None
  for match in _QUESTION_RE.finditer(question):
    pass
  if match is None:
    return None
  people = tuple((m.group("name").strip(), m.group("verb") == "flips")
                 for m in _PERSON_RE.finditer(match.group("steps")))
  return Question(people) if people else None


def _state_claims(sentence: str) -> list[tuple[int, bool]]:
  """(offset, heads?) for each heads/tails statement that is not a start state."""
  claims = []
  for match in _STATE_RE.finditer(sentence):
    if _STARTED_RE.search(sentence[:match.start()]):
      continue
    heads = match.group(1).lower() == "heads"
    if _NEGATED_RE.search(sentence[:match.start()]):
      heads = not heads
    claims.append((match.start(), heads))
  return claims


def _name_positions(question: Question, sentence: str) -> list[tuple[int, int]]:
  """(offset in sentence, person index) for each person named."""
  found = []
  for index, (name, _) in enumerate(question.people):
    for match in re.finditer(rf"\b{re.escape(name)}\b", sentence):
      found.append((match.start(), index))
  return sorted(found)


def _state_word(heads: bool) -> str:
  return "heads up" if heads else "tails up"


def check(question_text: str, chain: str, answer: str | None
          ) -> list[findings_lib.Finding] | None:
  """Findings for a coin-flip chain; None when the question is not a coin flip."""
  question = parse_question(question_text)
  if question is None:
    return None
  found: list[findings_lib.Finding] = []
  truth_count = len(question.flippers)

  def fail(offset: int, sentence: str, detail: str) -> None:
    found.append(findings_lib.Finding(offset, findings_lib.STEP_INCONSISTENT,
                                      text_lib.excerpt(sentence), detail))

  last_state: tuple[int, str, bool] | None = None
  for offset, sentence in text_lib.sentences(chain):
    if _CONDITIONAL_RE.search(sentence):
      continue
    names = _name_positions(question, sentence)
    for at, index in names:
      name, flips = question.people[index]
      after = sentence[at + len(name):at + len(name) + 30]
      said_flip = re.match(rf"\s+(?:also\s+)?{_FLIP}\b", after, re.IGNORECASE)
      said_no = re.match(rf"\s+(?:{_NO_FLIP})\b", after, re.IGNORECASE)
      if said_flip and not flips:
        fail(offset, sentence, f"{name} does not flip the coin in the question")
      elif said_no and flips:
        fail(offset, sentence, f"{name} flips the coin in the question")
    claims = _state_claims(sentence)
    if names and claims and not _FLIPPER_LIST_RE.search(sentence):
      position = max(index for _, index in names)
      heads = claims[-1][1]
      if heads != question.heads_after(position):
        fail(offset, sentence, f"after {question.people[position][0]} the coin is "
                               f"{_state_word(question.heads_after(position))}")
    if claims:
      last_state = (offset, sentence, claims[-1][1])
    if _FLIPPER_LIST_RE.search(sentence):
      named = {question.people[index][0] for _, index in names}
      if named and named != set(question.flippers):
        fail(offset, sentence, "the coin is flipped by "
                               f"{', '.join(question.flippers) or 'no one'}")
    for pattern in _COUNT_RES:
      for match in pattern.finditer(sentence):
        count = text_lib.count_word(match.group(1))
        if count is not None and count != truth_count:
          fail(offset, sentence, f"the coin is flipped {truth_count} times")
    for match in _PARITY_RE.finditer(sentence):
      number = text_lib.count_word(match.group(1))
      if number is not None:
        if (number % 2 == 0) != (match.group(2).lower() == "even"):
          fail(offset, sentence, f"{number} is {'even' if number % 2 == 0 else 'odd'}")
    parity_words = re.findall(r"\b(odd|even)\b", sentence, re.IGNORECASE)
    if parity_words and claims and not names:
      odd = parity_words[-1].lower() == "odd"
      if claims[-1][1] == odd:
        fail(offset, sentence, f"after an {'odd' if odd else 'even'} number of flips the coin "
                               f"is {_state_word(not odd)}")
    for match in _PARITY_OF_FLIPS_RE.finditer(sentence):
      if (truth_count % 2 == 0) != (match.group(1).lower() == "even"):
        fail(offset, sentence, f"the coin is flipped {truth_count} times, an "
                               f"{'even' if truth_count % 2 == 0 else 'odd'} number")
  if last_state is not None:
    offset, sentence, heads = last_state
    final = question.heads_after(len(question.people) - 1)
    if heads != final:
      fail(offset, sentence, f"the coin ends {_state_word(final)}")
    elif answer in ("yes", "no") and heads != (answer == "yes"):
      fail(offset, sentence, f"the chain concludes {_state_word(heads)} but answers "
                             f"{answer!r}")
  return found
