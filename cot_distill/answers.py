"""Answer extraction and comparison: the ONE judge for filtering and scoring.

The same `judge` decides whether a teacher chain of thought is kept
(annotation filter) and whether a student's output is correct (evaluation), so
the two can never disagree about what "correct" means.

Extraction order, for every answer type (`extract_answer`):

1. **Marker.** Find the LAST case-insensitive answer marker in the text:
   "the answer is X", "answer is: X", "the final answer is X",
   "answer would be X", "Answer: X", and Kojima et al.'s zero-shot-CoT trigger
   "Therefore, the answer (arabic numerals) is X" (any short parenthesised
   note between "answer" and "is"). The last one is the model's final answer
   statement. The type-specific parser reads the text after it and takes the
   FIRST answer there (the answer comes right after the marker; later text
   is commentary). Rule names start with "marker_" (e.g. "marker_number",
   "marker_quoted", "marker_letter", "marker_choice_text", "marker_date").
   A marker with nothing after it (no letter or digit before the next
   marker or the end: a stage-2 answer the teacher left empty, "The answer
   is" cut off by the token limit) states no answer at all, so it is
   skipped, and the marker before it is read as the final one, however far
   back it is.
   If something follows the last marker but nothing parsable ("the answer
   is: it depends"), the previous marker is read
   instead, but only while it is a restatement pair: the earlier statement
   runs straight into the later marker (at most RESTATEMENT_GAP characters
   between them, "27. The answer (in words) is twenty-seven.") and is not
   conditional ("If you mean X, then the answer is yes."). Otherwise the
   result is None ("none"): a committed answer statement without an answer
   of the type ("the answer is: it depends") is no answer, and mining the
   reasoning for a stray "no" or number would credit a guess the model did
   not make (on Kojima et al.'s StrategyQA log, falling back to the last
   yes/no word there turned 168 "unknown"/"it depends" answers into answers).
   For the choice types, an answer statement that hedges between two
   options ("(A) or (B)", "Sam or Helga" in its first sentence) is no
   answer: `Extraction(None, "hedge")`; crediting its first option would
   reward a guess between two.
2. **Fallbacks**, only when the text has NO marker, searching the whole text:
   - number: the last number ("last_number");
   - yes/no: the last standalone "yes"/"no" word ("last_yes_no");
   - multiple choice / option text: the last "(A)"-style letter
     ("last_parenthesized_letter"), else the choice text mentioned last
     ("last_choice_text");
   - date option: the last "(A)"-style letter, else the last MM/DD/YYYY date
     that is one of the options ("last_date"), else the last choice text;
   - letters: the last quoted letter string ("last_quoted"), else the final
     token ("final_token").
3. Nothing found: `Extraction(None, "none")`.

Only a marker rule is evidence that the model stated an answer; a fallback
finds *something* of the type in any text (a random model's gibberish holds
numbers), so `answer_source(rule)` tells the two apart ("marker",
"fallback" or "none") and answer-found rates count markers only.

Per-type readers: a number is optional sign, digits with optional comma
thousands groups and decimals; currency signs, "%", units and a trailing
period are simply not part of it ("$1,000.50." -> "1000.5"). Digits touching
"/" are not numbers: "1/4" is neither 1 nor 4, and "11/12 or 990" reads 990.
Number words ("five") are not read. Yes/no: the words "yes"/"no" in any case.
Choice letters: "(A)", "A)", "A.", "A:" or a bare capital among the choice
labels, else a choice's text (whole words, any case), else for dates an
MM/DD/YYYY string equal to an option's date. Letter strings: a quoted word
("nkre") or quoted single letters joined by spaces or hyphens ("n-k-r-e"),
else the first token; reduced to lower-case a-z.

Canonical forms match `Example.answer`: numbers without thousands separators,
currency, percent signs, units or trailing zeros ("40000", "2.5", "18"),
"yes"/"no", an upper-case choice letter, a lower-case letter string.
Integers are compared exactly; other numbers numerically with a relative tolerance of 1e-6 (enough to
absorb float noise such as SVAMP's "12.0" or "0.30000000000000004", far
too small to forgive a real rounding difference such as 33.3 vs 33.33).
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import re
from typing import Sequence

from cot_distill.data.example import AnswerType

# Relative tolerance for numeric equality (see module docstring).
NUMBER_RELATIVE_TOLERANCE = 1e-6
# Absolute floor so that 0 == 1e-12 style float noise still matches.
NUMBER_ABSOLUTE_TOLERANCE = 1e-9

# Characters allowed between an answer statement and a later marker for the
# later one to count as its restatement (see `_extract_after_markers`).
RESTATEMENT_GAP = 60

Choices = Sequence[tuple[str, str]] | None


@dataclasses.dataclass(frozen=True)
class Extraction:
  """An extracted answer in canonical form and the rule that produced it.

  `answer` is None when no rule fired; `rule` is then "none".
  """

  answer: str | None
  rule: str


@dataclasses.dataclass(frozen=True)
class Verdict:
  """`judge`'s result: what was extracted, by which rule, and whether it is right."""

  predicted: str | None
  rule: str
  correct: bool


# "answer", an optional short parenthesised note ("(arabic numerals)"), then
# "is" / "would be" / ... and/or a colon.
_MARKER_RE = re.compile(
    r"\banswer(?:\s*\([^()\n]{0,40}\))?\s*"
    r"(?:(?:is|would\s+be|will\s+be|should\s+be|must\s+be)\b\s*:?|:|=)",
    re.IGNORECASE)

# A number: optional sign (ASCII or Unicode minus) directly before the digits,
# comma thousands groups, optional decimals. Not preceded by a digit or "."
# so "3.5" is one number and "5-3" is 5 and 3, not 5 and -3.
_NUMBER_RE = re.compile(
    r"(?<![\d./])(?P<sign>[-\u2212])?"
    r"(?P<integer>\d{1,3}(?:,\d{3})+|\d+)(?P<fraction>\.\d+)?(?![\d/]|\.\d)")
_YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_QUOTE = "[\"\u201c\u201d'\u2018\u2019]"
# A quoted word ("nkre") or quoted single letters joined by spaces, commas or
# hyphens ("n k r e", "n-k-r-e"); never a quoted phrase of longer words.
_QUOTED_RE = re.compile(
    _QUOTE + r"([A-Za-z]+|[A-Za-z](?:[ ,\-]{1,3}[A-Za-z](?![A-Za-z]))+)[.,!]?" + _QUOTE)
# A sentence ends at . ! ? followed by whitespace, or at a line break.
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s)|\n")
_DEFAULT_LABELS = {
    AnswerType.MULTIPLE_CHOICE: "ABCDE",
    AnswerType.DATE_OPTION: "ABCDEF",
    AnswerType.OPTION_TEXT: "ABC",
}


# ----------------------------------------------------------------------------
# Numbers.


def canonical_number(text: str) -> str | None:
  """Canonical string of the first number in `text`, or None.

  Strips currency ($, €, £), thousands separators, "%", unit words and a
  trailing period simply by reading only the number itself:
  "$1,000.50." -> "1000.5", "18.0" -> "18", "50%" -> "50", "-3" -> "-3".
  """
  match = _NUMBER_RE.search(text)
  return _format_number_match(match) if match else None


def _format_number_match(match: re.Match) -> str:
  digits = match.group("integer").replace(",", "") + (match.group("fraction") or "")
  value = decimal.Decimal(digits)
  if match.group("sign"):
    value = -value
  return _format_decimal(value)


def _format_decimal(value: decimal.Decimal) -> str:
  if value == value.to_integral_value():
    return str(int(value))  # Also turns "-0" into "0".
  return format(value.normalize(), "f")


def _parse_number(text: str) -> float | None:
  canonical = canonical_number(text)
  return float(canonical) if canonical is not None else None


def _numbers(text: str) -> list[str]:
  return [_format_number_match(m) for m in _NUMBER_RE.finditer(text)]


# ----------------------------------------------------------------------------
# Per-type parsers. Each takes a span of text and returns the canonical answer
# first in it (`first=True`, used after a marker) or last in it
# (`first=False`, used by fallbacks over the whole text); None if none.


def _pick(items: list, first: bool):
  if not items:
    return None
  return items[0] if first else items[-1]


def _find_number(span: str, first: bool) -> str | None:
  return _pick(_numbers(span), first)


def _find_yes_no(span: str, first: bool) -> str | None:
  return _pick([m.group(1).lower() for m in _YES_NO_RE.finditer(span)], first)


def _labels(answer_type: AnswerType, choices: Choices) -> str:
  if choices:
    return "".join(label.upper() for label, _ in choices)
  return _DEFAULT_LABELS[answer_type]


def _find_letter(span: str, labels: str, first: bool,
                 parenthesized_only: bool) -> str | None:
  """A choice letter written "(A)", or also "A)", "A.", "A:", "A," or bare "A"."""
  letters = "".join(re.escape(l) for l in labels)
  if parenthesized_only:
    pattern = rf"\(\s*([{letters}])\s*\)"
  else:
    pattern = (rf"\(\s*([{letters}])\s*\)|(?<![A-Za-z0-9'])([{letters}])"
               rf"(?=[).:,;\"\s]|$)")
  found = [m.group(1) or m.group(2) for m in re.finditer(pattern, span)]
  return _pick(found, first)


def _choice_needle(text: str) -> str:
  """A choice's text as searched for: lower-case, without the final period
  BIG-bench options carry ("Helga." is mentioned as "Helga or Sam")."""
  return text.strip().rstrip(".").strip().lower()


def _find_choice_text(span: str, choices: Choices, first: bool) -> str | None:
  """The label of the choice whose text appears (whole words, any case).

  On overlapping mentions the longer text wins ("red ball" over "ball").
  """
  if not choices:
    return None
  hits = []  # (position, -length, label)
  lowered = span.lower()
  for label, text in choices:
    needle = _choice_needle(text)
    if not needle:
      continue
    pattern = r"(?<!\w)" + re.escape(needle) + r"(?!\w)"
    for match in re.finditer(pattern, lowered):
      hits.append((match.start(), -len(needle), label.upper()))
  if not hits:
    return None
  if first:
    return min(hits)[2]
  # The mention that ends last; on a tie the longer one.
  return max(hits, key=lambda hit: (hit[0] - hit[1], -hit[1]))[2]


def _normal_date(month: str, day: str, year: str) -> tuple[int, int, int]:
  return int(month), int(day), int(year)


def _find_date_option(span: str, choices: Choices, first: bool) -> str | None:
  if not choices:
    return None
  by_date = {}
  for label, text in choices:
    match = _DATE_RE.search(text)
    if match:
      by_date.setdefault(_normal_date(*match.groups()), label.upper())
  found = [by_date[_normal_date(*m.groups())] for m in _DATE_RE.finditer(span)
           if _normal_date(*m.groups()) in by_date]
  return _pick(found, first)


def _clean_letters(token: str) -> str | None:
  letters = re.sub(r"[^a-z]", "", token.lower())
  return letters or None


def _find_quoted_letters(span: str, first: bool) -> str | None:
  return _pick([_clean_letters(m.group(1)) for m in _QUOTED_RE.finditer(span)],
               first)


def _find_token_letters(span: str, first: bool) -> str | None:
  tokens = [t for t in (_clean_letters(t) for t in span.split()) if t]
  return _pick(tokens, first)


# ----------------------------------------------------------------------------
# Extraction.


def _marker_rules(answer_type: AnswerType, choices: Choices):
  """(rule name, parser(span, first)) pairs, in the order they are tried."""
  labels = (_labels(answer_type, choices)
            if answer_type in _DEFAULT_LABELS else "")
  if answer_type == AnswerType.NUMBER:
    return [("number", _find_number)]
  if answer_type == AnswerType.YES_NO:
    return [("yes_no", _find_yes_no)]
  if answer_type == AnswerType.LETTERS:
    return [("quoted", _find_quoted_letters), ("token", _find_token_letters)]
  rules = [("letter", lambda s, f: _find_letter(s, labels, f, False))]
  if answer_type == AnswerType.DATE_OPTION:
    rules.append(("date", lambda s, f: _find_date_option(s, choices, f)))
  rules.append(("choice_text", lambda s, f: _find_choice_text(s, choices, f)))
  return rules


def _fallback_rules(answer_type: AnswerType, choices: Choices):
  labels = (_labels(answer_type, choices)
            if answer_type in _DEFAULT_LABELS else "")
  if answer_type == AnswerType.NUMBER:
    return [("last_number", _find_number)]
  if answer_type == AnswerType.YES_NO:
    return [("last_yes_no", _find_yes_no)]
  if answer_type == AnswerType.LETTERS:
    return [("last_quoted", _find_quoted_letters),
            ("final_token", _find_token_letters)]
  rules = [("last_parenthesized_letter",
            lambda s, f: _find_letter(s, labels, f, True))]
  if answer_type == AnswerType.DATE_OPTION:
    rules.append(("last_date", lambda s, f: _find_date_option(s, choices, f)))
  rules.append(("last_choice_text",
                lambda s, f: _find_choice_text(s, choices, f)))
  return rules


def last_marker(text: str) -> re.Match | None:
  """The last answer marker in `text` (see module docstring), or None."""
  match = None
  for match in _MARKER_RE.finditer(text):
    pass
  return match


def _is_conditional(text: str, marker: re.Match) -> bool:
  """Whether the marker's sentence is an "if ..., then the answer is" clause."""
  start = 0
  for boundary in _SENTENCE_END_RE.finditer(text, 0, marker.start()):
    start = boundary.end()
  return re.search(r"\bif\b", text[start:marker.start()], re.IGNORECASE) is not None


def _is_empty_statement(span: str) -> bool:
  """Whether a marker is followed by no letter or digit at all."""
  return re.search(r"[^\W_]", span) is None


_HEDGE_RE = re.compile(r"\bor\b", re.IGNORECASE)


def _option_mentions(sentence: str, labels: str, choices: Choices) -> list[tuple[int, int, str]]:
  """(start, end, label) of every choice letter or choice text in `sentence`."""
  letters = "".join(re.escape(l) for l in labels)
  found = [(m.start(), m.end(), m.group(1) or m.group(2)) for m in re.finditer(
      rf"\(\s*([{letters}])\s*\)|(?<![A-Za-z0-9'])([{letters}])(?=[).:,;\"\s]|$)",
      sentence)]
  for label, option in choices or ():
    needle = _choice_needle(option)
    if needle:
      found += [(m.start(), m.end(), label.upper()) for m in re.finditer(
          r"(?<!\w)" + re.escape(needle) + r"(?!\w)", sentence.lower())]
  return sorted(found)


def _is_hedge(span: str, answer_type: AnswerType, choices: Choices) -> bool:
  """Whether the statement's first sentence offers two options joined by "or"."""
  if answer_type not in _DEFAULT_LABELS:
    return False
  boundary = _SENTENCE_END_RE.search(span.lstrip())
  sentence = span.lstrip()[:boundary.start() if boundary else None]
  mentions = _option_mentions(sentence, _labels(answer_type, choices), choices)
  for (_, end, label), (start, _, other) in zip(mentions, mentions[1:]):
    if other != label and start >= end and _HEDGE_RE.search(sentence[end:start]):
      return True
  return False


def _extract_after_markers(text: str, markers: list[re.Match],
                           answer_type: AnswerType,
                           choices: Choices) -> Extraction:
  """Reads the last answer statement, or the restatement chain ending in it.

  The text after the last marker is read first. Only when it holds no answer
  of the type do we step back to the previous marker, and only if that
  marker's statement runs straight into the later one (at most
  RESTATEMENT_GAP characters between them, as in "27. The answer (in words)
  is twenty-seven.") and is not conditional. A distant statement (a
  sub-question's answer) or a conditional one ("If you mean X, then the
  answer is yes. The answer is: it depends.") is not the model's final
  answer, so the walk stops there.
  """
  final = len(markers)
  while final and _is_empty_statement(
      text[markers[final - 1].end():markers[final].start() if final < len(markers) else None]):
    final -= 1  # An empty statement: the previous marker is the final one.
  for position in range(final - 1, -1, -1):
    end = markers[position + 1].start() if position + 1 < len(markers) else len(text)
    span = text[markers[position].end():end]
    if position + 1 < final and (
        len(span.strip()) > RESTATEMENT_GAP
        or _is_conditional(text, markers[position])):
      break
    if _is_hedge(span, answer_type, choices):
      return Extraction(None, "hedge")
    for name, parser in _marker_rules(answer_type, choices):
      found = parser(span, True)
      if found is not None:
        return Extraction(found, f"marker_{name}")
  return Extraction(None, "none")


def extract_answer(text: str, answer_type: AnswerType | str,
                   choices: Choices = None) -> Extraction:
  """Extracts the predicted answer from generated text.

  Args:
    text: the generated chain of thought (with its answer sentence), or a bare
      answer.
    answer_type: an `AnswerType` (or its string value).
    choices: `(label, text)` pairs for the choice types; used to read answers
      given as option text or, for dates, as MM/DD/YYYY.

  Returns:
    Extraction(answer in canonical form, name of the rule that fired). Rule
    order is documented in the module docstring.
  """
  answer_type = AnswerType(answer_type)
  text = text or ""
  markers = list(_MARKER_RE.finditer(text))
  if markers:
    return _extract_after_markers(text, markers, answer_type, choices)
  for name, parser in _fallback_rules(answer_type, choices):
    found = parser(text, False)
    if found is not None:
      return Extraction(found, name)
  return Extraction(None, "none")


MARKER_RULE_PREFIX = "marker_"
NO_ANSWER_RULES = ("none", "hedge")


def answer_source(rule: str | None) -> str:
  """How an extraction rule found its answer: "marker", "fallback" or "none".

  "marker": the text states its answer ("The answer is 18"); "fallback": the
  text states none and a rule picked the last thing of the type in it (which
  any text with a number or a "yes" has, gibberish included); "none": no
  answer (nothing found, or a hedge between options).
  """
  if not rule or rule in NO_ANSWER_RULES:
    return "none"
  return "marker" if rule.startswith(MARKER_RULE_PREFIX) else "fallback"


# ----------------------------------------------------------------------------
# Comparison.


def normalize_gold(gold: str, answer_type: AnswerType | str) -> str | None:
  """Gold answer in canonical form ("40,000" -> "40000", "Yes" -> "yes",
  "(b)" -> "B"); None when it cannot be read as its type."""
  answer_type = AnswerType(answer_type)
  gold = str(gold).strip()
  if answer_type == AnswerType.NUMBER:
    return canonical_number(gold)
  if answer_type == AnswerType.YES_NO:
    lowered = gold.lower().strip(" .")
    return {"yes": "yes", "no": "no", "true": "yes", "false": "no"}.get(lowered)
  if answer_type == AnswerType.LETTERS:
    return _clean_letters(gold)
  letter = re.sub(r"[^A-Za-z]", "", gold).upper()
  return letter or None


def answers_match(predicted: str | None, gold: str,
                  answer_type: AnswerType | str) -> bool:
  """Whether a predicted answer (canonical or raw) equals the gold answer.

  Numbers: numeric equality within NUMBER_RELATIVE_TOLERANCE (18 == 18.0 ==
  "18." == "$18"; "40,000" == 40000). Yes/no and choice letters: case-
  insensitive. Letter strings: lower-case letters only. None never matches.
  """
  if predicted is None:
    return False
  answer_type = AnswerType(answer_type)
  if answer_type == AnswerType.NUMBER:
    predicted_text = canonical_number(str(predicted))
    gold_text = canonical_number(str(gold))
    if predicted_text is None or gold_text is None:
      return False
    if "." not in predicted_text and "." not in gold_text:
      # Integers compare exactly: the relative tolerance would let 1000001
      # pass for 1000000, and integers carry no float noise.
      return int(predicted_text) == int(gold_text)
    predicted_value, gold_value = float(predicted_text), float(gold_text)
    return math.isclose(predicted_value, gold_value,
                        rel_tol=NUMBER_RELATIVE_TOLERANCE,
                        abs_tol=NUMBER_ABSOLUTE_TOLERANCE)
  normal_gold = normalize_gold(gold, answer_type)
  normal_predicted = normalize_gold(predicted, answer_type)
  return normal_gold is not None and normal_predicted == normal_gold


def judge(text: str, gold: str, answer_type: AnswerType | str,
          choices: Choices = None) -> Verdict:
  """Extracts the answer from `text` and compares it with `gold`.

  The one function both the teacher filter and the evaluator call.
  """
  extraction = extract_answer(text, answer_type, choices)
  return Verdict(predicted=extraction.answer, rule=extraction.rule,
                 correct=answers_match(extraction.answer, gold, answer_type))


# ----------------------------------------------------------------------------
# Answer sentences in targets.


def answer_sentence(answer: str, answer_type: AnswerType | str) -> str:
  """The student's answer sentence, "The answer is X.", X canonical.

  Same wording as Wei et al.'s exemplars, so the marker rule reads it back.
  """
  normal = normalize_gold(answer, answer_type)
  if normal is None:
    raise ValueError(
        f"answer {answer!r} cannot be written as a {AnswerType(answer_type).value} answer")
  return f"The answer is {normal}."


def strip_answer_sentence(rationale: str) -> str:
  """Drops a trailing answer sentence ("So the answer is 18.") from a rationale.

  Only the final sentence is removed, and only when it contains an answer
  marker and nothing but the answer follows the marker (no further sentence
  or line). Everything from the start of that sentence ("So", "Therefore,"
  included) is dropped and trailing whitespace trimmed. A rationale without
  such a sentence is returned unchanged (apart from trailing whitespace), so
  the student target can append `answer_sentence` exactly once.
  """
  trimmed = rationale.rstrip()
  marker = last_marker(trimmed)
  if marker is None:
    return trimmed
  remainder = trimmed[marker.end():]
  if "\n" in remainder or re.search(r"[.!?]\s+\S", remainder):
    return trimmed
  start = 0
  for end in _SENTENCE_END_RE.finditer(trimmed, 0, marker.start()):
    start = end.end()
  return trimmed[:start].rstrip()
