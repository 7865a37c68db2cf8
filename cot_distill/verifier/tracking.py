"""Tracking shuffled objects: who holds what after each swap, recomputed.

The question gives each person's starting item ("Alice has a orange ball",
"Alice is dancing with Patrick", "Alice is playing striker", "Alice gets
Catch-22") and a list of swaps ("First, Alice and Bob swap balls."). A chain
mentions swaps in order ("Alice and Bob swap"), which moves its place in the
list to that swap; a claim "Alice has the blue ball" ("is dancing with",
"is playing", "gets", "ends up with") is compared with the holdings after
the swap the chain is at. The chain's last claim about the person the
question asks about must name the chosen option's item.
"""

from __future__ import annotations

import re
from typing import Sequence

from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import text as text_lib

_HOLD = r"(?:has|have|holds|is holding|is dancing with|dances with|is playing|plays|gets|got|" \
        r"ends up with|now has|is now dancing with|is now playing|will have|had)"
_START_RE = re.compile(rf"(?P<name>[A-Z][a-z]+) {_HOLD} (?:a |an |the )?(?P<item>[^,.]+?)"
                       r"(?=, and |, |\.\s)")
_SWAP_RE = re.compile(r"(?P<a>[A-Z][a-z]+) and (?P<b>[A-Z][a-z]+) "
                      r"(?:swap|switch|trade|exchange)", re.IGNORECASE)
_ASKED_RE = re.compile(r"At the end of the \w+, (?P<name>[A-Z][a-z]+) (?:has|is)")


def parse_question(question: str):
  """(start holdings {name: item}, swaps [(a, b)], asked name) or None."""
  setup, _, rest = question.partition("\n")
  if ":" not in setup or not rest:
    return None
  holdings = {m.group("name"): m.group("item").strip()
              for m in _START_RE.finditer(setup.split(":", 1)[1] + " ")}
  swaps = [(m.group("a"), m.group("b")) for m in _SWAP_RE.finditer(rest)]
  asked = _ASKED_RE.search(rest)
  if len(holdings) < 2 or not swaps or any(a not in holdings or b not in holdings
                                            for a, b in swaps):
    return None
  return holdings, swaps, asked.group("name") if asked else None


def _states(holdings: dict[str, str], swaps: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
  states = [dict(holdings)]
  for a, b in swaps:
    state = dict(states[-1])
    state[a], state[b] = state[b], state[a]
    states.append(state)
  return states


def _option_text(answer: str | None, choices) -> str | None:
  for label, text in choices or ():
    if answer and label.upper() == answer.upper():
      return text.strip().rstrip(".").lower()
  return None


def check(question_text: str, chain: str, answer: str | None, choices=None
          ) -> list[findings_lib.Finding] | None:
  parsed = parse_question(question_text)
  if parsed is None:
    return None
  holdings, swaps, asked = parsed
  states = _states(holdings, swaps)
  items = sorted(set(holdings.values()), key=len, reverse=True)
  item_re = "|".join(re.escape(item) for item in items)
  names_re = "|".join(re.escape(name) for name in holdings)
  claim_re = re.compile(rf"\b({names_re})(?:'s)?\s+(?:\w+\s+){{0,2}}?{_HOLD}\s+(?:a |an |the )?"
                        rf"(?:\w+'s\s+)?({item_re})\b", re.IGNORECASE)
  found: list[findings_lib.Finding] = []
  at = 0  # number of swaps done in the chain's account
  last_asked = None
  for offset, sentence in text_lib.sentences(chain):
    events = [(m.start(), "swap", m) for m in _SWAP_RE.finditer(sentence)]
    events += [(m.start(), "claim", m) for m in claim_re.finditer(sentence)]
    for _, kind, match in sorted(events, key=lambda e: e[0]):
      if kind == "swap":
        pair = {match.group("a").capitalize(), match.group("b").capitalize()}
        for index in range(at, len(swaps)):
          if set(swaps[index]) == pair:
            at = index + 1
            break
        continue
      name = match.group(1).capitalize()
      item = match.group(2)
      truth = states[at][name]
      if item.lower() != truth.lower():
        found.append(findings_lib.Finding(
            offset, findings_lib.STEP_INCONSISTENT, text_lib.excerpt(sentence),
            f"after {at} swap(s) {name} has {truth}"))
      if name == asked:
        last_asked = (offset, sentence, item)
  option = _option_text(answer, choices)
  if last_asked is not None and option is not None and at == len(swaps):
    offset, sentence, item = last_asked
    if item.lower() not in option and option not in item.lower():
      found.append(findings_lib.Finding(
          offset, findings_lib.STEP_INCONSISTENT, text_lib.excerpt(sentence),
          f"the chain concludes {asked} has {item} but answers ({answer}) {option}"))
  return found
