"""Recomputing the arithmetic a chain of thought writes down.

A chain's explicit equations are the one part of a math word problem's
reasoning a program can check exactly, whatever the problem: "900 + 135 =
990" is wrong in any story. `equations(text)` finds them in three forms:

  * GSM8K's calculator annotations, `<<48/2=24>>`;
  * written equations, `a op b ... = c`, with + - * / x × ÷, parentheses,
    "$", thousands commas and "%" (20% is 1/5, and "$1,200 - 20%" may also
    mean taking 20% off); chained sloppily too
    ("3 * 4 = 12 + 2 = 14" is read as 3 * 4 = 12 and 12 + 2 = 14);
  * equations in words: "5 times 50, or 250", "250 plus 20 is 270",
    "48 divided by 2 equals 24".

Each is recomputed with exact rationals. A stated result may be rounded as
precisely as the chain writes it: "10 / 3 = 3.33" passes (two decimals),
and so does a whole number within 1 of a value that is not whole ("10 / 3
= 3": rounded, or whole items counted down); "900 + 135 = 990" fails, and
so does "10 / 5 = 3". A bare number
on either side ("x = 5", "1 dozen = 12") is a definition, not arithmetic, and
is skipped, as is anything that does not parse; the check is conservative:
it only reports an equation it can read in full.
"""

from __future__ import annotations

import dataclasses
import fractions
import re
from typing import Iterator

from cot_distill.verifier import text as text_lib

Fraction = fractions.Fraction

_ANNOTATION_RE = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<number>\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?)"
    r"|(?P<op>[-+*/×÷=()−–])|(?P<times>[xX])(?=\s*[\d($]))")
_RUN_START_RE = re.compile(r"(?<![\w.,$/:])(?=-?\$?\d|\()")
# "x + (5 * 8) = 100": a run after an operator belongs to an expression with
# unknowns, which is algebra, not arithmetic to recompute.
_AFTER_OPERATOR_RE = re.compile(r"[-+*/×÷^]\s*$")
# "$1,200 - 20% = $960": adding or taking off a percentage of the amount.
_PERCENT_CHANGE_RE = re.compile(r"^(\$?[\d,.]+)\s*([-+])\s*(\d+(?:\.\d+)?)%$")
_OPERATOR_WORDS = (
    (r"multiplied\s+by", "*"), (r"divided\s+by", "/"), (r"times", "*"),
    (r"plus", "+"), (r"minus", "-"))
_WORD_OP_RE = re.compile(
    r"(?<=\d)(%?)\s+(" + "|".join(w for w, _ in _OPERATOR_WORDS) + r")\s+(?=\$?\d)",
    re.IGNORECASE)
# Words that state a result right after an expression ("..., or 250").
_RESULT_WORD_RE = re.compile(
    r"(?<=\d)(%?)\s*,?\s+(?:which\s+)?(?:is\s+equal\s+to|equals|is|gives(?:\s+us)?|"
    r"makes|or|comes\s+to|=)\s+(?=\$?\d)", re.IGNORECASE)
_SYMBOLS = {"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"}


@dataclasses.dataclass(frozen=True)
class Equation:
  """One equation found in a chain.

  Attributes:
    text: the equation as written (one line).
    left: the expression recomputed.
    stated: what the chain says it equals, as written.
    value: the exact value of `left`.
    correct: whether `stated` is `value` (to the chain's own rounding).
  """

  text: str
  left: str
  stated: str
  value: Fraction
  correct: bool


class _Parser:
  """Recursive descent over (kind, token) pairs: + - binary, * / binary, unary -, ()."""

  def __init__(self, tokens: list[tuple[str, str]]):
    self.tokens = tokens
    self.at = 0

  def parse(self) -> Fraction | None:
    value = self._sum()
    return value if self.at == len(self.tokens) else None

  def _peek(self) -> str | None:
    return self.tokens[self.at][1] if self.at < len(self.tokens) else None

  def _sum(self) -> Fraction | None:
    value = self._product()
    while value is not None and self._peek() in ("+", "-"):
      op = self.tokens[self.at][1]
      self.at += 1
      right = self._product()
      if right is None:
        return None
      value = value + right if op == "+" else value - right
    return value

  def _product(self) -> Fraction | None:
    value = self._unary()
    while value is not None and self._peek() in ("*", "/"):
      op = self.tokens[self.at][1]
      self.at += 1
      right = self._unary()
      if right is None or (op == "/" and right == 0):
        return None
      value = value * right if op == "*" else value / right
    return value

  def _unary(self) -> Fraction | None:
    if self._peek() == "-":
      self.at += 1
      value = self._unary()
      return None if value is None else -value
    if self._peek() == "(":
      self.at += 1
      value = self._sum()
      if self._peek() != ")":
        return None
      self.at += 1
      return value
    if self.at < len(self.tokens) and self.tokens[self.at][0] == "number":
      value = text_lib.parse_number(self.tokens[self.at][1])
      self.at += 1
      return value
    return None


def _tokens(expression: str) -> list[tuple[str, str]] | None:
  tokens, at = [], 0
  expression = expression.strip()
  while at < len(expression):
    match = _TOKEN_RE.match(expression, at)
    if not match or match.end() == at:
      return None
    kind = match.lastgroup
    token = match.group(kind)
    if kind != "number":
      kind, token = "op", _SYMBOLS.get(token, token)
    tokens.append((kind, token))
    at = match.end()
  return tokens


def evaluate(expression: str) -> Fraction | None:
  """The exact value of an arithmetic expression, None if it does not parse."""
  tokens = _tokens(expression)
  if not tokens:
    return None
  return _Parser(tokens).parse()


def _has_operator(expression: str) -> bool:
  tokens = _tokens(expression) or []
  return any(kind == "op" and token in "+-*/" for kind, token in tokens)


def _is_number(expression: str) -> bool:
  tokens = _tokens(expression)
  return bool(tokens) and len(tokens) == 1 and tokens[0][0] == "number"


def matches_stated(value: Fraction, stated: str) -> bool:
  """Whether `stated` (a number as written) is `value` to its own precision."""
  written = text_lib.parse_number(stated)
  if written is None:
    return False
  if written == value:
    return True
  places = text_lib.decimals(stated)
  if places:
    return abs(value - written) <= Fraction(1, 2 * 10**places) + Fraction(1, 10**9)
  # A whole number for a value that is not whole: rounded or counted down.
  return value.denominator != 1 and abs(value - written) < 1


def _runs(text: str) -> Iterator[tuple[int, str]]:
  """Maximal stretches of numbers, operators, parentheses and '='."""
  end = 0
  for start_match in _RUN_START_RE.finditer(text):
    start = start_match.start()
    if start < end:
      continue
    at, last_good = start, start
    while True:
      match = _TOKEN_RE.match(text, at)
      if not match or match.end() == at:
        break
      at = match.end()
      last_good = at
    end = max(last_good, start + 1)
    run = text[start:last_good]
    if "=" in run and not _AFTER_OPERATOR_RE.search(text[:start]):
      yield start, run


def _check_run(run: str) -> Iterator[Equation]:
  """The equations of one run, `a op b = c = d ...` read left to right."""
  parts = [part.strip() for part in run.split("=")]
  for left, right in zip(parts, parts[1:]):
    left = left.strip(" (") if left.count("(") > left.count(")") else left
    right_head = right
    if not left or not right or not _has_operator(left):
      continue
    value = evaluate(left)
    if value is None:
      continue
    if _is_number(right):
      correct = matches_stated(value, right)
      change = _PERCENT_CHANGE_RE.match(left)
      if not correct and change:
        base = text_lib.parse_number(change.group(1))
        rate = Fraction(change.group(3)) / 100
        if base is not None:
          correct = matches_stated(base * (1 + rate if change.group(2) == "+" else 1 - rate),
                                   right)
      stated = right
    else:
      right_value = evaluate(right)
      head = _tokens(right) or []
      # "12 + 2" after "3 * 4 =": a chain continuing from the result.
      continues = bool(head) and head[0][0] == "number" and matches_stated(value, head[0][1])
      if right_value is None and not continues:
        continue
      correct = continues or right_value == value
      stated = right_head
    yield Equation(text=text_lib.excerpt(f"{left} = {right}"), left=left, stated=stated,
                   value=value, correct=correct)


def _words_to_symbols(text: str) -> str:
  """ "5 times 50, or 250" -> "5 * 50 = 250" (only between numbers)."""
  def op(match: re.Match) -> str:
    word = " ".join(match.group(2).lower().split())
    for pattern, symbol in _OPERATOR_WORDS:
      if re.fullmatch(pattern, word):
        return f"{match.group(1)} {symbol} "
    return match.group(0)

  converted = _WORD_OP_RE.sub(op, text)
  if converted == text and "=" not in text:
    return text
  # A result word only counts right after an expression with an operator.
  pieces, last = [], 0
  for match in _RESULT_WORD_RE.finditer(converted):
    before = converted[last:match.start()]
    tail = re.search(r"[\d$().,%\s+\-*/×÷]*$", before).group(0)
    pieces.append(before)
    pieces.append(f"{match.group(1)} = " if _has_operator(tail.strip(" ,")) else match.group(0))
    last = match.end()
  pieces.append(converted[last:])
  return "".join(pieces)


def equations(text: str) -> list[Equation]:
  """Every equation in `text` that can be read in full, in order."""
  found: list[Equation] = []
  for match in _ANNOTATION_RE.finditer(text):
    found += _check_run(f"{match.group(1)}={match.group(2)}")
  plain = _ANNOTATION_RE.sub(" ", text)
  for line in plain.splitlines():
    for _, run in _runs(_words_to_symbols(line)):
      found += _check_run(run)
  return found


def expression_values(text: str) -> list[Fraction]:
  """Values of bare expressions with an operator ("250 + 20 marbles" -> 270)."""
  values = []
  plain = _words_to_symbols(_ANNOTATION_RE.sub(" ", text))
  for match in re.finditer(r"[\d$(][\d$.,%\s+\-*/×÷()]*[\d)%]", plain):
    expression = match.group(0)
    if _has_operator(expression):
      value = evaluate(expression)
      if value is not None:
        values.append(value)
  return values


def first_error(text: str) -> Equation | None:
  """The first equation in `text` whose stated result is wrong."""
  return next((e for e in equations(text) if not e.correct), None)


def derives(text: str, answer: Fraction) -> bool:
  """Whether the chain reaches `answer`: writes it, or an expression equal to it."""
  return (any(value == answer for value in text_lib.numbers(text))
          or any(value == answer for value in expression_values(text)))
