"""`cot-distill answers`: check the answer extractor against real teacher text.

`cot-distill answers agreement [--logs-dir DIR]` parses Kojima et al.'s
zero-shot-CoT logs and compares our verdict (`cot_distill.answers.judge`) with
the authors' own (exact string match of their cleansed prediction against
GT) record by record. Every disagreement is put in a named class
(`DISAGREEMENT_CLASSES`, one line each in cot_distill/teacher/README.md); a
kind no class explains shows up as "other" and fails the command, instead of
hiding in a percentage.

`cot-distill answers extract TEXT --type TYPE [--gold G]` shows what the
extractor reads from one text and which rule fired.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import pathlib
import re
import sys

from cot_distill import answers
from cot_distill.data.example import AnswerType
from cot_distill.teacher import alignment
from cot_distill.teacher import kojima_logs

# The answer type of each Kojima et al. dataset name (their `--dataset`).
KOJIMA_ANSWER_TYPES = {
    "gsm8k": AnswerType.NUMBER,
    "svamp": AnswerType.NUMBER,
    "multiarith": AnswerType.NUMBER,
    "addsub": AnswerType.NUMBER,
    "singleeq": AnswerType.NUMBER,
    "strategyqa": AnswerType.YES_NO,
    "coin_flip": AnswerType.YES_NO,
    "last_letters": AnswerType.LETTERS,
    "aqua": AnswerType.MULTIPLE_CHOICE,
    "commonsensqa": AnswerType.MULTIPLE_CHOICE,
    "bigbench_date": AnswerType.DATE_OPTION,
    "object_tracking": AnswerType.OPTION_TEXT,
}
MINIMUM_AGREEMENT = 98.0  # Percent, per log (issue 2).

# Disagreement classes, each a reason the log's verdict differs from ours.
# The log scores `pred_mode == GT` as strings after its own cleanser (first
# number / first capital A-E / ... of the stage-2 text); we judge the whole
# completion. Every class is checked by `classify_disagreement`, in order.
GOLD_THOUSANDS_SEPARATOR = "gold_thousands_separator"
GOLD_FLOAT_NOISE = "gold_float_noise"
DECIMAL_ZEROS = "decimal_zeros"
FRACTION_WITH_DECIMAL = "fraction_with_decimal"
SEPARATED_LETTERS = "separated_letters"
HEDGE = "hedge"
OPTION_TEXT = "option_text"
LOG_LETTER_INSIDE_WORD = "log_letter_inside_word"
EMPTY_FINAL_MARKER = "empty_final_marker"
NUMBER_IN_WORDS = "number_in_words"
ANSWER_BEFORE_TRIGGER = "answer_before_trigger"
OTHER = "other"
DISAGREEMENT_CLASSES = {
    GOLD_THOUSANDS_SEPARATOR: (
        "GT has thousands separators ('40,000'); the log compares strings, "
        "so its correct '40000' is scored wrong"),
    GOLD_FLOAT_NOISE: (
        "GT carries float noise ('0.6666666666666666'); the prediction equals it "
        "within our 1e-6 tolerance but not as a string"),
    DECIMAL_ZEROS: (
        "trailing zeros: the log's prediction equals GT as a number but not as a "
        "string ('14.00' vs '14')"),
    FRACTION_WITH_DECIMAL: (
        "a fraction written with its decimal ('3/8 or 0.375'): the log takes the "
        "numerator, we read the decimal (digits touching '/' are no number)"),
    SEPARATED_LETTERS: (
        "stage 2 spells the letters out ('\"n-a-e-y\"'); the log keeps the "
        "hyphens, we read the letters"),
    HEDGE: (
        "the answer hedges between two options ('(A) or (B)'): the log takes the "
        "first, we count no answer"),
    OPTION_TEXT: (
        "the answer names an option's text (or date) instead of its letter: we "
        "map it to the letter, the log's letter search misses it"),
    LOG_LETTER_INSIDE_WORD: (
        "the log's letter is a capital inside a word of the answer ('Claire' -> "
        "C); we read only standalone or parenthesised letters"),
    EMPTY_FINAL_MARKER: (
        "nothing follows the final answer marker (empty stage 2): the log has no "
        "prediction, we read the previous answer statement, however far back"),
    NUMBER_IN_WORDS: (
        "stage 2 writes the number in words or Roman numerals ('twelve', 'XII') "
        "right after the CoT stated it in digits; we read the digits"),
    ANSWER_BEFORE_TRIGGER: (
        "stage 2 gives no answer ('the same for both questions'), the CoT's "
        "last sentence, right before the trigger, does ('The answer is yes.')"),
    OTHER: "not explained: inspect it (the command fails while any is left)",
}


@dataclasses.dataclass(frozen=True)
class Disagreement:
  index: int
  category: str
  log_prediction: str
  our_prediction: str | None
  gold: str


@dataclasses.dataclass(frozen=True)
class LogAgreement:
  """Our verdicts against one log's verdicts."""

  name: str
  dataset: str
  records: int
  log_correct: int
  our_correct: int
  footer_accuracy: float
  disagreements: tuple[Disagreement, ...]

  @property
  def log_accuracy(self) -> float:
    return 100.0 * self.log_correct / self.records

  @property
  def our_accuracy(self) -> float:
    return 100.0 * self.our_correct / self.records

  @property
  def agreement(self) -> float:
    return 100.0 * (self.records - len(self.disagreements)) / self.records

  def counts_by_class(self) -> dict[str, int]:
    return dict(collections.Counter(d.category for d in self.disagreements))


def choices_from_question(question: str) -> tuple[tuple[str, str], ...] | None:
  """Kojima's choice datasets append "Answer Choices: (A) x (B) y ..."."""
  return alignment.split_choices(question)[1]


def _is_float_noise(gold: str) -> bool:
  _, _, decimals = gold.partition(".")
  return len(decimals) > 6


def classify_disagreement(log: kojima_logs.KojimaLog,
                          record: kojima_logs.KojimaRecord,
                          answer_type: AnswerType,
                          verdict: answers.Verdict,
                          choices: answers.Choices = None) -> str:
  """Names why the log's verdict and ours (`verdict`) differ.

  `choices` must be the ones `judge` saw (the log's own lettering), so an
  answer given as option text is read here exactly as there.
  """
  predicted, gold = record.pred_mode, record.gold
  stage_two = record.answer_text
  if verdict.rule == "hedge":
    return HEDGE
  is_number = answer_type == AnswerType.NUMBER
  if verdict.correct and is_number and predicted:
    if "," in gold and predicted == gold.replace(",", ""):
      return GOLD_THOUSANDS_SEPARATOR
    if answers.answers_match(predicted, gold, answer_type):
      return GOLD_FLOAT_NOISE if _is_float_noise(gold) else DECIMAL_ZEROS
    if re.search(r"\d\s*/\s*\d", stage_two):
      return FRACTION_WITH_DECIMAL
  if (verdict.correct and answer_type == AnswerType.LETTERS
      and re.fullmatch(r"[a-z]([- ]?[a-z])*", predicted or "")
      and re.sub(r"[- ]", "", predicted) == gold):
    return SEPARATED_LETTERS
  if verdict.rule.endswith(("choice_text", "_date")):
    return OPTION_TEXT
  if (predicted and len(predicted) == 1 and predicted.isupper()
      and re.search(rf"(?<![A-Za-z]){predicted}(?![A-Za-z])", stage_two) is None
      and re.search(rf"[A-Za-z]{predicted}|{predicted}[A-Za-z]", stage_two)):
    return LOG_LETTER_INSIDE_WORD
  if verdict.correct and not predicted:
    if not re.search(r"[^\W_]", stage_two):
      return EMPTY_FINAL_MARKER
    if is_number and not re.search(r"\d", stage_two):
      return NUMBER_IN_WORDS
    trigger = log.zero_shot_trigger if log.is_direct else log.trigger
    own = answers.extract_answer(trigger + stage_two, answer_type, choices)
    if own.answer is None:
      return ANSWER_BEFORE_TRIGGER
  return OTHER


def log_agreement(log: kojima_logs.KojimaLog) -> LogAgreement:
  """Judges every record of `log` and compares with the log's verdicts.

  We judge `log.completion(record)`: the CoT, the trigger the authors'
  code appended and the stage-2 answer, i.e. the teacher's whole completion
  after "Let's think step by step.". That is the text the distillation filter
  sees from a teacher (rationale plus answer statement), and the trigger is
  an answer marker, so our marker rule reads the same stage-2 answer the
  authors' cleanser reads. Judging the CoT alone would score a different
  thing (many CoTs stop mid-sentence at 128 tokens); judging the stage-2 text
  alone would bypass the marker rule that students' outputs go through.
  GT is passed as logged; `judge` normalises it (thousands separators).
  """
  if log.dataset not in KOJIMA_ANSWER_TYPES:
    raise ValueError(f"{log.path}: no answer type known for dataset "
                     f"{log.dataset!r} (known: {sorted(KOJIMA_ANSWER_TYPES)})")
  answer_type = KOJIMA_ANSWER_TYPES[log.dataset]
  our_correct, disagreements = 0, []
  for record in log.records:
    choices = choices_from_question(record.question)
    verdict = answers.judge(log.completion(record), record.gold, answer_type, choices)
    our_correct += verdict.correct
    if verdict.correct != record.log_correct:
      disagreements.append(Disagreement(
          index=record.index,
          category=classify_disagreement(log, record, answer_type, verdict, choices),
          log_prediction=record.pred_mode, our_prediction=verdict.predicted,
          gold=record.gold))
  return LogAgreement(
      name=pathlib.Path(log.path).name, dataset=log.dataset,
      records=len(log.records),
      log_correct=sum(r.log_correct for r in log.records),
      our_correct=our_correct, footer_accuracy=log.accuracy,
      disagreements=tuple(disagreements))


def default_logs_dir() -> pathlib.Path | None:
  data_dir = os.environ.get("COT_DISTILL_DATA_DIR")
  return pathlib.Path(data_dir) / "teacher_outputs" if data_dir else None


def format_table(results: list[LogAgreement]) -> str:
  header = (f"{'log':<32} {'records':>7} {'log acc':>8} {'our acc':>8} "
            f"{'agreement':>9}  disagreements by class")
  lines = [header, "-" * len(header)]
  for result in results:
    classes = ", ".join(f"{name}={count}" for name, count
                        in sorted(result.counts_by_class().items())) or "-"
    lines.append(
        f"{result.name:<32} {result.records:>7} {result.log_accuracy:>7.2f}% "
        f"{result.our_accuracy:>7.2f}% {result.agreement:>8.2f}%  {classes}")
  return "\n".join(lines)


def run_agreement(args: argparse.Namespace) -> int:
  logs_dir = pathlib.Path(args.logs_dir) if args.logs_dir else default_logs_dir()
  if logs_dir is None:
    print("error: give --logs-dir or set COT_DISTILL_DATA_DIR (logs are read "
          "from $COT_DISTILL_DATA_DIR/teacher_outputs)", file=sys.stderr)
    return 2
  paths = sorted(logs_dir.glob("*.log"))
  if not paths:
    print(f"error: no *.log files in {logs_dir}", file=sys.stderr)
    return 2
  results = []
  for path in paths:
    try:
      log = kojima_logs.parse_log(path)
      results.append(log_agreement(log))
    except (OSError, ValueError) as error:
      print(f"error: {error}", file=sys.stderr)
      return 1
    if abs(results[-1].log_accuracy - log.accuracy) > 1e-6:
      print(f"warning: {path.name}: footer accuracy {log.accuracy} differs from "
            f"pred_mode == GT ({results[-1].log_accuracy})", file=sys.stderr)
  print(format_table(results))
  if args.verbose_disagreements:
    for result in results:
      for item in result.disagreements:
        print(f"  {result.name} record {item.index}: {item.category}: log "
              f"{item.log_prediction!r}, ours {item.our_prediction!r}, GT {item.gold!r}")
  used = sorted({d.category for r in results for d in r.disagreements})
  for name in used:
    print(f"{name}: {DISAGREEMENT_CLASSES[name]}")
  low = [r.name for r in results if r.agreement < args.min_agreement]
  if low:
    print(f"agreement below {args.min_agreement}% for: {', '.join(low)}",
          file=sys.stderr)
    return 1
  unexplained = [r.name for r in results if r.counts_by_class().get(OTHER)]
  if unexplained:
    print(f"unclassified disagreements ({OTHER}) in: {', '.join(unexplained)}; "
          "see --verbose-disagreements", file=sys.stderr)
    return 1
  return 0


def run_extract(args: argparse.Namespace) -> int:
  extraction = answers.extract_answer(args.text, args.type)
  print(f"answer: {extraction.answer!r}  rule: {extraction.rule}")
  if args.gold is not None:
    print(f"correct: {answers.answers_match(extraction.answer, args.gold, args.type)}")
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "answers", help="answer extraction: check it on real teacher logs")
  commands = parser.add_subparsers(dest="answers_command", metavar="ACTION")
  commands.required = True

  agreement = commands.add_parser(
      "agreement", help="our verdicts vs the verdicts in Kojima et al.'s logs")
  agreement.add_argument(
      "--logs-dir", default=None,
      help="folder of *.log files (default: $COT_DISTILL_DATA_DIR/teacher_outputs)")
  agreement.add_argument(
      "--min-agreement", type=float, default=MINIMUM_AGREEMENT,
      help="exit 1 if any log agrees less than this (percent)")
  agreement.add_argument("--verbose-disagreements", action="store_true",
                         help="list every disagreeing record")
  agreement.set_defaults(func=run_agreement)

  extract = commands.add_parser("extract", help="extract the answer from TEXT")
  extract.add_argument("text")
  extract.add_argument("--type", required=True,
                       choices=[t.value for t in AnswerType])
  extract.add_argument("--gold", default=None)
  extract.set_defaults(func=run_extract)
