"""A rule-based stand-in for a teacher LLM on the symbolic tasks.

`cot-distill teacher serve` answers prompts with these functions so the whole
pipeline (client, filter, records, training) can run offline. It is NOT a
language model: it finds the last coin-flip or last-letter question in the
prompt, solves it exactly, and writes a chain of thought in the exemplar
style. With probability `error_rate` per sample it makes a mistake that always
changes the final answer (a wrong intermediate step that propagates, or a
wrong final answer after correct steps), so the annotation filter has real
work to do and a test can recompute which CoTs must survive. With
probability `step_error_rate` it makes the mistake a real small teacher
makes under the paper's hint: a wrong step, and still the right final answer
(a misnamed flipper, a wrong parity word, a count off by two, a wrong
intermediate state; a wrong letter for one word, or a wrong concatenation),
which only the rationale verifier (`cot_distill.verifier`) can catch.

Everything is a pure function of (question, sample randomness), so the same
request to the same server seed gives the same text.
"""

from __future__ import annotations

import dataclasses
import random
import re

_COIN_RE = re.compile(
    r"A coin is heads up\.(?P<steps>.*?)Is the coin still heads up\?", re.DOTALL)
_COIN_STEP_RE = re.compile(r"\s*(?P<name>[^.]+?) (?P<verb>does not flip|flips) the coin\.")
_LETTERS_RE = re.compile(
    r"Take the last letters? of (?:each|the) words? in \"(?P<words>[^\"]+)\" "
    r"and concatenate them\.")
# The stage-2 prompt of zero-shot CoT ends with an answer trigger such as
# "Therefore, the answer (Yes or No) is".
_ANSWER_TRIGGER_RE = re.compile(r"Therefore, (?:among [A-Z] through [A-Z], )?"
                                r"the answer(?: \([^)]*\))? is\s*$")
_STATED_ANSWER_RE = re.compile(r"The answer is (\w+)\.")
# The gold answer a hinted prompt gives after the question ("Answer: 18").
_HINT_RE = re.compile(r"^Answer: (?P<answer>.+?)\s*$", re.MULTILINE)

# Kinds of injected mistake; each changes the final answer.
WRONG_STEP = "wrong_step"
WRONG_ANSWER = "wrong_answer"
# A wrong step with the right final answer (rate `step_error_rate`).
RIGHT_ANSWER_WRONG_STEP = "right_answer_wrong_step"


@dataclasses.dataclass(frozen=True)
class Solution:
  """The synthetic teacher's reply to one sample.

  Attributes:
    text: the chain of thought ending in "The answer is X." (or a bare answer
      for a zero-shot answer-extraction prompt).
    answer: the answer the text states.
    correct_answer: the true answer of the question (None if no question
      was recognised).
    error: None, WRONG_STEP, WRONG_ANSWER or RIGHT_ANSWER_WRONG_STEP.
  """

  text: str
  answer: str | None
  correct_answer: str | None
  error: str | None


@dataclasses.dataclass(frozen=True)
class CoinFlipQuestion:
  flippers: tuple[str, ...]
  people: tuple[tuple[str, bool], ...]  # (name, flips) in order.

  @property
  def answer(self) -> str:
    return "yes" if len(self.flippers) % 2 == 0 else "no"


@dataclasses.dataclass(frozen=True)
class LastLettersQuestion:
  words: tuple[str, ...]

  @property
  def answer(self) -> str:
    return "".join(word[-1] for word in self.words).lower()


def parse_coin_flip(text: str) -> CoinFlipQuestion | None:
  """The LAST coin-flip question in `text` (the query comes last in a prompt)."""
  match = None
  for match in _COIN_RE.finditer(text):
    pass
  if match is None:
    return None
  people = tuple((step.group("name").strip(), step.group("verb") == "flips")
                 for step in _COIN_STEP_RE.finditer(match.group("steps")))
  if not people:
    return None
  return CoinFlipQuestion(
      flippers=tuple(name for name, flips in people if flips), people=people)


def parse_last_letters(text: str) -> LastLettersQuestion | None:
  """The LAST last-letter-concatenation question in `text`."""
  match = None
  for match in _LETTERS_RE.finditer(text):
    pass
  if match is None:
    return None
  words = tuple(match.group("words").split())
  return LastLettersQuestion(words) if words else None


def _join_names(names: list[str]) -> str:
  if not names:
    return "no one"
  if len(names) == 1:
    return names[0]
  return ", ".join(names[:-1]) + " and " + names[-1]


def _other(answer: str) -> str:
  return "no" if answer == "yes" else "yes"


def _coin_flip_text(question: CoinFlipQuestion, rng: random.Random,
                    variant: int, error: str | None) -> tuple[str, str]:
  """(chain of thought, stated answer) for a coin-flip question."""
  people = list(question.people)
  if error == WRONG_STEP:
    # Misread one person's action; the parity (and so the answer) flips.
    position = rng.randrange(len(people))
    name, flips = people[position]
    people[position] = (name, not flips)
  flippers = [name for name, flips in people if flips]
  count = len(flippers)
  even = count % 2 == 0
  answer = "yes" if even else "no"
  # What the chain writes. A right-answer-wrong-step error corrupts one of
  # these claims and nothing else, so the final answer stays right.
  shown_flippers, shown_count, shown_even, wrong_state_at = flippers, count, even, None
  if error == RIGHT_ANSWER_WRONG_STEP:
    if variant == 1:
      wrong_state_at = rng.randrange(len(people))
    else:
      others = [name for name, flips in people if not flips]
      kind = rng.choice(("parity", "count", "names") if flippers and others
                        else ("parity", "count"))
      if kind == "parity":
        shown_even = not even
      elif kind == "count":
        shown_count = count + 2
      else:
        shown_flippers = list(flippers)
        shown_flippers[rng.randrange(len(flippers))] = rng.choice(others)
  parity = "an even" if even else "an odd"
  shown_parity = "an even" if shown_even else "an odd"
  if variant == 0:
    text = (f"The coin was flipped by {_join_names(shown_flippers)}. So the coin was "
            f"flipped {shown_count} times, which is {shown_parity} number. The coin started "
            f"heads up, so after {parity} number of flips, it will "
            f"{'still be heads up' if even else 'be tails up'}.")
  elif variant == 1:
    heads = True
    steps = ["The coin starts heads up."]
    for position, (name, flips) in enumerate(people):
      heads = heads != flips
      shown = heads if position != wrong_state_at else not heads
      if flips:
        steps.append(f"{name} flips it, so it is now {'heads' if shown else 'tails'} up.")
      else:
        steps.append(f"{name} does not flip it, so it stays "
                     f"{'heads' if shown else 'tails'} up.")
    steps.append(f"In the end the coin is {'heads' if heads else 'tails'} up.")
    text = " ".join(steps)
  else:
    text = (f"{shown_count} {'person' if shown_count == 1 else 'people'} flipped the coin"
            f"{': ' + _join_names(shown_flippers) if shown_flippers else ''}. "
            f"{shown_count} is {'even' if shown_even else 'odd'}, and an "
            f"{'even' if even else 'odd'} "
            f"number of flips leaves a coin that started heads up "
            f"{'heads up' if even else 'tails up'}.")
  if error == WRONG_ANSWER:
    answer = _other(answer)
  return f"{text} The answer is {answer}.", answer


def _wrong_letter(word: str, rng: random.Random) -> str:
  """A letter that is not the word's last letter (a plausible misreading)."""
  last = word[-1].lower()
  candidates = [c.lower() for c in word[:-1] if c.lower() != last and c.isalpha()]
  if not candidates:
    candidates = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != last]
  return rng.choice(candidates)


def _letters_text(question: LastLettersQuestion, rng: random.Random,
                  variant: int, error: str | None) -> tuple[str, str]:
  words = list(question.words)
  letters = [word[-1].lower() for word in words]
  if error == WRONG_STEP:
    position = rng.randrange(len(words))
    letters[position] = _wrong_letter(words[position], rng)
  joined = "".join(letters)
  # What the chain writes (see `_coin_flip_text`).
  shown_letters, shown_joined = list(letters), joined
  if error == RIGHT_ANSWER_WRONG_STEP:
    if rng.random() < 0.5:
      position = rng.randrange(len(words))
      shown_letters[position] = _wrong_letter(words[position], rng)
    else:
      shown_joined = _corrupt_letters(joined, rng)
  if variant == 0:
    parts = [f"The last letter of \"{w}\" is \"{l}\"." for w, l in zip(words, shown_letters)]
    text = " ".join(parts) + f" Concatenating them is \"{shown_joined}\"."
  elif variant == 1:
    quoted_words = ", ".join(f"\"{w}\"" for w in words)
    quoted_letters = ", ".join(f"\"{l}\"" for l in shown_letters)
    text = (f"The words are {quoted_words}. Their last letters are {quoted_letters}. "
            f"Putting them together gives \"{shown_joined}\".")
  else:
    parts = [f"{w} ends with \"{l}\"." for w, l in zip(words, shown_letters)]
    text = " ".join(parts) + f" So the letters in order form \"{shown_joined}\"."
  answer = joined
  if error == WRONG_ANSWER:
    answer = _corrupt_letters(joined, rng)
  return f"{text} The answer is {answer}.", answer


def _corrupt_letters(letters: str, rng: random.Random) -> str:
  """A different letter string of the same length."""
  position = rng.randrange(len(letters))
  replacement = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz"
                            if c != letters[position]])
  return letters[:position] + replacement + letters[position + 1:]


class WorkedSolutions:
  """Questions the local teacher answers with a dataset's own worked solution.

  GSM8K (and other benchmarks with `gold_rationale`) ship human-written
  solutions; replaying them makes the local teacher a sound stand-in for
  arithmetic pipelines run offline (CI runs the README's GSM8K commands
  this way). Chains keep the dataset's wording, calculator annotations
  included, and end with "The answer is X.".
  """

  def __init__(self, examples):
    self._by_question: dict[str, tuple[str, str]] = {}
    for example in examples:
      if example.gold_rationale:
        self._by_question[" ".join(example.question.split())] = (
            _one_line(example.gold_rationale), example.answer)

  def __len__(self) -> int:
    return len(self._by_question)

  def lookup(self, prompt_text: str) -> tuple[str, str] | None:
    """(rationale, answer) of the known question that occurs last in the prompt."""
    text = " ".join(prompt_text.split())
    best, best_at = None, -1
    for question, solution in self._by_question.items():
      at = text.rfind(question)
      if at > best_at:
        best, best_at = solution, at
    return best


def _one_line(rationale: str) -> str:
  """A multi-line worked solution as one line of sentences.

  Hinted templates stop at the end of the line, so a teacher writes its
  chain as sentences on one line; GSM8K's lines carry no final period.
  """
  lines = [" ".join(line.split()) for line in rationale.splitlines() if line.strip()]
  return " ".join(line if line[-1] in ".!?" else line + "." for line in lines)


def solve(prompt_text: str, rng: random.Random, *, error_rate: float,
          vary_wording: bool, step_error_rate: float = 0.0,
          worked: WorkedSolutions | None = None) -> Solution:
  """The synthetic teacher's reply to a prompt (all turns joined for chat).

  Args:
    prompt_text: the whole prompt; the last recognised question is answered.
    rng: per-sample randomness (error choice, wording, which step goes wrong).
    error_rate: probability that this sample contains a mistake that
      changes its answer.
    step_error_rate: probability that a sample without such a mistake has
      a wrong step and the right answer (drawn only when positive, so
      replies at rate 0 are the same as before the option existed).
    worked: questions to answer with their dataset's worked solution (for
      questions that are not coin flips or last letters).
    vary_wording: pick one of several phrasings (sampling at temperature > 0)
      instead of always the exemplar phrasing (greedy decoding).
  """
  error = None
  if rng.random() < error_rate:
    error = rng.choice((WRONG_STEP, WRONG_ANSWER))
  elif step_error_rate > 0 and rng.random() < step_error_rate:
    error = RIGHT_ANSWER_WRONG_STEP
  variant = rng.randrange(3) if vary_wording else 0
  stripped = prompt_text.rstrip()
  coin = parse_coin_flip(prompt_text)
  letters = parse_last_letters(prompt_text)
  # Pick whichever question occurs last in the prompt.
  coin_at = prompt_text.rfind("A coin is heads up.") if coin else -1
  letters_at = prompt_text.rfind("Take the last letter") if letters else -1
  if coin is None and letters is None:
    known = worked.lookup(prompt_text) if worked else None
    if known is not None:
      rationale, answer = known
      return Solution(f" {rationale} The answer is {answer}.", answer, answer, None)
    return _restate_hint(prompt_text)
  if coin_at > letters_at:
    correct = coin.answer
    if _ANSWER_TRIGGER_RE.search(stripped):
      return _stage_two_answer(stripped, correct, error, _other)
    text, answer = _coin_flip_text(coin, rng, variant, error)
  else:
    correct = letters.answer
    if _ANSWER_TRIGGER_RE.search(stripped):
      return _stage_two_answer(stripped, correct, error,
                               lambda a: _corrupt_letters(a, rng))
    text, answer = _letters_text(letters, rng, variant, error)
  return Solution(" " + text, answer, correct, error)


def _restate_hint(prompt_text: str) -> Solution:
  """Any other question: restate the hinted gold answer, if the prompt has one.

  This is how a weak teacher behaves on questions it cannot solve (the
  paper's hint makes the final answer right whatever the steps), and it lets
  every pipeline over any benchmark run offline. The chain has no real step,
  so a reader of the records sees at once what kind of teacher wrote it.
  """
  hints = list(_HINT_RE.finditer(prompt_text))
  if not hints:
    return Solution("I am not able to answer this question.", None, None, None)
  answer = hints[-1].group("answer")
  return Solution(f" Working from the given answer, the result is {answer}. "
                  f"The answer is {answer}.", answer, answer, None)


def _stage_two_answer(prompt_text: str, correct: str, error: str | None,
                      corrupt) -> Solution:
  """Zero-shot CoT stage 2: repeat the answer the chain of thought reached."""
  stated = None
  for match in _STATED_ANSWER_RE.finditer(prompt_text):
    stated = match.group(1).lower()
  answer = stated if stated is not None else correct
  if error in (WRONG_STEP, WRONG_ANSWER) and stated is None:
    answer = corrupt(answer)
  return Solution(f" {answer}.", answer, correct, error if answer != correct else None)
