"""The registry package `cot_distill_tasks`: cheap import, names, real data end to end."""

from __future__ import annotations

import decimal
import json
import logging
import subprocess
import sys

import pytest
import seqio

import cot_distill_tasks
from cot_distill import answers
from cot_distill import metrics
from cot_distill import vocabularies
from cot_distill.data import registry as data_registry
from cot_distill.data.example import AnswerType
from cot_distill.teacher import importers
from cot_distill_tasks import registry
from cot_distill_tasks import runs

_IMPORT_PROBE = r"""
import json, os, sys, time
started = time.perf_counter()
import seqio
seqio_done = time.perf_counter()
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
import cot_distill_tasks
registry_done = time.perf_counter()
code = (".py", ".pyc", ".so")
print(json.dumps({
    "seqio_seconds": seqio_done - started,
    "registry_seconds": registry_done - seqio_done,
    "opened": [p for p in opened if "/" in p and "__pycache__" not in p
               and not p.endswith(code) and not os.path.isdir(p)],
    "tasks": len(seqio.TaskRegistry.names()),
    "mixtures": len(seqio.MixtureRegistry.names())}))
"""


@pytest.fixture(scope="module")
def vocabulary(spm_path):
  return vocabularies.get_vocabulary(spm_path)


@pytest.fixture()
def registered(vocabulary, data_dir, tmp_path, monkeypatch):
  """Everything registered with the offline vocabulary, data and a runs dir."""
  monkeypatch.setenv("COT_DISTILL_DATA_DIR", str(data_dir))
  monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path / "runs"))
  return registry.register_all(vocabulary)


def test_import_in_a_fresh_interpreter_is_cheap_and_reads_no_file(tmp_path):
  env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
         "COT_DISTILL_SPM_PATH": str(tmp_path / "no.model"),
         "COT_DISTILL_RUNS_DIR": str(tmp_path / "no_runs"),
         "COT_DISTILL_DATA_DIR": str(tmp_path / "no_data")}
  out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  probe = json.loads(out.strip().splitlines()[-1])
  print(f"fresh interpreter: import seqio {probe['seqio_seconds']:.2f} s, "
        f"then cot_distill_tasks {probe['registry_seconds']:.2f} s")
  # Our own cost on top of seqio (which every T5X process has imported
  # already; it alone takes 4-5 s on a loaded 2-core machine).
  assert probe["registry_seconds"] < 1.0
  assert probe["opened"] == []  # Lazy: no data, vocabulary or run file read.
  assert probe["tasks"] >= 100 and probe["mixtures"] >= 20


def test_names_and_registering_twice(registered, vocabulary):
  names = set(seqio.TaskRegistry.names())
  for expected in ("cot_distill.gsm8k.gpt3.cot", "cot_distill.gsm8k.gpt3.answer_only",
                   "cot_distill.gsm8k.gpt3.multitask", "cot_distill.gsm8k.gold.answer_only",
                   "cot_distill.eval.gsm8k.test", "cot_distill.eval.gsm8k.test.multitask",
                   "cot_distill.eval.coin_flip_gen.ood_6", "cot_distill.coin_flip_gen.gold.cot"):
    assert expected in names
  for dataset in data_registry.DATASETS:
    for split in registry.eval_splits(dataset):
      assert registry.eval_task_name(dataset, split) in registered["eval"]
  assert set(registered["training"] + registered["eval"]) <= names
  assert "cot_distill.eval.arithmetic" in seqio.MixtureRegistry.names()
  again = registry.register_all(vocabulary)  # Harmless, same names.
  assert again == registered
  assert registry.eval_task_names() == registered["eval"]
  # Eval mixtures hold whole-set splits only (no CV fold repeats).
  arithmetic = seqio.get_mixture_or_task("cot_distill.eval.arithmetic")
  assert "cot_distill.eval.gsm8k.test" in [t.name for t in arithmetic.tasks]
  assert not [t.name for t in arithmetic.tasks if ".fold" in t.name]


def test_gsm8k_gpt3_log_to_task_strings_and_tokens(registered, data_dir, shared_dir,
                                                   tmp_path, caplog):
  """Records imported from the GPT-3 GSM8K log feed `cot_distill.gsm8k.gpt3.cot`.

  The log covers GSM8K TEST: a plumbing check, never a training set; the
  source warns about exactly that.
  """
  run = next(r for r in runs.RUNS if (r.dataset, r.teacher) == ("gsm8k", "gpt3"))
  manifest = importers.import_kojima_log(
      shared_dir / "data" / "teacher_outputs" / "gsm8k_zero_shot_cot.log", run.resolve(),
      data_dir=str(data_dir))
  kept = manifest["counts"]["kept"]
  task = seqio.get_mixture_or_task("cot_distill.gsm8k.gpt3.cot")
  with caplog.at_level(logging.WARNING):
    examples = list(task.get_dataset({"inputs": 128, "targets": 128}, split="train",
                                     shuffle=False).as_numpy_iterator())
  assert "['test']" in caplog.text and "leakage" in caplog.text
  first = examples[0]
  assert first["id"] == b"gsm8k/test/24"
  assert first["inputs_pretokenized"] == (
      b"Kyle bought last year's best-selling book for $19.50. This is with a 25% "
      b"discount from the original price. What was the original price of the book?")
  assert first["targets_pretokenized"] == (
      b"The original price of the book was $19.50 with a 25% discount. This means that "
      b"the original price was $26. The original price was $26. The answer is 26.")
  assert first["targets"].tolist() == [
      37, 926, 594, 13, 8, 484, 47, 1970, 8797, 1752, 28, 3, 9, 12238, 3898, 5, 100, 598,
      24, 8, 926, 594, 47, 3771, 948, 5, 37, 926, 594, 47, 3771, 948, 5, 37, 1525, 19,
      2208, 5, 1]
  assert first["inputs"].tolist()[:8] == [19454, 2944, 336, 215, 31, 7, 200, 18]
  # Every kept CoT is there (none longer than 128 tokens is truncated: dropped),
  # each ending in one normalised answer sentence.
  all_examples = list(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
  assert len(all_examples) == kept == 542
  assert 0 < len(examples) < kept
  for example in all_examples:
    target = example["targets_pretokenized"].decode()
    sentence = answers.answer_sentence(example["answer"].decode(), "number")
    assert target.endswith(" " + sentence)
    # The student target is judged exactly as the teacher's CoT was: correct,
    # read from the appended sentence.
    verdict = answers.judge(target, example["answer"].decode(), "number")
    assert (verdict.correct, verdict.rule) == (True, "marker_number")


def _wrong_answer(gold: str, answer_type: AnswerType, choices) -> str:
  if answer_type == AnswerType.NUMBER:  # Far outside the judge's 1e-6 tolerance.
    value = decimal.Decimal(gold)
    return str(value + max(1, abs(value)))
  if answer_type == AnswerType.YES_NO:
    return "no" if gold == "yes" else "yes"
  if answer_type == AnswerType.LETTERS:
    return gold + "x"
  return next(label for label, _ in choices if label.upper() != gold)


# The registry's own list, computed without registering (collection must not
# replace tasks other test modules registered with the offline vocabulary).
EVAL_TASKS = registry.eval_task_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", EVAL_TASKS)
def test_every_eval_task_scores_a_file_of_known_predictions_exactly(registered, tmp_path, name):
  """Per example i: a correct answer sentence (i % 3 == 0), a wrong one (1), nothing (2).

  Gold answers the canonical form cannot express (some ASDiv "numbers" are
  names) get the empty prediction, so expected values follow by construction.
  """
  assert name in registered["eval"]
  task = seqio.get_mixture_or_task(name)
  (split,) = task.splits
  examples = metrics.task_examples(task, split)
  lines, correct, found = [], 0, 0
  for index, example in enumerate(examples):
    fields = metrics.gold_fields(example)
    answer_type = AnswerType(fields["answer_type"])
    gold = answers.normalize_gold(fields["answer"], answer_type)
    kind = index % 3 if gold is not None else 2
    if kind == 0:
      text = f"Step by step. {answers.answer_sentence(gold, answer_type)}"
    elif kind == 1:
      text = f"The answer is {_wrong_answer(gold, answer_type, fields['choices'])}."
    else:
      text = ""
    correct += kind == 0
    found += kind != 2
    lines.append(json.dumps({"id": fields["id"], "prediction": text}))
  path = tmp_path / "predictions.jsonl"
  path.write_text("\n".join(lines) + "\n")
  predictions = {r["id"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())}
  count = len(examples)
  assert count > 0
  assert metrics.score_examples(task, examples, predictions) == {
      "accuracy": 100.0 * correct / count, "answer_found_rate": 100.0 * found / count,
      "answer_fallback_rate": 0.0, "num_examples": float(count)}
