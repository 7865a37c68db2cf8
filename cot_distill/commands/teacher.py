"""`cot-distill teacher ...`: the local teacher server and prompt inspection.

    cot-distill teacher serve [--host 127.0.0.1] [--port 8000] [--error-rate R]
        [--step-error-rate R] [--latency-ms L] [--seed S] [--model-name NAME] [--api-key-env VAR]
    cot-distill teacher exemplars [--dataset NAME]
    cot-distill teacher prompt --dataset NAME --split S [--index I]
        [--prompt-mode hinted|few_shot|zero_shot] [--style completion|chat]
        [--exemplars FILE] [--data-dir DIR]

`serve` runs an OpenAI-compatible HTTP server on loopback that is a
STAND-IN for a real LLM: it answers coin-flip and last-letter questions with
a rule-based chain of thought in the exemplar style, and with probability
--error-rate per sample makes a wrong step or states a wrong answer (so the
annotation filter has work to do), and with probability --step-error-rate
writes a wrong step but still the right answer (only the rationale verifier,
`annotate --verify`, catches those). It supports /v1/completions,
/v1/chat/completions (n, seed, max_tokens, temperature) and /v1/models. The
--fault-* flags inject transport faults (429, 500, slow, malformed JSON,
truncation) for testing clients.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "teacher", help="run the local synthetic teacher server; inspect prompts",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  actions = parser.add_subparsers(dest="teacher_action", metavar="ACTION")
  actions.required = True
  from cot_distill.teacher import server  # pylint: disable=g-import-not-at-top
  serve = actions.add_parser(
      "serve", help="OpenAI-compatible synthetic teacher on loopback (a stand-in for an LLM)")
  server.add_server_arguments(serve)
  serve.set_defaults(func=_serve)

  exemplars = actions.add_parser("exemplars", help="list the shipped exemplar sets")
  exemplars.add_argument("--dataset", default=None, help="show the set a dataset uses")
  exemplars.add_argument("--exemplars", default=None, help="an exemplar file to inspect")
  exemplars.set_defaults(func=_exemplars)

  prompt = actions.add_parser("prompt", help="print the prompt built for one example")
  prompt.add_argument("--dataset", required=True)
  prompt.add_argument("--split", required=True)
  prompt.add_argument("--index", type=int, default=0)
  prompt.add_argument("--prompt-mode", default="hinted", choices=["hinted", "few_shot", "zero_shot"])
  prompt.add_argument("--style", default="completion", choices=["completion", "chat"])
  prompt.add_argument("--exemplars", default=None)
  prompt.add_argument("--data-dir", default=None)
  prompt.add_argument("--examples", default=None, help="JSONL of Example dicts instead")
  prompt.set_defaults(func=_prompt)


def _serve(args) -> int:
  from cot_distill.teacher import server  # pylint: disable=g-import-not-at-top
  return server.run_from_arguments(args)


def _exemplars(args) -> int:
  from cot_distill.teacher import exemplars  # pylint: disable=g-import-not-at-top
  if args.exemplars or args.dataset:
    chosen = exemplars.resolve(args.dataset or "", args.exemplars)
    print(f"{chosen.name}  id={chosen.id}  shots={len(chosen)}  source: {chosen.source}")
    for number, item in enumerate(chosen.exemplars, 1):
      print(f"\n[{number}] Q: {item.question}")
      if item.choices:
        print("    choices: " + " ".join(f"({l}) {t}" for l, t in item.choices))
      print(f"    A: {item.rationale} The answer is {item.answer}.")
    return 0
  print(f"{'set':28s} {'id':18s} shots  used by")
  for name in exemplars.shipped_set_names():
    chosen = exemplars.load_shipped_set(name)
    users = sorted(d for d, s in exemplars.DEFAULT_SET_FOR_DATASET.items() if s == name)
    print(f"{name:28s} {chosen.id:18s} {len(chosen):5d}  {', '.join(users)}")
  return 0


def _prompt(args) -> int:
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  config = runner.AnnotationConfig(
      dataset=args.dataset, split=args.split, teacher_url="http://unused", model="unused",
      prompt_mode=args.prompt_mode, style=args.style, exemplars_path=args.exemplars,
      data_dir=args.data_dir, examples_path=args.examples)
  examples = runner.load_examples(config)
  if not 0 <= args.index < len(examples):
    print(f"error: --index must be in [0, {len(examples)})", file=sys.stderr)
    return 2
  builder = runner.make_prompt_builder(config)
  built = builder.build(examples[args.index])
  print(f"# template {builder.template.template_id} ({builder.template.template_hash}), "
        f"exemplar set {builder.exemplar_set_id}, stop {built.stop}")
  if built.text is not None:
    print(built.text)
  else:
    print(json.dumps(list(built.messages), indent=2, ensure_ascii=False))
  return 0
