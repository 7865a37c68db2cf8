"""The external calculator: recompute the arithmetic in a generated CoT.

Magister et al. (2023) report student accuracy with and without an external
calculator, because small students reason in the right steps but get the
arithmetic wrong. We apply it after decoding: every written equation
"a op b = c" (also chains "3 * 4 + 2 = 14" and "2 + 3 = 5 + 1 = 6") is
recomputed and c is replaced by the true value. In "A = B = c" with B an
expression ("35 x 12 + 3 x 20 = 420 + 60 = 480") only B = c is checked.

A corrected value is carried forward, as a model fed the right result would
have continued with it: a later equation operand, or the number right after
the final answer marker ("The answer is c"), that repeats the old wrong c is
replaced by the corrected value. The carry stops once a correct equation
produces c on its own. Numbers in the prose are left alone, so "16 students"
in a restated question is not rewritten because some step wrongly computed
16, and a wrong result that equals a number written earlier
("1,200 + 1 = 1,200") is corrected but not carried into later operands: a
later 1,200 may well be the earlier quantity (the final answer still follows
it, as it restates a result far more often than an input).

Arithmetic: numbers (with $ / EUR / GBP signs, comma thousands separators,
decimals, "%" meaning /100, "20% of 50"), + - and the Unicode minus, * x X
and the multiplication sign, / and the division sign, unary minus,
parentheses. A lone percentage added or subtracted is a share of what
precedes it, as on a pocket calculator: "$1,200 - 20% = $960". Values are
exact fractions. A result written with d decimals counts as right when it is
the true value rounded to d decimals ("10 / 3 = 3.33"). A result written as a
percentage ("1/4 = 25%") is neither checked nor rewritten: whether 25 or 0.25
was meant is ambiguous. An equation is skipped, never guessed at, when its
left side runs into prose ("sticks/2 x 4 = 1,200") or does not parse
("$50(10)-$320").

Safety: the evaluator is our own tokenizer and recursive-descent parser over
that grammar; nothing is ever passed to eval/exec, and there is no power
operator. Number literals longer than MAX_NUMBER_DIGITS digits, expressions
longer than MAX_EXPRESSION_TOKENS tokens, nesting deeper than MAX_DEPTH and
intermediate values longer than MAX_VALUE_DIGITS digits are refused, and at
most MAX_EQUATIONS equations of a text of at most MAX_TEXT_CHARS characters
are examined, so hostile or runaway text ("__import__('os')", "9**9**9**9",
a 10,000-digit number) is treated as prose and returns in linear time.
"""

from __future__ import annotations

import dataclasses
import fractions
import re
from typing import Sequence

from cot_distill import answers

MAX_NUMBER_DIGITS = 20
MAX_EXPRESSION_TOKENS = 64
MAX_DEPTH = 16
MAX_VALUE_DIGITS = 60
MAX_EQUATIONS = 200
MAX_TEXT_CHARS = 100_000  # Longer texts are returned unchanged.
# Decimals shown for a corrected value that is not a short exact decimal.
DEFAULT_DECIMALS = 2

_TOKEN_RE = re.compile(
    r"(?P<number>(?:(?P<currency>[$\u20ac\u00a3])\s?)?(?P<digits>\d+(?:,\d{3})*(?:\.\d+)?)"
    r"(?P<percent>\s?%)?)"
    r"|(?P<times>(?<=[\d\s)%])[xX](?=[\s\d($]))"
    r"|(?P<op>[-+*/\u2212\u00d7\u00f7])"
    r"|(?P<paren>[()])"
    r"|(?P<equals>=)"
    r"|(?P<newline>\n)"
    r"|(?P<word>[^\s\d$\u20ac\u00a3()=+*/\u2212\u00d7\u00f7-]+)"
    r"|(?P<space>\s)")
_KINDS = ("number", "times", "op", "paren", "equals", "newline", "word", "space")
_OPERATOR_NAMES = {"+": "+", "-": "-", "\u2212": "-", "*": "*", "x": "*",
                   "X": "*", "\u00d7": "*", "/": "/", "\u00f7": "/"}


class CalculatorError(ValueError):
  """The text is not an expression the calculator evaluates."""


class RefusedError(CalculatorError):
  """A well-formed expression the calculator will not evaluate (division by
  zero, values too large): no shorter piece of it is tried instead."""


@dataclasses.dataclass
class Token:
  kind: str  # number, op, paren, equals, newline, word
  text: str
  start: int
  end: int
  value: fractions.Fraction | None = None  # numbers: value, "%" applied
  percent: bool = False
  decimals: int = 0
  edited: bool = False


@dataclasses.dataclass(frozen=True)
class Correction:
  """One change to the text.

  kind: "result" (an equation's wrong result replaced), "carried" (a later
  operand that repeated a corrected result), "answer" (the final answer
  repeated a corrected result). `expression` is the left-hand side as
  evaluated, for "result"; empty otherwise.
  """

  kind: str
  expression: str
  old: str
  new: str
  start: int


@dataclasses.dataclass(frozen=True)
class CalculatorResult:
  text: str
  corrections: tuple[Correction, ...]


def tokenize(text: str) -> list[Token]:
  """Splits text into arithmetic tokens and opaque words (linear time)."""
  tokens: list[Token] = []
  for match in _TOKEN_RE.finditer(text):
    kind = next(name for name in _KINDS if match.group(name) is not None)
    if kind == "space":
      continue
    token = Token(kind, match.group(0), match.start(), match.end())
    if kind == "number":
      _read_number(token, match)
    elif kind == "times":
      token.kind = "op"
    elif (kind == "word" and match.group(0).lower() == "of" and tokens
          and tokens[-1].kind == "number" and tokens[-1].percent):
      token.kind = "op"  # "20% of 50" is 20% * 50.
      token.text = "*"
    tokens.append(token)
  return tokens


def _read_number(token: Token, match: re.Match) -> None:
  digits = match.group("digits")
  bare = digits.replace(",", "")
  if (len(bare.replace(".", "")) > MAX_NUMBER_DIGITS
      or ("," in digits and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", digits))):
    token.kind = "word"  # Too long, or "1,2,3": not a number we evaluate.
    return
  token.value = fractions.Fraction(bare)
  token.decimals = len(bare.partition(".")[2])
  token.percent = match.group("percent") is not None


class _Parser:
  """expr := term (("+"|"-") term)* ; term := factor (("*"|"/") factor)* ;
  factor := ("-"|"+") factor | number | "(" expr ")"."""

  def __init__(self, tokens: Sequence[Token]):
    self.tokens = tokens
    self.position = 0
    self.operators = 0

  def parse(self) -> fractions.Fraction:
    value = self.expression(0)
    if self.position != len(self.tokens):
      raise CalculatorError(f"unexpected {self.tokens[self.position].text!r}")
    return value

  def _peek(self) -> str | None:
    if self.position < len(self.tokens):
      token = self.tokens[self.position]
      return _OPERATOR_NAMES.get(token.text, token.text) if token.kind != "number" else None
    return None

  def expression(self, depth: int) -> fractions.Fraction:
    value = self.term(depth)
    while self._peek() in ("+", "-"):
      operator = self._peek()
      self.position += 1
      self.operators += 1
      bare_percent = self._at_bare_percent()
      right = self.term(depth)
      if bare_percent:  # "$1,200 - 20%" is 1,200 less 20% of it.
        right = _bounded(value * right)
      value = _bounded(value + right if operator == "+" else value - right)
    return value

  def _at_bare_percent(self) -> bool:
    """Whether the next term is a lone percentage ("- 20%", not "- 20% of 5")."""
    if self.position >= len(self.tokens):
      return False
    token = self.tokens[self.position]
    following = self.tokens[self.position + 1:self.position + 2]
    return (token.kind == "number" and token.percent and not (
        following and _OPERATOR_NAMES.get(following[0].text) in ("*", "/")))

  def term(self, depth: int) -> fractions.Fraction:
    value = self.factor(depth)
    while self._peek() in ("*", "/"):
      operator = self._peek()
      self.position += 1
      self.operators += 1
      right = self.factor(depth)
      if operator == "/" and right == 0:
        raise RefusedError("division by zero")
      value = _bounded(value * right if operator == "*" else value / right)
    return value

  def factor(self, depth: int) -> fractions.Fraction:
    if depth > MAX_DEPTH:
      raise RefusedError("nesting too deep")
    if self.position >= len(self.tokens):
      raise CalculatorError("expression ends early")
    token = self.tokens[self.position]
    self.position += 1
    if token.kind == "number":
      return token.value / 100 if token.percent else token.value
    symbol = _OPERATOR_NAMES.get(token.text, token.text)
    if symbol in ("-", "+"):
      value = self.factor(depth + 1)
      return -value if symbol == "-" else value
    if symbol == "(":
      value = self.expression(depth + 1)
      if self._peek() != ")":
        raise CalculatorError("unclosed parenthesis")
      self.position += 1
      return value
    raise CalculatorError(f"unexpected {token.text!r}")


def _bounded(value: fractions.Fraction) -> fractions.Fraction:
  if max(len(str(abs(value.numerator))), len(str(value.denominator))) > MAX_VALUE_DIGITS:
    raise RefusedError("value too large")
  return value


def evaluate_expression(text: str) -> fractions.Fraction:
  """Evaluates an arithmetic expression exactly; CalculatorError if it is not
  one (words, unknown operators, "**", too long, too deep, too large)."""
  tokens = tokenize(text)
  if not tokens or len(tokens) > MAX_EXPRESSION_TOKENS:
    raise CalculatorError("empty or too long expression")
  if any(t.kind not in ("number", "op", "paren") for t in tokens):
    raise CalculatorError(f"not arithmetic: {text[:40]!r}")
  return _Parser(tokens).parse()


# ----------------------------------------------------------------------------
# Equations in text.


def _left_side(tokens: list[Token], equals: int, text: str
               ) -> tuple[list[Token], fractions.Fraction] | None:
  """The arithmetic run that ends at `equals` and its value, or None.

  The run is every number, operator and parenthesis back to the nearest word,
  line break or other "=". Unmatched leading parentheses ("(see above) 4 - 2",
  "(3 + 4 = 7)") are dropped; otherwise the whole run must parse, with at
  least one binary operator. A run that starts with a binary operator
  continues into prose ("sticks/2 x 4 = 1,200"), and one that does not parse
  ("$50(10)-$320"), is not an equation we can check: it is skipped rather
  than guessed at by evaluating a piece of it.
  """
  start = equals
  while (start > 0 and equals - start < MAX_EXPRESSION_TOKENS
         and tokens[start - 1].kind in ("number", "op", "paren")):
    start -= 1
  run = tokens[start:equals]
  while run and run[0].text == ")":
    run = run[1:]
  while run and run[0].text == "(" and _open_parentheses(run) > 0:
    run = run[1:]
  if not run or (start > 0 and equals - start >= MAX_EXPRESSION_TOKENS):
    return None
  first = run[0]
  if first.kind == "op" and (
      first.text not in ("-", "\u2212")
      or (first.start > 0 and not text[first.start - 1].isspace())):
    return None
  parser = _Parser(run)
  try:
    value = parser.parse()
  except CalculatorError:
    return None
  return (run, value) if parser.operators else None


def _open_parentheses(run: list[Token]) -> int:
  return sum(1 if t.text == "(" else -1 if t.text == ")" else 0 for t in run)


def _is_negated(operands: list[Token], position: int) -> bool:
  """Whether operands[position] carries a unary minus written against it
  ("-2 + 10", "5 * (-2)"), so its written value is negative."""
  if position == 0 or operands[position - 1].text not in ("-", "\u2212"):
    return False
  minus = operands[position - 1]
  if minus.end != operands[position].start:
    return False
  return position == 1 or operands[position - 2].kind == "op" or (
      operands[position - 2].text == "(")


def _right_side(tokens: list[Token], equals: int) -> tuple[Token | None, Token] | None:
  """(sign token or None, number token) written right after "="."""
  following = tokens[equals + 1:equals + 4]
  sign = None
  if (len(following) >= 2 and following[0].text in ("-", "\u2212")
      and following[1].kind == "number" and following[0].end == following[1].start):
    sign, following = following[0], following[1:]
  if not following or following[0].kind != "number":
    return None
  if len(following) > 1 and following[1].kind == "op":
    return None  # "= 420 + 60 = 480": the right side is an expression.
  return sign, following[0]


def _rounds_to(value: fractions.Fraction, written: fractions.Fraction,
               decimals: int) -> bool:
  """Whether `written` (with `decimals` decimals) is `value`, rounded."""
  if value == written:
    return True
  return decimals > 0 and abs(value - written) <= fractions.Fraction(1, 2 * 10 ** decimals)


def format_value(value: fractions.Fraction, decimals: int = 0,
                 thousands: bool = False) -> str:
  """An integer without ".0", a short exact decimal as is ("0.125"), anything
  else rounded to max(DEFAULT_DECIMALS, decimals) places ("3.33")."""
  sign = "-" if value < 0 else ""
  value = abs(value)
  places = 0
  while (value * 10 ** places).denominator != 1 and places < 6:
    places += 1
  if (value * 10 ** places).denominator != 1:
    places = max(DEFAULT_DECIMALS, decimals)
  scaled = round(value * 10 ** places)
  whole, fraction = divmod(scaled, 10 ** places)
  whole_text = f"{whole:,}" if thousands else str(whole)
  fraction_text = str(fraction).zfill(places).rstrip("0") if places else ""
  if scaled == 0:
    sign = ""
  return sign + whole_text + ("." + fraction_text if fraction_text else "")


def _rewrite(token: Token, value: fractions.Fraction, sign: Token | None,
             text: str) -> tuple[int, int, str]:
  """Span and new text writing `value` in `token`'s style ($, commas, %)."""
  digits = re.search(r"\d+(?:,\d{3})*(?:\.\d+)?", text[token.start:token.end])
  prefix = text[token.start:token.start + digits.start()]
  suffix = text[token.start + digits.end():token.end]
  magnitude = format_value(abs(value), token.decimals, "," in digits.group(0))
  start = sign.start if sign is not None else token.start
  return start, token.end, ("-" if value < 0 else "") + prefix + magnitude + suffix


def _values_before(tokens: list[Token], stop: Token) -> set[fractions.Fraction]:
  """Signed values of the numbers written before `stop` (and their negations:
  the sign is often a separate token)."""
  values = set()
  for token in tokens:
    if token is stop:
      break
    if token.kind == "number" and not token.edited:
      values.update((token.value, -token.value))
  return values


def correct_arithmetic(text: str) -> CalculatorResult:
  """Recomputes every equation in `text`; see the module docstring."""
  if len(text) > MAX_TEXT_CHARS:
    return CalculatorResult(text, ())
  tokens = tokenize(text)
  # Wrong written result -> true value: all of them (for the final answer),
  # and those safe to carry into later operands.
  results: dict[fractions.Fraction, fractions.Fraction] = {}
  carried: dict[fractions.Fraction, fractions.Fraction] = {}
  edits: list[tuple[int, int, str]] = []
  corrections: list[Correction] = []

  def replace(token, value, kind, expression="", sign=None):
    start, end, new = _rewrite(token, value, sign, text)
    edits.append((start, end, new))
    corrections.append(Correction(kind, expression, text[start:end], new, start))
    token.edited = True

  equations = [i for i, t in enumerate(tokens) if t.kind == "equals"]
  for equals in equations[:MAX_EQUATIONS]:
    right = _right_side(tokens, equals)
    left = _left_side(tokens, equals, text) if right else None
    if left is None:
      continue
    operands, _ = left
    for position, operand in enumerate(operands):  # Carry corrections.
      if operand.kind != "number" or operand.edited or operand.percent:
        continue
      negated = _is_negated(operands, position)
      written = -operand.value if negated else operand.value
      if written in carried:
        sign = operands[position - 1] if negated else None
        replace(operand, carried[written], "carried", sign=sign)
        operand.value = -carried[written] if negated else carried[written]
    try:
      value = _Parser(operands).parse()
    except CalculatorError:
      continue
    sign, result = right
    written = -result.value if sign is not None else result.value
    if result.percent:  # "1/4 = 25%": 25 or 0.25? Not checked.
      continue
    if _rounds_to(value, written, result.decimals):
      carried.pop(written, None)  # Now a legitimately computed value.
      results.pop(written, None)
      continue
    expression = text[operands[0].start:operands[-1].end]
    replace(result, value, "result", expression, sign)
    result.value = -value if sign is not None else value
    results[written] = value
    if written not in _values_before(tokens, result):
      carried[written] = value

  # The final answer restates a result far more often than an input, so it
  # follows every correction, even of a value also written earlier.
  marker = answers.last_marker(text)
  if marker is not None and results:
    after = [t for t in tokens if t.start >= marker.end() and t.kind == "number"]
    if after and not after[0].edited and after[0].value in results:
      replace(after[0], results[after[0].value], "answer")

  corrected = text
  for start, end, new in sorted(edits, reverse=True):
    corrected = corrected[:start] + new + corrected[end:]
  corrections.sort(key=lambda c: c.start)
  return CalculatorResult(corrected, tuple(corrections))
