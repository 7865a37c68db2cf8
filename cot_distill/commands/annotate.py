"""`cot-distill annotate`: teacher chains of thought for a dataset, filtered.

    cot-distill annotate --dataset gsm8k --split train --teacher-url URL \\
        --model NAME [--samples K] --out DIR [--prompt-mode hinted|few_shot|zero_shot]
        [--style completion|chat] [--concurrency C] [--rpm R] [--tpm T] [--limit N]
        [--exemplars FILE] [--data-dir DIR] ...
    cot-distill annotate --dataset coin_flip_gen --split train --generate-n 2000 \\
        --steps 4 --seed 0 --teacher-url URL --model M --out DIR
    cot-distill annotate --dataset NAME --split S --examples FILE.jsonl ...
    cot-distill annotate --resume DIR [--retry-failed] [--teacher-url URL] [--model M]
        [--concurrency C] [--timeout S] [--rpm R] [--tpm T] ...
    cot-distill annotate --from-log KOJIMA.log --out DIR [--data-dir DIR]
    cot-distill annotate --from-jsonl FILE --out DIR [--dataset NAME --split S |
        --answer-field F --answer-type T] [--question-field F] [--rationale-field F]

The filter keeps a chain whose final answer is right and, with --verify
filter (the default for annotation), whose steps pass the rationale
verifier (`cot_distill.verifier`: equations recomputed, symbolic states
recomputed from the question, self-contradiction, hint parroting); --verify
report keeps them all and lists, in the summary and in each record's
`verification`, what the verifier would drop; imports default to off.

The API key is read from the environment variable named by --api-key-env
(default OPENAI_API_KEY) and is never written anywhere. Running the same
command again on the same --out resumes it (after a crash or kill) without
duplicating or losing records; a finished run costs zero requests to repeat
thanks to the response cache (--cache-dir, default ~/.cache/cot-distill/teacher).
On --resume, connection settings (--teacher-url, --model, --api-key-env,
--concurrency, --timeout, --rpm, --tpm, ...) may change and each change is
recorded in the manifest; settings that shape the records (prompt,
exemplars, dataset, samples, sampling) may not.

Outcome: the manifest's status is complete, partial or failed. The exit code
is 0 when no sample failed (or at most --allow-failures of them), 1 when
more failed or the run was stopped early (a refused API key, or
--max-consecutive-failures failures of one kind in a row: a dead port, a
server answering HTML or 500s, a hung server), 2 for a usage or input error
(bad examples file, a resume that would change the records, a model the
server does not serve). A stopped run resumes with `--resume DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "annotate", help="annotate a dataset with teacher CoTs (or import teacher outputs)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  what = parser.add_argument_group("what to annotate")
  what.add_argument("--dataset", help="registry name, or coin_flip_gen / last_letters_gen")
  what.add_argument("--split", default=None,
                    help="default train; with --from-log, taken from the log (must match it)")
  what.add_argument("--data-dir", default=None, help="benchmark files (registry loader)")
  what.add_argument("--examples", default=None, help="JSONL of Example dicts to annotate")
  what.add_argument("--generate-n", type=int, default=None, help="generate N symbolic examples")
  what.add_argument("--steps", type=int, default=None, help="people / words per generated question")
  what.add_argument("--seed", type=int, default=0, help="generator seed and sampling seed")
  what.add_argument("--limit", type=int, default=None, help="only the first N examples")
  teacher = parser.add_argument_group("teacher")
  teacher.add_argument("--teacher-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
  teacher.add_argument("--model", help="model name sent with each request")
  teacher.add_argument("--api-key-env", default=None,
                       help="environment variable holding the API key (OPENAI_API_KEY)")
  teacher.add_argument("--samples", type=int, default=None, help="CoTs per question (n, 1)")
  teacher.add_argument("--temperature", type=float, default=None,
                       help="default 0 for one sample, 0.7 for several")
  teacher.add_argument("--top-p", type=float, default=None, help="(1.0)")
  teacher.add_argument("--max-tokens", type=int, default=None, help="(256)")
  teacher.add_argument("--answer-max-tokens", type=int, default=None,
                       help="zero-shot stage-2 budget (32)")
  teacher.add_argument("--stop", action="append", default=None,
                       help="stop sequence (repeatable); default: the template's")
  teacher.add_argument("--separate-requests", action="store_true",
                       help="n requests of n=1 (for servers without the n parameter)")
  prompt = parser.add_argument_group("prompt")
  prompt.add_argument("--prompt-mode", default=None, choices=["hinted", "few_shot", "zero_shot"],
                      help="(hinted)")
  prompt.add_argument("--style", default=None, choices=["completion", "chat"],
                      help="(completion)")
  prompt.add_argument("--exemplars", default=None,
                      help="exemplar file (ours or few_shot_cot_prompts.json format)")
  prompt.add_argument("--shots", type=int, default=None, help="use the first K exemplars")
  what.add_argument("--verify", default=None, choices=["off", "report", "filter"],
                    help="rationale verifier: 'filter' (default) drops right-answer chains with "
                         "a wrong step (arithmetic_error, step_inconsistent, hint_parroting); "
                         "'report' keeps them and lists what it would drop; 'off' skips it")
  run = parser.add_argument_group("execution (may change on resume)")
  run.add_argument("--out", help="run directory")
  run.add_argument("--resume", metavar="DIR", help="resume the run in DIR with its config")
  run.add_argument("--concurrency", type=int, default=None, help="requests in flight (16)")
  run.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
  run.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
  run.add_argument("--timeout", type=float, default=None, help="seconds per attempt (60)")
  run.add_argument("--max-attempts", type=int, default=None, help="attempts per request (6)")
  run.add_argument("--cache-dir", default=None)
  run.add_argument("--no-cache", action="store_true")
  run.add_argument("--no-progress", action="store_true")
  run.add_argument("--retry-failed", action="store_true",
                   help="on resume, redo questions whose requests failed for good")
  run.add_argument("--allow-failures", type=float, default=0.0, metavar="F",
                   help="exit 0 when at most this fraction of samples failed (0)")
  run.add_argument("--max-consecutive-failures", type=int, default=None, metavar="N",
                   help="stop after N failed attempts of one kind in a row (5); a refused "
                        "API key stops at once")
  run.add_argument("--fixed-concurrency", action="store_true",
                   help="keep --concurrency requests in flight instead of adapting (AIMD)")
  run.add_argument("--max-chars-per-token", type=float, default=None,
                   help="cut completions longer than max_tokens x this, flagged "
                        "oversized_response (16)")
  run.add_argument("--no-model-check", action="store_true",
                   help="skip the GET /v1/models check at start")
  run.add_argument("--json", action="store_true",
                   help="print the summary as one JSON line instead of text")
  imports = parser.add_argument_group("import existing teacher outputs instead")
  imports.add_argument("--from-log", help="a Kojima et al. zero-shot-CoT log")
  imports.add_argument("--from-jsonl", help="a JSONL of generated CoTs")
  imports.add_argument("--question-field", default="question")
  imports.add_argument("--rationale-field", default="rationale")
  imports.add_argument("--answer-field", default="answer", help="gold answer (without --dataset)")
  imports.add_argument("--predicted-field", default=None,
                       help="teacher's final answer, if the rationale lacks one")
  imports.add_argument("--answer-type", default=None,
                       help="number, yes_no, multiple_choice, ... (without --dataset)")
  imports.add_argument("--teacher-model", default="unknown", help="recorded teacher name")
  parser.set_defaults(func=run_command)


def _execution_options(args, runner):
  defaults = runner.ExecutionOptions()
  return runner.ExecutionOptions(
      concurrency=args.concurrency or defaults.concurrency,
      requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
      request_timeout_s=args.timeout or defaults.request_timeout_s,
      max_attempts=args.max_attempts or defaults.max_attempts,
      cache_dir=args.cache_dir, use_cache=not args.no_cache,
      progress=not args.no_progress, retry_failed=args.retry_failed,
      max_consecutive_failures=(args.max_consecutive_failures
                                or defaults.max_consecutive_failures),
      adaptive_concurrency=not args.fixed_concurrency,
      chars_per_token_cap=args.max_chars_per_token or defaults.chars_per_token_cap,
      check_model=not args.no_model_check)


# Flags that shape the records: (flag, config field). Given on --resume with
# a value other than the run's, they are refused.
_RECORD_FLAGS = (("--dataset", "dataset"), ("--split", "split"),
                 ("--prompt-mode", "prompt_mode"), ("--style", "style"),
                 ("--samples", "samples"), ("--temperature", "temperature"),
                 ("--top-p", "top_p"), ("--max-tokens", "max_tokens"),
                 ("--answer-max-tokens", "answer_max_tokens"), ("--stop", "stop"),
                 ("--exemplars", "exemplars_path"), ("--shots", "shots"),
                 ("--generate-n", "generate_n"), ("--steps", "generate_steps"),
                 ("--verify", "verify"))
# Connection settings a resume may change: (flag, config field).
_CONNECTION_FLAGS = (("--teacher-url", "teacher_url"), ("--model", "model"),
                     ("--api-key-env", "api_key_env"), ("--data-dir", "data_dir"),
                     ("--examples", "examples_path"), ("--limit", "limit"))


def _flag_value(args, flag):
  return getattr(args, flag[2:].replace("-", "_"))


def _resume_config(args, previous, runner):
  """The run's config with the connection settings given now; a
  `ConfigMismatchError` naming each records-shaping flag given with
  another value."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = runner.AnnotationConfig.from_dict(previous["config"])
  refused = []
  for flag, field in _RECORD_FLAGS:
    value = _flag_value(args, flag)
    if field == "stop" and value is not None:
      value = tuple(value)
    if value is not None and value != getattr(config, field):
      refused.append(f"{flag} ({field}: run {getattr(config, field)!r}, now {value!r})")
  if refused:
    raise runner.ConfigMismatchError(
        f"{args.resume}: {', '.join(refused)} would change what the records are, which a "
        "resume cannot; resume without it, or annotate into a new --out")
  overrides = {field: _flag_value(args, flag) for flag, field in _CONNECTION_FLAGS}
  overrides = {field: value for field, value in overrides.items() if value is not None}
  if args.separate_requests:
    overrides["separate_requests"] = True
  return dataclasses.replace(config, **overrides)


def _config_from_args(args, runner):
  missing = [flag for flag, value in (("--dataset", args.dataset), ("--teacher-url", args.teacher_url),
                                      ("--model", args.model), ("--out", args.out)) if not value]
  if missing:
    raise SystemExit(f"error: annotate needs {', '.join(missing)} (or --resume DIR)")
  defaults = runner.AnnotationConfig(dataset="", split="", teacher_url="", model="")
  samples = args.samples or 1
  temperature = args.temperature
  if temperature is None:
    temperature = 0.0 if samples == 1 else 0.7

  def given(name):
    value = getattr(args, name)
    return getattr(defaults, name) if value is None else value

  return runner.AnnotationConfig(
      dataset=args.dataset, split=args.split or "train", teacher_url=args.teacher_url,
      model=args.model, prompt_mode=given("prompt_mode"), style=given("style"),
      samples=samples, temperature=temperature, top_p=given("top_p"),
      max_tokens=given("max_tokens"), seed=args.seed,
      stop=tuple(args.stop) if args.stop else None,
      answer_max_tokens=given("answer_max_tokens"),
      separate_requests=args.separate_requests, exemplars_path=args.exemplars,
      shots=args.shots, api_key_env=given("api_key_env"), data_dir=args.data_dir,
      examples_path=args.examples, generate_n=args.generate_n, generate_steps=args.steps,
      generate_seed=args.seed if args.generate_n is not None else None, limit=args.limit,
      verify=given("verify"))


def _import(args) -> dict:
  from cot_distill.teacher import importers  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  if not args.out:
    raise SystemExit("error: imports need --out DIR")
  if args.from_log:
    manifest = importers.import_kojima_log(args.from_log, args.out, data_dir=args.data_dir,
                                           dataset=args.dataset, split=args.split,
                                           verify=args.verify or "off")
    _print_alignment(args.from_log, manifest)
    return manifest
  examples = None
  split = args.split or "train"
  if args.dataset:
    config = runner.AnnotationConfig(dataset=args.dataset, split=split, teacher_url="",
                                     model="", data_dir=args.data_dir,
                                     examples_path=args.examples)
    examples = runner.load_examples(config)
  manifest = importers.import_jsonl(
      args.from_jsonl, args.out, question_field=args.question_field,
      rationale_field=args.rationale_field, answer_field=args.answer_field,
      predicted_field=args.predicted_field, examples=examples,
      dataset=args.dataset or "jsonl", split=split, answer_type=args.answer_type,
      teacher_model=args.teacher_model, verify=args.verify or "off")
  _print_alignment(args.from_jsonl, manifest)
  return manifest


def _print_alignment(source: str, manifest: dict) -> None:
  """An import's alignment on stderr: counts, and every reason records were left out."""
  report = manifest.get("alignment")
  if not report:
    return
  line = (f"{source}: aligned {report['aligned']} of {report['records']} to "
          f"{manifest['dataset']['name']}/{manifest['dataset']['split']}")
  missing = {reason: n for reason, n in report["unaligned"].items() if n}
  if missing:
    line += "; NOT aligned: " + ", ".join(f"{r}={n}" for r, n in sorted(missing.items()))
  if report["gold_differs"]:
    line += f"; own gold differs from ours: {report['gold_differs']}"
  print(line, file=sys.stderr)


def run_command(args) -> int:
  from cot_distill.data.errors import DataFormatError, MissingDataError  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import client  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import exemplars  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import records  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import summary  # pylint: disable=g-import-not-at-top
  if not 0.0 <= args.allow_failures <= 1.0:
    print(f"error: --allow-failures is a fraction in [0, 1], got {args.allow_failures}",
          file=sys.stderr)
    return 2
  directory = args.resume or args.out
  try:
    if args.from_log or args.from_jsonl:
      manifest = _import(args)
    elif args.resume:
      previous = records.read_manifest(args.resume)
      if previous is None or previous.get("kind") != "annotation":
        print(f"error: {args.resume} holds no annotation run (no manifest.json)", file=sys.stderr)
        return 2
      config = _resume_config(args, previous, runner)
      manifest = runner.annotate(config, args.resume, _execution_options(args, runner))
    else:
      config = _config_from_args(args, runner)
      manifest = runner.annotate(config, args.out, _execution_options(args, runner))
  except (runner.ConfigMismatchError, exemplars.ExemplarFileError, records.RunDirectoryError,
          client.ModelNotServedError, DataFormatError, MissingDataError, FileNotFoundError,
          ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  counts = manifest["counts"]
  if args.json:
    print(json.dumps({"status": manifest["status"], "questions": counts["questions"],
                      "samples": counts["samples"], "kept": counts["kept"],
                      "dropped": counts["dropped"],
                      "failed_by_class": counts.get("failed_by_class"),
                      "verifier_flagged": counts.get("verifier_flagged"),
                      "stopped": manifest.get("stopped"), "tokens": manifest.get("tokens"),
                      "requests": manifest.get("requests")}))
  else:
    print(summary.format_summary(manifest, directory))
  if manifest.get("kind") != "annotation":
    return 0  # Imports raise above when something is wrong.
  return runner.exit_code(manifest, args.allow_failures)
