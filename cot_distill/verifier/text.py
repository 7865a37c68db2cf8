"""Small text helpers the verifier's checks share: sentences, numbers, words."""

from __future__ import annotations

import fractions
import re

# Sentence ends: a period, "!" or "?" before whitespace, or a line break. A
# period between digits ("2.5") is not an end.
_SENTENCE_RE = re.compile(r"[^.!?\n]+(?:[.!?](?!\d)|\n|$)|[.!?]")

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "once": 1, "twice": 2, "thrice": 3, "no": 0, "none": 0,
}
# A plain number as chains write it: optional sign and $, digits with comma
# thousands groups, optional decimals, optional % (read as a percentage).
NUMBER_PATTERN = r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?"
_NUMBER_RE = re.compile(rf"(?<![\w.,/]){NUMBER_PATTERN}(?![\w/]|\.\d)")


def sentences(text: str) -> list[tuple[int, str]]:
  """(start offset, sentence) for each non-blank sentence of `text`."""
  found = []
  for match in _SENTENCE_RE.finditer(text):
    sentence = match.group(0).strip()
    if sentence and re.search(r"\w", sentence):
      found.append((match.start(), sentence))
  return found


def parse_number(token: str) -> fractions.Fraction | None:
  """A chain's number as an exact rational ("$1,000.50" -> 2001/2, "20%" -> 1/5)."""
  text = token.strip().replace("$", "").replace(",", "")
  percent = text.endswith("%")
  text = text.rstrip("%")
  try:
    value = fractions.Fraction(text)
  except (ValueError, ZeroDivisionError):
    return None
  return value / 100 if percent else value


def decimals(token: str) -> int:
  """Decimal places a number is written with ("3.33" -> 2, "$4" -> 0)."""
  text = token.replace(",", "").rstrip("%")
  return len(text.split(".", 1)[1]) if "." in text else 0


def numbers(text: str) -> list[fractions.Fraction]:
  """Every number written with digits in `text`, in order."""
  values = []
  for match in _NUMBER_RE.finditer(text):
    value = parse_number(match.group(0))
    if value is not None:
      values.append(value)
  return values


def count_word(token: str) -> int | None:
  """A count written with digits or as a small number word ("3", "three", "twice")."""
  token = token.lower()
  if token.isdigit():
    return int(token)
  return NUMBER_WORDS.get(token)


def excerpt(text: str, limit: int = 160) -> str:
  """`text` on one line, cut to `limit` characters (for verdicts and reports)."""
  one_line = " ".join(text.split())
  return one_line if len(one_line) <= limit else one_line[:limit - 3] + "..."
