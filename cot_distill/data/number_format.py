"""Canonical spelling of numeric gold answers.

Gold numbers arrive as floats (SVAMP `51.0`), float strings with binary
noise (MAWPS `0.30000000000000004`), or text with thousands separators
(GSM8K `40,000`). `Example.answer` always holds one spelling: no separators,
no trailing `.0`, no exponent, so string equality works for integers and the
answer extractor only needs numeric comparison for genuine decimals.
"""

from __future__ import annotations

import decimal
import re

_NUMBER_PATTERN = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_THOUSANDS_PATTERN = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def canonical_number(value: str | int | float) -> str:
  """Returns `value` as a plain decimal string.

  Floats are converted through `repr` (the shortest round-tripping form), so
  `0.1 + 0.2` stays `0.30000000000000004`: we do not round, because rounding
  rules belong to the comparison in `cot_distill.answers`, not to the data.

  Examples: "40,000" -> "40000"; 51.0 -> "51"; "2.50" -> "2.5"; "-7" -> "-7".

  Raises:
    ValueError: `value` is not a finite number (e.g. "5/2", "3:4", "Bob").
  """
  if isinstance(value, bool):
    raise ValueError(f"not a number: {value!r}")
  if isinstance(value, float):
    text = repr(value)
  else:
    text = str(value).strip()
  if _THOUSANDS_PATTERN.match(text):
    text = text.replace(",", "")
  if not _NUMBER_PATTERN.match(text):
    # Floats may still come as '1e-05' from repr.
    try:
      parsed = decimal.Decimal(text)
    except decimal.InvalidOperation:
      raise ValueError(f"not a number: {value!r}") from None
    if not parsed.is_finite():
      raise ValueError(f"not a number: {value!r}")
  else:
    parsed = decimal.Decimal(text)
  if parsed == parsed.to_integral_value():
    return str(int(parsed))
  return format(parsed.normalize(), "f")


def is_number(text: str) -> bool:
  """Whether `canonical_number(text)` would succeed."""
  try:
    canonical_number(text)
  except ValueError:
    return False
  return True
