"""The annotation filter: which sampled chains of thought become training data.

The paper keeps a teacher CoT only when its final answer equals the gold
answer. Every sample of a question goes through `classify_samples`, which
applies these checks in order and gives the first reason that fires:

  failed        the request failed for good (reason in `error`, its class
                in `failure_class`);
  oversized_response  the completion was longer than the client's cap
                derived from max_tokens; stored cut to the cap;
  truncated     finish_reason "length": the CoT was cut off by max_tokens,
                so its ending (and answer) cannot be trusted;
  empty         nothing but whitespace;
  no_answer     `answers.judge` found no answer;
  wrong_answer  the extracted answer differs from gold;
  arithmetic_error, step_inconsistent, hint_parroting
                the answer is right but the rationale verifier
                (`cot_distill.verifier`) finds a wrong step: an equation that
                does not hold, a step that contradicts the question or the
                chain's own answer, or a hinted chain that restates the given
                answer instead of deriving it (only with verify="filter");
  duplicate     a correct CoT identical (after collapsing whitespace) to an
                earlier correct sample of the same question; diverse
                reasoning keeps all correct DISTINCT CoTs;
  (kept)        correct and new.

Importers of existing teacher outputs use the same function, so imported and
freshly annotated records are filtered identically.

Verification (`verify`): "off" skips the verifier; "report" runs it on every
correct sample and stores its verdict in the record's `verification` field
(kept records that fail it are what "filter" would drop, counted in the
manifest's `counts.verifier_flagged`); "filter" drops them with the
verifier's reason and keeps the verdict in the dropped record.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Sequence

from cot_distill import answers
from cot_distill import verifier
from cot_distill.data.example import Example
from cot_distill.teacher import records as records_lib


@dataclasses.dataclass(frozen=True)
class Sample:
  """One generated chain of thought (or a failure) for one question.

  Attributes:
    index: sample index within the question (0..n-1).
    rationale: the generated chain of thought, verbatim ("" when failed).
    judged_text: the text the answer judge reads; the rationale itself,
      except for two-stage zero-shot prompts (rationale + trigger + answer).
    finish_reason: as reported by the endpoint (None when unknown).
    prompt_tokens, completion_tokens: this sample's share of the usage.
    error: the failure reason when the request failed, else None.
    failure_class: the failure's class (`client.FAILURE_CLASSES`).
    oversized: the completion was cut to the client's response cap.
    extra: more fields to store in the record (e.g. the stage-2 answer).
  """

  index: int
  rationale: str
  judged_text: str
  finish_reason: str | None = None
  prompt_tokens: int = 0
  completion_tokens: int = 0
  error: str | None = None
  failure_class: str | None = None
  oversized: bool = False
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def example_fields(example: Example) -> dict[str, Any]:
  """`example.to_dict()` without `dataclasses.asdict`'s deep copy.

  Same keys and values (a test checks it); asdict deep-copies `meta`, which
  cost a third of a millisecond per question in the runner's hot loop.
  """
  fields = {field.name: getattr(example, field.name) for field in dataclasses.fields(example)}
  fields["answer_type"] = example.answer_type.value
  fields["choices"] = ([list(c) for c in example.choices]
                       if example.choices is not None else None)
  fields["meta"] = json.loads(json.dumps(dict(example.meta))) if example.meta else {}
  return fields


VERIFY_MODES = ("off", "report", "filter")


def _normal(text: str) -> str:
  return " ".join(text.split())


def classify_samples(
    example: Example, samples: Sequence[Sample], *,
    teacher: Mapping[str, Any], prompt: Mapping[str, Any],
    judge: Callable[..., answers.Verdict] = answers.judge,
    created_at: str | None = None, verify: str = "off",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Judges every sample of one question; returns (kept, dropped) records.

  Args:
    example: the question with its gold answer.
    samples: all samples for it, in sample-index order.
    teacher: the record's `teacher` field (model, sampling params, endpoint).
    prompt: the record's `prompt` field (template id/hash, exemplar set id,
      hinted, style, mode).
    judge: the answer judge (always `answers.judge` outside tests).
    created_at: timestamp for every record (default: now, UTC).
    verify: "off", "report" or "filter" (module docstring).
  """
  if verify not in VERIFY_MODES:
    raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
  created_at = created_at or records_lib.utc_now()
  base = example_fields(example)
  kept, dropped = [], []
  seen_correct: set[str] = set()
  for sample in samples:
    record = dict(base)
    record.update(
        rationale=sample.rationale, predicted_answer=None, correct=False,
        extraction_rule=None, sample_index=sample.index, teacher=dict(teacher),
        prompt=dict(prompt),
        usage={"prompt_tokens": sample.prompt_tokens,
               "completion_tokens": sample.completion_tokens},
        finish_reason=sample.finish_reason, created_at=created_at)
    record.update(sample.extra)
    reason = None
    if sample.error is not None:
      reason = "failed"
      record["error"] = sample.error
      record["failure_class"] = sample.failure_class or sample.error.split(":", 1)[0]
    elif sample.oversized:
      reason = "oversized_response"
    elif sample.finish_reason == "length":
      reason = "truncated"
    elif not sample.rationale.strip():
      reason = "empty"
    if reason is None:
      verdict = judge(sample.judged_text, example.answer, example.answer_type, example.choices)
      record.update(predicted_answer=verdict.predicted, correct=verdict.correct,
                    extraction_rule=verdict.rule)
      if verdict.predicted is None:
        reason = "no_answer"
      elif not verdict.correct:
        reason = "wrong_answer"
      elif verify != "off":
        verification = verifier.verify(
            question=example.question, chain=sample.judged_text, answer=verdict.predicted,
            answer_type=example.answer_type, dataset=example.dataset,
            hinted=bool(prompt.get("hinted")), choices=example.choices)
        record["verification"] = verification.to_dict()
        if verify == "filter" and not verification.passed:
          reason = verification.reason
      if reason is None:  # Correct (and sound, when filtering).
        normal = _normal(sample.rationale)
        if normal in seen_correct:
          reason = "duplicate"
        seen_correct.add(normal)
    if reason is None:
      kept.append(record)
    else:
      record["drop_reason"] = reason
      dropped.append(record)
  return kept, dropped


def apportion(total: int, weights: Sequence[float]) -> list[int]:
  """Splits an integer total in proportion to weights, summing exactly.

  A response with n choices reports one usage figure; each sample's record
  gets its share (equal shares when all weights are 0).
  """
  if not weights:
    return []
  weight_sum = float(sum(weights))
  if weight_sum <= 0:
    weights = [1.0] * len(weights)
    weight_sum = float(len(weights))
  shares = [int(total * w / weight_sum) for w in weights]
  remainder = total - sum(shares)
  order = sorted(range(len(weights)), key=lambda i: -weights[i])
  for position in range(remainder):
    shares[order[position % len(order)]] += 1
  return shares
