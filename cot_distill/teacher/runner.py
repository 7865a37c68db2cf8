"""The annotation runner: examples -> prompts -> teacher -> filter -> records.

`annotate(config, options)` annotates every example of a dataset split with
`samples` chains of thought from an OpenAI-compatible teacher and writes a
run directory (`cot_distill.teacher.records`). It is resumable by design:
started again with the same config on the same directory (after a crash, a
SIGKILL, Ctrl-C), it repairs the files, skips finished questions, and, thanks
to the response cache, re-requests nothing that was already answered.

`AnnotationConfig` holds everything that shapes the records; a resume with a
different config is refused rather than silently mixing two runs.
`ExecutionOptions` (concurrency, rate limits, timeouts, cache location) may
change between sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
from typing import Any, Sequence

from cot_distill.data.example import Example
from cot_distill.teacher import cache as cache_lib
from cot_distill.teacher import client as client_lib
from cot_distill.teacher import concurrency as concurrency_lib
from cot_distill.teacher import exemplars as exemplars_lib
from cot_distill.teacher import inputs as inputs_lib
from cot_distill.teacher import filtering
from cot_distill.teacher import prompts as prompts_lib
from cot_distill.teacher import records as records_lib

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
# Config fields that may differ when a run is resumed: how to reach the
# teacher and where the examples live, not what the prompts, the examples or
# the samples are. Each change is recorded in the manifest's `changes`.
_RESUMABLE_CHANGES = ("teacher_url", "model", "api_key_env", "separate_requests", "data_dir",
                      "limit", "examples_path")
# Execution options recorded in the manifest (changes are recorded too).
_RECORDED_OPTIONS = ("concurrency", "requests_per_minute", "tokens_per_minute",
                     "request_timeout_s", "max_attempts", "max_consecutive_failures")

# Manifest statuses.
RUNNING, COMPLETE, PARTIAL, FAILED = "running", "complete", "partial", "failed"


class ConfigMismatchError(ValueError):
  """The output directory holds a run with a different configuration."""


InputError = inputs_lib.InputError


@dataclasses.dataclass(frozen=True)
class AnnotationConfig:
  """What to annotate and how; recorded in the manifest, checked on resume.

  Attributes:
    dataset, split: registry name and split, or a generated task
      ("coin_flip_gen", "last_letters_gen") with `generate_*`.
    teacher_url: OpenAI-compatible base URL ("http://host:8000/v1").
    model: model name sent with each request.
    prompt_mode: "hinted" (paper), "few_shot" (Wei et al.), "zero_shot" (Kojima et al.).
    style: "completion" or "chat".
    samples: chains of thought per question (diverse reasoning when > 1).
    temperature, top_p, max_tokens, seed: sampling parameters.
    stop: stop sequences; None uses the template's (completion style).
    answer_max_tokens: stage-2 budget of zero-shot prompts.
    separate_requests: send `samples` requests with n=1 (seed + i) instead
      of one request with n (for servers without `n`).
    exemplars_path: exemplar file; None uses the shipped default set.
    shots: use only the first k exemplars.
    api_key_env: environment variable holding the API key (never stored).
    data_dir: benchmark data directory for the registry loader.
    examples_path: a JSONL file of Example dicts instead of a loader.
    generate_n, generate_steps, generate_seed: generated symbolic data.
    limit: annotate only the first `limit` examples.
    verify: the rationale verifier in the filter: "filter" (default) drops
      correct chains with a wrong step (`filtering` module docstring),
      "report" keeps them and counts them in `counts.verifier_flagged`,
      "off" skips it. Runs from before the option resume as "off".
  """

  dataset: str
  split: str
  teacher_url: str
  model: str
  prompt_mode: str = "hinted"
  style: str = "completion"
  samples: int = 1
  temperature: float = 0.7
  top_p: float = 1.0
  max_tokens: int = 256
  seed: int | None = 0
  stop: tuple[str, ...] | None = None
  answer_max_tokens: int = 32
  separate_requests: bool = False
  exemplars_path: str | None = None
  shots: int | None = None
  api_key_env: str = "OPENAI_API_KEY"
  data_dir: str | None = None
  examples_path: str | None = None
  generate_n: int | None = None
  generate_steps: int | None = None
  generate_seed: int | None = None
  limit: int | None = None
  verify: str = "filter"

  def to_dict(self) -> dict[str, Any]:
    data = dataclasses.asdict(self)
    data["stop"] = list(self.stop) if self.stop is not None else None
    return data

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "AnnotationConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs.setdefault("verify", "off")  # Runs from before the verifier.
    if kwargs.get("stop") is not None:
      kwargs["stop"] = tuple(kwargs["stop"])
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class ExecutionOptions:
  """How to run; free to change between sessions of one run."""

  concurrency: int = 16  # The most requests in flight (adaptive below it).
  requests_per_minute: float | None = None
  tokens_per_minute: float | None = None
  # Per attempt. With adaptive concurrency a request waits little in the
  # server's queue, so this bounds generation, and a hung teacher costs about
  # one or two of it before the circuit breaker stops the run.
  request_timeout_s: float = 60.0
  max_attempts: int = 6
  backoff_base_s: float = 0.5
  backoff_cap_s: float = 30.0
  cache_dir: str | None = None  # None: cache.default_cache_dir().
  use_cache: bool = True
  progress: bool = True
  manifest_interval_s: float = 1.0
  retry_failed: bool = False  # Redo questions whose requests failed for good.
  max_consecutive_failures: int = 5  # Circuit breaker (auth errors stop at once).
  adaptive_concurrency: bool = True  # AIMD below `concurrency`; False: fixed.
  chars_per_token_cap: float = 16.0  # Completions over max_tokens x this are cut.
  check_model: bool = True  # GET /v1/models at start, where the server offers it.


# ---------------------------------------------------------------------------
# Inputs.


def load_examples(config: AnnotationConfig) -> list[Example]:
  """The examples to annotate (before `limit`)."""
  if config.examples_path:
    return read_examples_file(config.examples_path)
  if config.generate_n is not None:
    from cot_distill.data import symbolic  # pylint: disable=g-import-not-at-top
    generators = {"coin_flip_gen": (symbolic.generate_coin_flip, "num_people"),
                  "last_letters_gen": (symbolic.generate_last_letters, "num_words")}
    if config.dataset not in generators:
      raise ValueError(f"--generate-n works for {sorted(generators)}, not {config.dataset!r}")
    generate, steps_name = generators[config.dataset]
    kwargs = {"n": config.generate_n, "seed": config.generate_seed or 0,
              "split": config.split}
    if config.generate_steps is not None:
      kwargs[steps_name] = config.generate_steps
    return list(generate(**kwargs))
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  return list(registry.load(config.dataset, config.split, data_dir=config.data_dir))


def read_examples_file(path: str | os.PathLike) -> list[Example]:
  """Reads and checks a JSONL file of Example dicts (see `inputs.py`)."""
  return inputs_lib.read_examples_file(path)


def dataset_fingerprint(examples: Sequence[Example]) -> str:
  """Hash of ids, questions and answers: tells whether a resume sees the same data."""
  digest = hashlib.sha256()
  for example in examples:
    digest.update(f"{example.id}\t{example.question}\t{example.answer}\n".encode("utf-8"))
  return digest.hexdigest()[:16]


def make_prompt_builder(config: AnnotationConfig) -> prompts_lib.PromptBuilder:
  template = prompts_lib.PromptTemplate(mode=prompts_lib.PromptMode(config.prompt_mode),
                                        style=prompts_lib.PromptStyle(config.style))
  exemplar_set = None
  if template.mode != prompts_lib.PromptMode.ZERO_SHOT:
    exemplar_set = exemplars_lib.resolve(config.dataset, config.exemplars_path, config.shots)
  return prompts_lib.PromptBuilder(template, exemplar_set)


# ---------------------------------------------------------------------------
# One question.


class _QuestionAnnotator:
  """Turns one example into its filtered records (all network calls here)."""

  def __init__(self, config: AnnotationConfig, builder: prompts_lib.PromptBuilder,
               teacher: client_lib.TeacherClient):
    self.config = config
    self.builder = builder
    self.teacher = teacher
    template = builder.template
    self.kind = (client_lib.COMPLETION if template.style == prompts_lib.PromptStyle.COMPLETION
                 else client_lib.CHAT)
    self.teacher_field = {
        "model": config.model, "temperature": config.temperature, "top_p": config.top_p,
        "max_tokens": config.max_tokens, "n": config.samples, "seed": config.seed,
        "endpoint": "completions" if self.kind == client_lib.COMPLETION else "chat/completions"}
    self.prompt_field = {
        "template_id": template.template_id, "template_hash": template.template_hash,
        "exemplar_set_id": builder.exemplar_set_id, "hinted": template.hinted,
        "style": template.style.value, "mode": template.mode.value}

  def _params(self, prompt: prompts_lib.Prompt, n: int, seed: int | None):
    stop = self.config.stop if self.config.stop is not None else prompt.stop
    return client_lib.SamplingParams(
        temperature=self.config.temperature, top_p=self.config.top_p,
        max_tokens=self.config.max_tokens, stop=tuple(stop) if stop else None,
        seed=seed, n=n)

  def _separate(self) -> bool:
    return self.config.samples > 1 and (self.config.separate_requests or self.teacher.ignores_n)

  async def _first_stage(self, prompt: prompts_lib.Prompt) -> list[filtering.Sample]:
    n, seed = self.config.samples, self.config.seed
    if not self._separate():
      try:
        result = await self.teacher.generate(self.kind, prompt.payload,
                                             self._params(prompt, n, seed))
      except client_lib.NIgnoredError:
        pass  # The client logged it once; ask for the samples one by one.
      except client_lib.TeacherRequestError as error:
        return self._samples([(n, error)])
      else:
        return self._samples([(n, result)])
    requests = [(1, None if seed is None else seed + i) for i in range(n)]
    results = await asyncio.gather(
        *[self.teacher.generate(self.kind, prompt.payload, self._params(prompt, count, s))
          for count, s in requests], return_exceptions=True)
    return self._samples([(count, result) for (count, _), result in zip(requests, results)])

  @staticmethod
  def _samples(results) -> list[filtering.Sample]:
    """Samples from (count, response or TeacherRequestError) pairs."""
    samples: list[filtering.Sample] = []
    for count, result in results:
      if isinstance(result, client_lib.TeacherRequestError):
        samples += [filtering.Sample(len(samples) + i, "", "", error=result.reason,
                                     failure_class=result.failure_class)
                    for i in range(count)]
        continue
      if isinstance(result, BaseException):
        raise result  # CircuitOpenError (the run stops) or a bug.
      weights = [len(c.text) for c in result.choices]
      prompt_shares = filtering.apportion(result.prompt_tokens, [1.0] * len(weights))
      completion_shares = filtering.apportion(result.completion_tokens, weights)
      for choice, p, c in zip(result.choices, prompt_shares, completion_shares):
        samples.append(filtering.Sample(len(samples), choice.text, choice.text,
                                        choice.finish_reason, p, c, oversized=choice.oversized))
    return samples

  async def _second_stage(self, example: Example, first: prompts_lib.Prompt,
                          sample: filtering.Sample) -> filtering.Sample:
    """Zero-shot CoT: ask for the answer after the chain of thought."""
    if (sample.error or sample.oversized or sample.finish_reason == "length"
        or not sample.rationale.strip()):
      return sample
    prompt = self.builder.build_answer_stage(example, first, sample.rationale)
    params = client_lib.SamplingParams(temperature=0.0, top_p=1.0,
                                       max_tokens=self.config.answer_max_tokens,
                                       stop=prompt.stop, seed=self.config.seed, n=1)
    try:
      response = await self.teacher.generate(self.kind, prompt.payload, params)
    except client_lib.TeacherRequestError as error:
      return dataclasses.replace(sample, error=f"answer stage: {error.reason}",
                                 failure_class=error.failure_class)
    answer = response.choices[0]
    return dataclasses.replace(
        sample, judged_text=self.builder.judged_text(example, sample.rationale, answer.text),
        prompt_tokens=sample.prompt_tokens + response.prompt_tokens,
        completion_tokens=sample.completion_tokens + response.completion_tokens,
        oversized=answer.oversized, extra={"answer_completion": answer.text})

  async def annotate(self, example: Example):
    prompt = self.builder.build(example)
    samples = await self._first_stage(prompt)
    if self.builder.template.mode == prompts_lib.PromptMode.ZERO_SHOT:
      samples = list(await asyncio.gather(
          *[self._second_stage(example, prompt, s) for s in samples]))
    return filtering.classify_samples(example, samples, teacher=self.teacher_field,
                                      prompt=self.prompt_field, verify=self.config.verify)


# ---------------------------------------------------------------------------
# A session over a run directory.


def _resume_changes(previous: dict[str, Any], config: AnnotationConfig,
                    identity: dict[str, Any], options: ExecutionOptions,
                    directory: pathlib.Path) -> list[dict[str, Any]]:
  """What changed since the last session: connection settings are allowed
  (returned, to record); anything that shapes the records is refused."""
  old_config = dict(previous.get("config") or {})
  old_config.setdefault("verify", "off")  # Runs from before the verifier.
  new_config = config.to_dict()
  refused = [f"{name}: run {old_config.get(name)!r}, now {new_config.get(name)!r}"
             for name in sorted(set(old_config) | set(new_config))
             if name not in _RESUMABLE_CHANGES and old_config.get(name) != new_config.get(name)]
  old_identity = previous.get("identity") or {}
  refused += [f"{name}: run {old_identity.get(name)!r}, now {value!r}"
              for name, value in identity.items() if old_identity.get(name) != value]
  if refused:
    raise ConfigMismatchError(
        f"{directory / records_lib.MANIFEST_FILE}: the run there was made with other "
        f"settings ({'; '.join(refused)}); these shape the records and cannot change on "
        f"resume. Resume it as it was with `cot-distill annotate --resume {directory}` "
        "(connection settings such as --teacher-url, --model, --concurrency, --timeout, "
        "--rpm and --tpm may change), or choose a new --out")
  changes = [(name, old_config.get(name), new_config.get(name)) for name in _RESUMABLE_CHANGES
             if name in old_config and old_config.get(name) != new_config.get(name)]
  old_execution = previous.get("execution") or {}
  changes += [(name, old_execution[name], getattr(options, name)) for name in _RECORDED_OPTIONS
              if name in old_execution and old_execution[name] != getattr(options, name)]
  session = int(previous.get("sessions", 0)) + 1
  return [{"session": session, "at": records_lib.utc_now(), "field": name, "from": old,
           "to": new} for name, old, new in changes]


class _Progress:
  """tqdm bar: kept and drop counts by reason, tokens, the concurrency limit,
  and time-outs as soon as there are any (rate and ETA from tqdm)."""

  def __init__(self, total: int, initial: int, description: str, enabled: bool):
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    self.bar = tqdm_auto.tqdm(total=total, initial=initial, desc=description, unit="q",
                              disable=not enabled, dynamic_ncols=True, smoothing=0.05)
    self._last = 0.0
    self._timeouts_reported = 0

  def update(self, run: records_lib.RunDirectory, teacher: client_lib.TeacherClient,
             force: bool = False, count: bool = True) -> None:
    if count:
      self.bar.update(1)
    now = time.monotonic()
    if force or now - self._last > 0.5:
      self._last = now
      stats = teacher.stats
      postfix = {"kept": run.counts.get("kept", 0)}
      postfix.update({reason: run.counts[reason] for reason in records_lib.DROP_REASONS
                      if run.counts.get(reason)})
      timeouts = stats.reasons.get("timeout", 0)
      if timeouts:
        postfix["TIMEOUTS"] = timeouts
      postfix.update(tokens=run.tokens["prompt_tokens"] + run.tokens["completion_tokens"],
                     requests=stats.requests_sent, cached=stats.cache_hits,
                     limit=teacher.concurrency.allowed)
      self.bar.set_postfix(postfix, refresh=force)
      if timeouts > self._timeouts_reported:
        # Once per burst, also outside a terminal (the bar may be disabled).
        if not self._timeouts_reported or timeouts >= 2 * self._timeouts_reported:
          logger.warning("requests are timing out (%d so far, --timeout %gs); concurrency "
                         "is now %d", timeouts, teacher.request_timeout_s,
                         teacher.concurrency.allowed)
          self._timeouts_reported = timeouts
      if not count:
        self._last = 0.0  # The next answered question refreshes at once.

  def close(self) -> None:
    self.bar.close()


@dataclasses.dataclass
class _Session:
  """What one session learnt beyond the files: for the manifest."""

  stats: client_lib.ClientStats = dataclasses.field(default_factory=client_lib.ClientStats)
  stopped: concurrency_lib.CircuitOpenError | None = None
  ignores_n: bool = False
  served_models: list[str] | None = None


def run_status(counts: dict[str, Any], stopped: bool) -> str:
  """"complete": every question done and no sample failed; "failed":
  nothing was answered (every sample so far failed, or none was made before
  the run stopped); "partial": anything in between."""
  failed = counts["dropped"].get("failed", 0)
  answered = counts["samples"] - failed
  if not stopped and failed == 0 and counts["questions_done"] == counts["questions"]:
    return COMPLETE
  return FAILED if answered == 0 else PARTIAL


def failed_fraction(manifest: dict[str, Any]) -> float:
  """Share of all samples the run should have (questions x samples) that
  failed or were never made because the run stopped."""
  counts = manifest["counts"]
  samples = int((manifest.get("config") or {}).get("samples", 1))
  expected = counts["questions"] * samples
  missing = (counts["questions"] - counts["questions_done"]) * samples
  if expected == 0:
    return 0.0
  return (counts["dropped"].get("failed", 0) + missing) / expected


def exit_code(manifest: dict[str, Any], allow_failures: float = 0.0) -> int:
  """0 when at most `allow_failures` (a fraction) of the run's samples
  failed, counting the questions a stopped run never reached as failed;
  1 otherwise."""
  return 0 if failed_fraction(manifest) <= allow_failures + 1e-12 else 1


def _manifest(config, builder, examples_count, fingerprint, identity, run, session: _Session,
              previous, status, started_at, overlap, options, changes) -> dict[str, Any]:
  stats = session.stats
  earlier = (previous or {}).get("requests") or {}
  exemplar_set = builder.exemplar_set
  dropped = {reason: run.counts.get(reason, 0) for reason in records_lib.DROP_REASONS}
  counts = {"questions": examples_count, "questions_done": len(run.done_ids),
            "samples": sum(run.counts.values()), "kept": run.counts.get("kept", 0),
            "dropped": dropped, "failed_by_class": dict(sorted(run.failure_classes.items())),
            "verify": config.verify, "verifier_flagged": dict(sorted(run.flagged.items()))}
  if status != RUNNING:
    status = run_status(counts, session.stopped is not None)
  manifest = {
      "format_version": MANIFEST_VERSION,
      "kind": "annotation",
      "status": status,
      "created_at": (previous or {}).get("created_at", started_at),
      "updated_at": records_lib.utc_now(),
      "config": config.to_dict(),
      "identity": identity,
      "teacher": {"base_url": client_lib.normalize_base_url(config.teacher_url),
                  "model": config.model, "api_key_env": config.api_key_env,
                  "temperature": config.temperature, "top_p": config.top_p,
                  "max_tokens": config.max_tokens, "n": config.samples,
                  "seed": config.seed, "endpoint": identity["endpoint"],
                  "ignores_n": session.ignores_n or bool(
                      ((previous or {}).get("teacher") or {}).get("ignores_n")),
                  "served_models": session.served_models},
      "prompt": {"template_id": builder.template.template_id,
                 "template_hash": builder.template.template_hash,
                 "mode": builder.template.mode.value, "style": builder.template.style.value,
                 "hinted": builder.template.hinted,
                 "exemplar_set_id": builder.exemplar_set_id,
                 "exemplar_set_name": exemplar_set.name if exemplar_set else None,
                 "exemplar_source": exemplar_set.source if exemplar_set else None,
                 "shots": len(exemplar_set) if exemplar_set else 0,
                 "exemplars_overlapping_questions": overlap},
      "dataset": {"name": config.dataset, "split": config.split,
                  "fingerprint": fingerprint, "examples": examples_count,
                  "version": _dataset_version(config.dataset)},
      "counts": counts,
      "tokens": dict(run.tokens),
      "requests": {"sent": int(earlier.get("sent", 0)) + stats.requests_sent,
                   "cache_hits": int(earlier.get("cache_hits", 0)) + stats.cache_hits,
                   "retries": int(earlier.get("retries", 0)) + stats.retries,
                   "failures": int(earlier.get("failures", 0)) + stats.failures,
                   "failed_attempts_this_session": dict(sorted(stats.reasons.items())),
                   "oversized_choices_this_session": stats.oversized},
      "execution": {name: getattr(options, name) for name in _RECORDED_OPTIONS},
      "changes": list((previous or {}).get("changes") or []) + changes,
      "stopped": None,
      "sessions": int((previous or {}).get("sessions", 0)) + 1,
  }
  if session.stopped is not None:
    manifest["stopped"] = {"failure_class": session.stopped.failure_class,
                           "consecutive_failures": session.stopped.count,
                           "last_message": session.stopped.message,
                           "reason": str(session.stopped)}
  return manifest


def _dataset_version(name: str) -> str | None:
  """A hash of the pinned source files' SHA-256 sums (None for generated or
  file-given data, which the example fingerprint identifies instead)."""
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  info = registry.DATASETS.get(name)
  if info is None or not info.files:
    return None
  joined = "\n".join(sorted(data_file.sha256 for data_file in info.files))
  return hashlib.sha256(joined.encode("ascii")).hexdigest()[:16]


def annotate(config: AnnotationConfig, out_dir: str | os.PathLike,
             options: ExecutionOptions = ExecutionOptions(),
             examples: Sequence[Example] | None = None) -> dict[str, Any]:
  """Annotates (or resumes annotating) into `out_dir`; returns the manifest.

  The manifest's status is "complete", "partial" or "failed" (`run_status`);
  `exit_code(manifest, allow_failures)` turns it into a process exit code. A
  run stopped by the circuit breaker returns normally with `stopped` set:
  everything written so far stays, and the same command resumes it.

  Args:
    config: what to annotate (see `AnnotationConfig`).
    out_dir: the run directory; an existing run there is resumed if its
      records-shaping config matches, refused otherwise
      (`ConfigMismatchError`).
    options: execution options.
    examples: examples to use instead of loading them from `config`.

  Raises:
    ConfigMismatchError, InputError, client.ModelNotServedError: before
      anything is sent or written.
  """
  directory = pathlib.Path(out_dir)
  examples = list(examples) if examples is not None else load_examples(config)
  if not examples:
    raise InputError(f"{config.dataset}/{config.split}: no examples to annotate (an empty "
                     "input is an error)")
  fingerprint = dataset_fingerprint(examples)
  if config.limit is not None:
    examples = examples[: config.limit]
  ids = [e.id for e in examples]
  if len(set(ids)) != len(ids):
    raise InputError(f"example ids are not unique in {config.dataset}/{config.split}")
  builder = make_prompt_builder(config)
  identity = {"dataset_fingerprint": fingerprint,
              "template_hash": builder.template.template_hash,
              "exemplar_set_id": builder.exemplar_set_id,
              "endpoint": "completions" if config.style == "completion" else "chat/completions"}
  previous = records_lib.read_manifest(directory)
  changes = []
  if previous is not None:
    changes = _resume_changes(previous, config, identity, options, directory)
    for change in changes:
      logger.info("resuming %s with %s changed: %r -> %r", directory, change["field"],
                  change["from"], change["to"])
  overlap = []
  if builder.exemplar_set is not None:
    overlap = exemplars_lib.check_no_overlap(builder.exemplar_set, [e.question for e in examples])
    if overlap:
      logger.warning("%d exemplar question(s) are also among the annotated questions; "
                     "their records copy an exemplar", len(overlap))
  api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
  if not api_key:
    logger.info("no API key in $%s; sending requests without Authorization",
                config.api_key_env)
  session = _Session()
  if options.check_model:
    # Before the run directory exists: a mistyped model creates nothing.
    session.served_models, session.stopped = asyncio.run(
        _probe_teacher(config, options, api_key))
  run = records_lib.RunDirectory.open(directory, config.samples, options.retry_failed)
  if any(run.repaired.values()):
    logger.info("repaired %s: %s", directory, run.repaired)
  pending = [e for e in examples if e.id not in run.done_ids]
  started_at = records_lib.utc_now()
  cache = None
  if options.use_cache and session.stopped is None:
    cache = cache_lib.ResponseCache(options.cache_dir or cache_lib.default_cache_dir())

  def manifest(status):
    return _manifest(config, builder, len(examples), fingerprint, identity, run, session,
                     previous, status, started_at, len(overlap), options, changes)

  try:
    if session.stopped is None:
      asyncio.run(_run_pending(config, options, builder, run, pending, examples,
                               api_key, cache, manifest, session))
    final = manifest(COMPLETE)  # Replaced by run_status's verdict.
    run.write_manifest(final)
  finally:
    run.close()
    if cache is not None:
      cache.close()
  if session.stopped is not None:
    logger.error("annotation of %s %s; %d of %d questions done, the rest resume with "
                 "`cot-distill annotate --resume %s`", directory, session.stopped,
                 final["counts"]["questions_done"], len(examples), directory)
  return final


def _make_client(config, options, api_key, cache=None) -> client_lib.TeacherClient:
  return client_lib.TeacherClient(
      config.teacher_url, config.model, api_key=api_key, concurrency=options.concurrency,
      requests_per_minute=options.requests_per_minute,
      tokens_per_minute=options.tokens_per_minute,
      request_timeout_s=options.request_timeout_s, max_attempts=options.max_attempts,
      backoff_base_s=options.backoff_base_s, backoff_cap_s=options.backoff_cap_s,
      cache=cache, adaptive_concurrency=options.adaptive_concurrency,
      max_consecutive_failures=options.max_consecutive_failures,
      chars_per_token_cap=options.chars_per_token_cap)


async def _probe_teacher(config, options, api_key):
  """(served model ids or None, CircuitOpenError or None) from GET /models."""
  async with _make_client(config, options, api_key) as teacher:
    try:
      return await teacher.check_model(), None
    except concurrency_lib.CircuitOpenError as error:
      return None, error


async def _run_pending(config, options, builder, run, pending, examples, api_key, cache,
                       manifest, session: _Session) -> None:
  teacher = _make_client(config, options, api_key, cache)
  session.stats = teacher.stats
  annotator = _QuestionAnnotator(config, builder, teacher)
  progress = _Progress(len(examples), len(examples) - len(pending),
                       f"annotate {config.dataset}/{config.split}", options.progress)
  progress.update(run, teacher, force=True, count=False)
  run.write_manifest(manifest(RUNNING))
  queue: asyncio.Queue = asyncio.Queue()
  for example in pending:
    queue.put_nowait(example)

  async def worker():
    while True:
      try:
        example = queue.get_nowait()
      except asyncio.QueueEmpty:
        return
      kept, dropped = await annotator.annotate(example)
      run.write_question(kept, dropped)
      progress.update(run, teacher)

  async def keep_manifest_fresh():
    # fsync and the manifest rename run in a thread: on a busy disk they can
    # take tens of milliseconds, during which the event loop keeps serving.
    while True:
      await asyncio.sleep(options.manifest_interval_s)
      session.ignores_n = teacher.ignores_n
      await asyncio.to_thread(run.write_manifest, manifest(RUNNING))

  refresher = asyncio.ensure_future(keep_manifest_fresh())
  # Twice as many workers as request slots: while one worker judges and
  # writes the question it just got back, another already waits with its
  # next prompt, so no slot idles (with one worker per slot the annotate run
  # reached 0.61 of the bound where the bare client reached 0.75).
  workers = [asyncio.ensure_future(worker())
             for _ in range(max(1, min(2 * options.concurrency, len(pending))))]
  try:
    await asyncio.gather(*workers)
  except concurrency_lib.CircuitOpenError as error:
    session.stopped = error  # The other workers are cancelled below.
  finally:
    for task in workers + [refresher]:
      task.cancel()
    await asyncio.gather(*workers, refresher, return_exceptions=True)
    await teacher.aclose()
    session.ignores_n = teacher.ignores_n
    progress.update(run, teacher, force=True, count=False)
    progress.close()
    run.write_manifest(manifest(RUNNING))
