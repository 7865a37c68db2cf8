"""Prompt templates for teacher annotation: hinted, few-shot and zero-shot CoT.

Three modes (`PromptMode`):

* HINTED (default, Magister et al. 2023): every exemplar gives the target
  answer right after its question and before its chain of thought, and the
  query gives the training example's gold answer the same way, so the
  teacher writes a rationale for a known answer. Completion style:

      Q: <question>
      Answer: <answer>
      Explanation: <rationale> The answer is <answer>.

      ... (8 exemplars) ...

      Q: <query question>
      Answer: <gold answer>
      Explanation:

  The teacher is still asked to end with "The answer is X.", and only that
  generated text is judged, so a rationale that argues its way to another
  answer is dropped by the filter.
* FEW_SHOT (Wei et al. 2022): "Q: <question>\\nA: <rationale> The answer is
  X." exemplars, then "Q: <query>\\nA:".
* ZERO_SHOT (Kojima et al. 2022), two stages: "Q: <query>\\nA: Let's think
  step by step." produces the chain of thought; then that prompt + CoT + " " +
  an answer trigger ("\\nTherefore, the answer (arabic numerals) is")
  produces the answer.

Two styles (`PromptStyle`): COMPLETION (one prompt string, for
/v1/completions and base models) and CHAT (messages for /v1/chat/completions:
a system instruction, exemplars as user/assistant turns, the query as the
last user turn).

Each `PromptTemplate` has a readable id ("hinted-completion-v1") and a hash of
every string that shapes the prompt, recorded with the exemplar-set id in each
CoT record and in the run manifest.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Sequence

from cot_distill.data.example import AnswerType, Example
from cot_distill.teacher.exemplars import Exemplar, ExemplarSet

# 2: stop sequences for one-line exemplar sets and both zero-shot stages.
TEMPLATE_VERSION = 2
ZERO_SHOT_COT_TRIGGER = "Let's think step by step."

# Kojima et al.'s stage-2 answer triggers, per answer type.
_ANSWER_TRIGGERS = {
    AnswerType.NUMBER: "\nTherefore, the answer (arabic numerals) is",
    AnswerType.YES_NO: "\nTherefore, the answer (Yes or No) is",
    AnswerType.LETTERS: "\nTherefore, the answer is",
}


class PromptMode(str, enum.Enum):
  HINTED = "hinted"
  FEW_SHOT = "few_shot"
  ZERO_SHOT = "zero_shot"


class PromptStyle(str, enum.Enum):
  COMPLETION = "completion"
  CHAT = "chat"


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A ready request body part: `text` for completion style, `messages` for chat."""

  style: PromptStyle
  text: str | None = None
  messages: tuple[dict[str, str], ...] | None = None
  stop: tuple[str, ...] | None = None

  @property
  def payload(self):
    """What goes in the request: the prompt string or the message list."""
    return self.text if self.style == PromptStyle.COMPLETION else list(self.messages)


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """All strings that shape a prompt; `template_hash` covers every field."""

  mode: PromptMode
  style: PromptStyle
  question_prefix: str = "Q: "
  hint_prefix: str = "Answer: "
  hinted_rationale_prefix: str = "Explanation:"
  rationale_prefix: str = "A:"
  exemplar_separator: str = "\n\n"
  choices_prefix: str = "Answer Choices:"
  # Completion-style stops. A model that has written its answer sentence
  # may go on writing (another "Answer:", a note, a new question) until
  # max_tokens, and the sample is then dropped as truncated although its
  # answer was complete. When every exemplar's rationale is one line, the
  # template is one-line and stops at the end of the line; otherwise at the
  # next question.
  completion_stop: tuple[str, ...] = ("\n\nQ:", "\nQ:")
  one_line_stop: tuple[str, ...] = ("\n",)
  # Zero-shot: stage 1 (the chain of thought) ends where a new question
  # would start; stage 2 (the answer after the trigger) is one line.
  zero_shot_stop: tuple[str, ...] = ("\n\nQ:", "\nQ:")
  answer_stage_stop: tuple[str, ...] = ("\n",)
  system_hinted: str = (
      "You are given a question together with its correct answer. Explain step "
      "by step how to reach that answer, then finish with \"The answer is X.\"")
  system_unhinted: str = (
      "Answer the question by reasoning step by step, then finish with "
      "\"The answer is X.\"")
  zero_shot_trigger: str = ZERO_SHOT_COT_TRIGGER
  version: int = TEMPLATE_VERSION

  @property
  def template_id(self) -> str:
    return f"{self.mode.value}-{self.style.value}-v{self.version}"

  @property
  def template_hash(self) -> str:
    fields = dataclasses.asdict(self)
    fields["mode"], fields["style"] = self.mode.value, self.style.value
    fields["answer_triggers"] = {k.value: v for k, v in _ANSWER_TRIGGERS.items()}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

  @property
  def hinted(self) -> bool:
    return self.mode == PromptMode.HINTED


def format_choices(choices: Sequence[tuple[str, str]] | None) -> str:
  """"(A) 50 (B) 45 ..." as in Kojima et al.'s multiple-choice prompts."""
  if not choices:
    return ""
  return " ".join(f"({label}) {text}" for label, text in choices)


def answer_trigger(answer_type: AnswerType,
                   choices: Sequence[tuple[str, str]] | None) -> str:
  """The zero-shot stage-2 trigger ("\\nTherefore, among A through E, the answer is")."""
  answer_type = AnswerType(answer_type)
  if answer_type in _ANSWER_TRIGGERS:
    return _ANSWER_TRIGGERS[answer_type]
  labels = [label for label, _ in choices] if choices else ["A", "E"]
  return f"\nTherefore, among {labels[0]} through {labels[-1]}, the answer is"


class PromptBuilder:
  """Builds prompts for one (template, exemplar set); the exemplar part is
  rendered once and reused for every query."""

  def __init__(self, template: PromptTemplate, exemplar_set: ExemplarSet | None):
    if template.mode != PromptMode.ZERO_SHOT and not exemplar_set:
      raise ValueError(f"{template.mode.value} prompts need an exemplar set")
    self.template = template
    self.exemplar_set = exemplar_set if template.mode != PromptMode.ZERO_SHOT else None
    exemplars = self.exemplar_set.exemplars if self.exemplar_set else ()
    self._completion_prefix = "".join(
        self._completion_block(e) + template.exemplar_separator for e in exemplars)
    self._chat_prefix = tuple(
        message for e in exemplars for message in self._chat_turns(e))
    self.one_line = bool(exemplars) and not any("\n" in e.rationale.strip()
                                                for e in exemplars)

  @property
  def exemplar_set_id(self) -> str | None:
    return self.exemplar_set.id if self.exemplar_set else None

  # -- pieces ----------------------------------------------------------------

  def _question_text(self, question: str, choices) -> str:
    text = question.strip()
    if choices:
      text += f" {self.template.choices_prefix} {format_choices(choices)}"
    return text

  def _hint(self, answer: str, choices) -> str:
    if choices:
      texts = dict(choices)
      if answer in texts:
        return f"({answer}) {texts[answer]}"
    return answer

  def _completion_block(self, exemplar: Exemplar) -> str:
    t = self.template
    question = t.question_prefix + self._question_text(exemplar.question, exemplar.choices)
    target = f"{exemplar.rationale} The answer is {exemplar.answer}."
    if t.hinted:
      return (f"{question}\n{t.hint_prefix}{self._hint(exemplar.answer, exemplar.choices)}\n"
              f"{t.hinted_rationale_prefix} {target}")
    return f"{question}\n{t.rationale_prefix} {target}"

  def _user_turn(self, question: str, choices, answer: str) -> str:
    t = self.template
    text = t.question_prefix + self._question_text(question, choices)
    if t.hinted:
      text += f"\n{t.hint_prefix}{self._hint(answer, choices)}"
    return text

  def _chat_turns(self, exemplar: Exemplar):
    yield {"role": "user",
           "content": self._user_turn(exemplar.question, exemplar.choices, exemplar.answer)}
    yield {"role": "assistant",
           "content": f"{exemplar.rationale} The answer is {exemplar.answer}."}

  # -- prompts ---------------------------------------------------------------

  def build(self, example: Example) -> Prompt:
    """The (stage-1) prompt for an example."""
    t = self.template
    if t.style == PromptStyle.COMPLETION:
      question = t.question_prefix + self._question_text(example.question, example.choices)
      if t.mode == PromptMode.ZERO_SHOT:
        return Prompt(t.style, text=f"{question}\n{t.rationale_prefix} {t.zero_shot_trigger}",
                      stop=t.zero_shot_stop)
      if t.hinted:
        query = (f"{question}\n{t.hint_prefix}{self._hint(example.answer, example.choices)}\n"
                 f"{t.hinted_rationale_prefix}")
      else:
        query = f"{question}\n{t.rationale_prefix}"
      stop = t.one_line_stop if self.one_line else t.completion_stop
      return Prompt(t.style, text=self._completion_prefix + query, stop=stop)
    if t.mode == PromptMode.ZERO_SHOT:
      content = (t.question_prefix + self._question_text(example.question, example.choices)
                 + f"\n{t.rationale_prefix} {t.zero_shot_trigger}")
      return Prompt(t.style, messages=({"role": "user", "content": content},))
    system = t.system_hinted if t.hinted else t.system_unhinted
    messages = ({"role": "system", "content": system},) + self._chat_prefix + (
        {"role": "user", "content": self._user_turn(example.question, example.choices,
                                                    example.answer)},)
    return Prompt(t.style, messages=messages)

  def build_answer_stage(self, example: Example, first: Prompt, rationale: str) -> Prompt:
    """Zero-shot stage 2: the stage-1 prompt, its chain of thought, the trigger."""
    trigger = answer_trigger(example.answer_type, example.choices)
    if first.style == PromptStyle.COMPLETION:
      return Prompt(first.style, text=f"{first.text}{rationale} {trigger}",
                    stop=self.template.answer_stage_stop)
    messages = first.messages + (
        {"role": "assistant", "content": rationale.strip()},
        {"role": "user", "content": trigger.strip()},)
    return Prompt(first.style, messages=messages)

  def judged_text(self, example: Example, rationale: str, answer_text: str | None) -> str:
    """The generated text the answer judge reads: the chain of thought, plus
    for zero-shot the trigger and the stage-2 answer (as Kojima et al.'s
    logs print them)."""
    if answer_text is None:
      return rationale
    return f"{rationale} {answer_trigger(example.answer_type, example.choices)}{answer_text}"
