"""Parser for Kojima et al.'s zero-shot-CoT and zero-shot run logs (text-davinci-002).

The logs (`shared/data/teacher_outputs/*.log`, format in its SOURCES.md) are
the only real teacher text we have offline. We parse them to validate the
answer extractor against the authors' own verdicts, and the teacher code can
turn the records into CoT records.

Layout: a header (a 29-star line, the run's argparse `Namespace(...)`, another
29-star line, a few "setup" lines), then records, each framed by lines of
exactly 25 stars:

    <k>st data / 1_th_sampling / Q: <question> /
    A: <cot_trigger><CoT> <TRIGGER><stage-2 answer> /
    pred_before : ... / pred_after : ... / pred_list : [...] /
    pred_mode : ... / GT : ...

then a footer "accuracy : <percent>" (optionally one more line naming the
authors' API log). The chain of thought is split from the stage-2 answer at
the " " + TRIGGER occurrence whose remainder equals `pred_before` after the
log format's normalisation (the newer format logs the stage-2 text verbatim;
the older one, recognisable by the lack of `api_log_file_name` in the
Namespace, removes every ":" and strips surrounding whitespace, so both sides
are compared after that normalisation; gsm8k record 201, whose logged
`pred_before` differs from the stage-2 text only in trailing whitespace, is
matched by the strip). Neither the first nor the
last occurrence is right for every record: some CoTs already contain the
trigger text and some stage-2 outputs repeat it.

Zero-shot (direct-answer) logs (`method='zero_shot'`) have one stage: the
`A:` line starts with `direct_answer_trigger_for_zeroshot` ("The answer
(arabic numerals) is"; derived from `direct_answer_trigger` the way their
code does when the Namespace lacks it) and the rest of the block is the
answer, so such a record's `cot` is "".
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re

_HEADER_STARS = "*" * 29
_RECORD_STARS = "*" * 25
_INDEX_RE = re.compile(r"^(\d+)st data$")
_TAIL_FIELDS = ("pred_after", "pred_list", "pred_mode", "GT")


class LogFormatError(ValueError):
  """The log does not follow the documented format; names file and line."""

  def __init__(self, path: str, line: int, message: str):
    super().__init__(f"{path}:{line}: {message}")
    self.path = path
    self.line = line


@dataclasses.dataclass(frozen=True)
class KojimaRecord:
  """One question of a zero-shot-CoT run.

  Attributes:
    index: k of the "<k>st data" line (1-based, DataLoader order, NOT the
      dataset's file order).
    question: the question text after "Q: ".
    cot: the generated chain of thought (the stage-1 continuation after
      "Let's think step by step.", verbatim; ends with the space the code put
      before the trigger removed).
    answer_text: the stage-2 continuation after TRIGGER, verbatim.
    pred_before: the log's `pred_before` field (stage-2 text as logged).
    pred_after: the authors' cleansed prediction ("" when none).
    pred_mode: the prediction the authors scored (equals pred_after here).
    gold: the `GT` field, verbatim (GSM8K's can hold thousands separators).
    line: 1-based line number of the record's "<k>st data" line.
  """

  index: int
  question: str
  cot: str
  answer_text: str
  pred_before: str
  pred_after: str
  pred_mode: str
  gold: str
  line: int

  @property
  def log_correct(self) -> bool:
    """The authors' verdict: exact string match pred_mode == GT."""
    return self.pred_mode == self.gold


@dataclasses.dataclass(frozen=True)
class KojimaLog:
  """A parsed log: run settings, records in log order, footer accuracy."""

  path: str
  dataset: str
  cot_trigger: str
  trigger: str  # direct_answer_trigger, starts with "\n".
  verbatim_pred_before: bool  # Newer log format (see module docstring).
  records: tuple[KojimaRecord, ...]
  accuracy: float  # Percent, as printed in the footer.
  method: str = "zero_shot_cot"  # Or "zero_shot" (direct answer).
  dataset_path: str = ""  # The run's --dataset_path ("" when not logged).
  zero_shot_trigger: str = ""  # direct_answer_trigger_for_zeroshot.

  @property
  def is_direct(self) -> bool:
    """A zero-shot direct-answer run (no chain of thought)."""
    return self.method == "zero_shot"

  def completion(self, record: KojimaRecord) -> str:
    """The teacher's full generated text for `record`: CoT, the trigger the
    code appended, and the stage-2 answer (what Kojima printed after
    "A: Let's think step by step."); for a direct-answer run, the answer
    trigger of its prompt and the answer."""
    if self.is_direct:
      return self.zero_shot_trigger + record.answer_text
    return record.cot + " " + self.trigger + record.answer_text


def _namespace_value(namespace: str, key: str, path: str, line: int) -> str:
  match = re.search(rf"(?<![\w]){key}=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
                    namespace)
  if not match:
    raise LogFormatError(path, line, f"header Namespace lacks {key}=")
  return ast.literal_eval(match.group(1))


def _optional_namespace_value(namespace: str, key: str, path: str) -> str | None:
  if not re.search(rf"(?<![\w]){key}=", namespace):
    return None
  return _namespace_value(namespace, key, path, 2)


def _zero_shot_trigger(trigger: str) -> str:
  """Their rule: drop "\nTherefore, " and capitalise ("The answer is")."""
  text = trigger.replace("\nTherefore, ", "")
  return text[:1].upper() + text[1:]


def _normalise_pred_before(text: str, verbatim: bool) -> str:
  return text if verbatim else text.replace(":", "").strip()


def parse_log(path: str | os.PathLike) -> KojimaLog:
  """Parses one log file. Raises FileNotFoundError or LogFormatError."""
  path = os.fspath(path)
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # The file's final newline.
  if len(lines) < 3 or lines[0] != _HEADER_STARS or not lines[1].startswith("Namespace("):
    raise LogFormatError(path, 1, "expected a 29-star line then 'Namespace(...)'")
  namespace = lines[1]
  dataset = _namespace_value(namespace, "dataset", path, 2)
  cot_trigger = _namespace_value(namespace, "cot_trigger", path, 2)
  trigger = _namespace_value(namespace, "direct_answer_trigger", path, 2)
  verbatim = "api_log_file_name=" in namespace
  method = _optional_namespace_value(namespace, "method", path) or "zero_shot_cot"
  if method not in ("zero_shot_cot", "zero_shot"):
    raise LogFormatError(path, 2, f"method {method!r} is not zero_shot_cot or zero_shot")
  dataset_path = _optional_namespace_value(namespace, "dataset_path", path) or ""
  zero_shot_trigger = (_optional_namespace_value(
      namespace, "direct_answer_trigger_for_zeroshot", path)
                       or _zero_shot_trigger(trigger))
  answer_prefix = "A: " + (zero_shot_trigger if method == "zero_shot" else cot_trigger)

  position = 2
  while position < len(lines) and lines[position] != _RECORD_STARS:
    position += 1
  records = []
  while position < len(lines) and lines[position] == _RECORD_STARS:
    end = position + 1
    while end < len(lines) and lines[end] != _RECORD_STARS:
      end += 1
    if end >= len(lines):
      raise LogFormatError(path, position + 1, "record is not closed by a 25-star line")
    record = _parse_record(lines, position + 1, end, path, answer_prefix,
                           None if method == "zero_shot" else trigger, verbatim)
    if record.index != len(records) + 1:
      raise LogFormatError(path, record.line,
                           f"expected record {len(records) + 1}, found {record.index}")
    records.append(record)
    position = end + 1
  if position >= len(lines) or not lines[position].startswith("accuracy : "):
    raise LogFormatError(path, position + 1, "expected footer 'accuracy : <percent>'")
  try:
    accuracy = float(lines[position][len("accuracy : "):])
  except ValueError:
    raise LogFormatError(path, position + 1, "accuracy is not a number") from None
  if not records:
    raise LogFormatError(path, position + 1, "log has no records")
  return KojimaLog(path=path, dataset=dataset, cot_trigger=cot_trigger,
                   trigger=trigger, verbatim_pred_before=verbatim,
                   records=tuple(records), accuracy=accuracy, method=method,
                   dataset_path=dataset_path, zero_shot_trigger=zero_shot_trigger)


def _field(lines: list[str], at: int, name: str, path: str) -> str:
  prefix = f"{name} : "
  text = lines[at]
  if not (text.startswith(prefix) or text == prefix.rstrip()):
    raise LogFormatError(path, at + 1, f"expected '{prefix}...', found {text[:60]!r}")
  return text[len(prefix):]


def _parse_record(lines: list[str], start: int, end: int, path: str,
                  answer_prefix: str, trigger: str | None,
                  verbatim: bool) -> KojimaRecord:
  """Parses lines[start:end] (between the framing star lines).

  `trigger` is None for a direct-answer record: its whole block is the answer.
  """
  if end - start < 9:
    raise LogFormatError(path, start + 1, "record too short")
  match = _INDEX_RE.match(lines[start])
  if not match:
    raise LogFormatError(path, start + 1, f"expected '<k>st data', found {lines[start][:60]!r}")
  if lines[start + 1] != "1_th_sampling":
    raise LogFormatError(path, start + 2, "expected '1_th_sampling'")
  if not lines[start + 2].startswith("Q: "):
    raise LogFormatError(path, start + 3, "expected 'Q: <question>'")
  answer_start = start + 3
  while answer_start < end and not lines[answer_start].startswith(answer_prefix):
    answer_start += 1
  # The four single-line fields close the record; pred_before may span lines.
  tail = {name: _field(lines, end - 4 + i, name, path)
          for i, name in enumerate(_TAIL_FIELDS)}
  pred_start = end - 5
  while pred_start > answer_start and not lines[pred_start].startswith("pred_before :"):
    pred_start -= 1
  if answer_start >= end or pred_start <= answer_start:
    raise LogFormatError(path, start + 3, f"expected an '{answer_prefix}' line followed by 'pred_before :'")
  question = "\n".join(lines[start + 2:answer_start])[len("Q: "):]
  pred_before = "\n".join([_field(lines, pred_start, "pred_before", path)]
                          + lines[pred_start + 1:end - 4])
  block = "\n".join(lines[answer_start:pred_start])[len(answer_prefix):]
  if trigger is None:
    cot, answer_text = "", block
  else:
    cot, answer_text = _split_at_trigger(block, trigger, pred_before, verbatim,
                                         path, answer_start + 1)
  return KojimaRecord(index=int(match.group(1)), question=question, cot=cot,
                      answer_text=answer_text, pred_before=pred_before,
                      pred_after=tail["pred_after"], pred_mode=tail["pred_mode"],
                      gold=tail["GT"], line=start + 1)


def _split_at_trigger(block: str, trigger: str, pred_before: str,
                      verbatim: bool, path: str, line: int) -> tuple[str, str]:
  """Splits "CoT + ' ' + TRIGGER + answer" where the answer matches pred_before."""
  separator = " " + trigger
  wanted = _normalise_pred_before(pred_before, verbatim)
  found = block.find(separator)
  while found >= 0:
    answer_text = block[found + len(separator):]
    if _normalise_pred_before(answer_text, verbatim) == wanted:
      return block[:found], answer_text
    found = block.find(separator, found + 1)
  raise LogFormatError(path, line, f"no {trigger!r} in the answer block is followed by pred_before")
