"""Last-letter concatenation: the letter taken from each word, recomputed.

The question names the words ("Take the last letters of each words in
"Dorian Mayra" and concatenate them."). A chain's checkable claims:

  * a word's letter: 'The last letter of "Dorian" is "n"', '"Dorian" ends
    with "n"';
  * the letters in order: 'Their last letters are "n", "a"';
  * a concatenation: any quoted string of two or more letters ("na",
    "n-a-e-y", "n a e y") that is not one of the words must be the last
    letters of consecutive words (running and partial concatenations,
    "eo" + "nr", pass);
  * the conclusion: a chain that spells out the full concatenation must
    answer with it, and one whose last concatenation stops short ("So, we
    have "yar" concatenated." for "yare") has not derived its answer.
"""

from __future__ import annotations

import re

from cot_distill.verifier import findings as findings_lib
from cot_distill.verifier import text as text_lib

_QUESTION_RE = re.compile(r"Take the last letters? of (?:each|the) words? in [\"“](?P<words>[^\"”]+)[\"”]")
_Q = r"[\"“”'‘’]?"
_WORD_LETTER_RES = (
    re.compile(rf"last letter (?:of|in) (?:the word )?{_Q}([A-Za-z]+){_Q},?\s+is\s+"
               rf"(?:the letter\s+)?{_Q}([A-Za-z]){_Q}(?![A-Za-z])", re.IGNORECASE),
    re.compile(rf"{_Q}([A-Za-z]+){_Q}\s+ends\s+(?:with|in)\s+(?:the letter\s+|an?\s+)?"
               rf"{_Q}([A-Za-z]){_Q}(?![A-Za-z])", re.IGNORECASE),
)
_LIST_RE = re.compile(r"letters\s+are\s*:?\s*((?:[\"“]\w[\"”](?:,?\s*(?:and\s+)?)?)+)",
                      re.IGNORECASE)
_QUOTED_RE = re.compile(r"[\"“]([A-Za-z](?:[- ]?[A-Za-z])+)[\"”]")
# A sentence that joins letters: there a quoted single letter is a result too
# (one-word questions: 'Putting them together gives "n"').
_JOINING_RE = re.compile(r"together|concatenat|\bform|combin|\bjoin|\bwe get\b|\bgives\b",
                         re.IGNORECASE)
_SINGLE_RE = re.compile(r"[\"“]([A-Za-z])[\"”]")


def _is_run(joined: str, letters: list[str]) -> bool:
  """Whether `joined` is the last letters of consecutive words ("eo" + "nr")."""
  return any("".join(letters[i:i + len(joined)]) == joined
             for i in range(len(letters) - len(joined) + 1))


def parse_words(question: str) -> list[str] | None:
  match = None
  for match in _QUESTION_RE.finditer(question):
    pass
  return match.group("words").split() if match else None


def check(question_text: str, chain: str, answer: str | None
          ) -> list[findings_lib.Finding] | None:
  """Findings for a last-letters chain; None when the question is not one."""
  words = parse_words(question_text)
  if not words:
    return None
  letters = [word[-1].lower() for word in words]
  by_word = {word.lower(): word[-1].lower() for word in words}
  found: list[findings_lib.Finding] = []

  def fail(offset: int, sentence: str, detail: str) -> None:
    found.append(findings_lib.Finding(offset, findings_lib.STEP_INCONSISTENT,
                                      text_lib.excerpt(sentence), detail))

  last_joined: tuple[int, str, str] | None = None
  for offset, sentence in text_lib.sentences(chain):
    for pattern in _WORD_LETTER_RES:
      for match in pattern.finditer(sentence):
        word, letter = match.group(1).lower(), match.group(2).lower()
        if word in by_word and by_word[word] != letter:
          fail(offset, sentence, f'the last letter of "{match.group(1)}" is "{by_word[word]}"')
    for match in _LIST_RE.finditer(sentence):
      listed = re.findall(r"[\"“](\w)[\"”]", match.group(1))
      if [c.lower() for c in listed] != letters[:len(listed)]:
        fail(offset, sentence, f"the last letters are {', '.join(letters)}")
    joins = (list(_SINGLE_RE.finditer(sentence)) if _JOINING_RE.search(sentence)
             and not any(p.search(sentence) for p in _WORD_LETTER_RES)
             and not _LIST_RE.search(sentence) else [])
    for match in sorted([*_QUOTED_RE.finditer(sentence), *joins], key=lambda m: m.start()):
      raw = match.group(1)
      if raw.lower() in by_word or " " in raw.strip() and len(raw.split()) > 1 and all(
          len(part) > 1 for part in raw.split()):
        continue
      joined = re.sub(r"[- ]", "", raw).lower()
      if not _is_run(joined, letters):
        fail(offset, sentence, f'the letters concatenate to "{"".join(letters)}"')
      last_joined = (offset, sentence, joined)
  if last_joined is not None and answer:
    offset, sentence, joined = last_joined
    if joined != answer and joined == "".join(
        letters[:len(joined)]) and answer == "".join(letters):
      fail(offset, sentence, f'the chain stops at "{joined}", short of the answer "{answer}"')
    elif joined == "".join(letters) and joined != answer:
      fail(offset, sentence, f'the chain concludes "{joined}" but answers "{answer}"')
  return found
