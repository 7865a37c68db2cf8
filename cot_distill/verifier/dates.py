"""Date understanding: every date the chain writes, and every offset it applies.

Date questions are free text ("the first Monday of 2019", "her 16th
birthday"), so the question itself is not recomputed; what is checked is
what the chain does with dates:

  * each MM/DD/YYYY date it writes must exist (no 02/30/2021);
  * a sentence with two dates and one offset ("one week before 05/01/2021
    is 04/24/2021", "10 days ago from 07/28/2002, 07/18/2002") must put
    them exactly that far apart: days and weeks by the calendar, months
    and years as the same day of another month or year.
"""

from __future__ import annotations

import datetime
import re

from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import text as text_lib

_DATE_RE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_OFFSET_RE = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|"
                        r"eleven|twelve)\s+(day|week|month|year)s?\b", re.IGNORECASE)


def _date(match: re.Match) -> datetime.date | None:
  month, day, year = (int(g) for g in match.groups())
  try:
    return datetime.date(year, month, day)
  except ValueError:
    return None


def _apart(first: datetime.date, second: datetime.date, count: int, unit: str) -> bool:
  early, late = sorted((first, second))
  if unit in ("day", "week"):
    return (late - early).days == count * (7 if unit == "week" else 1)
  months = (late.year - early.year) * 12 + late.month - early.month
  return early.day == late.day and months == count * (12 if unit == "year" else 1)


def check(question_text: str, chain: str, answer: str | None
          ) -> list[findings_lib.Finding] | None:
  del question_text, answer  # The question is free text; see the docstring.
  found: list[findings_lib.Finding] = []
  for offset, sentence in text_lib.sentences(chain):
    matches = list(_DATE_RE.finditer(sentence))
    dates = [_date(m) for m in matches]
    for match, date in zip(matches, dates):
      if date is None:
        found.append(findings_lib.Finding(offset, findings_lib.STEP_INCONSISTENT,
                                          text_lib.excerpt(sentence),
                                          f"{match.group(0)} is not a date"))
    offsets = list(_OFFSET_RE.finditer(sentence))
    if len(dates) == 2 and None not in dates and len(offsets) == 1:
      word = offsets[0].group(1).lower()
      count = 1 if word in ("a", "an") else text_lib.count_word(word)
      unit = offsets[0].group(2).lower()
      if count is not None and not _apart(dates[0], dates[1], count, unit):
        found.append(findings_lib.Finding(
            offset, findings_lib.STEP_INCONSISTENT, text_lib.excerpt(sentence),
            f"{matches[0].group(0)} and {matches[1].group(0)} are not {count} {unit}(s) apart"))
  return found
