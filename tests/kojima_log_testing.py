"""Test logs in Kojima et al.'s format, written from the raw benchmark files.

We have five of their twelve real logs. For every benchmark and split, this
writes a log the way their code would: questions rewritten as their data
reader does (answer choices appended after "Answer Choices:", AQuA's
parentheses spaced, date options reshuffled, the tracking "Which choice is
true ?" line), records in a shuffled order, their trigger per dataset, and
`pred_after` from a re-implementation of their answer cleanser, so the log's
verdict is the one their code would give. The rewriting here is written
from their public description independently of `cot_distill.teacher.alignment`,
which must undo it.

Each record's teacher text follows one scenario (cycled over the records)
that the answer judge must handle: correct, wrong, and one case per named
disagreement class.
"""

from __future__ import annotations

import json
import pathlib
import random
import re

# Kojima name -> (file under data_dir, trigger, our answer kind).
NUMBER_TRIGGER = "\nTherefore, the answer (arabic numerals) is"
YES_NO_TRIGGER = "\nTherefore, the answer (Yes or No) is"
FAMILIES = {
    "gsm8k": {"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"},
    "svamp": {"test": "svamp/SVAMP.json"},
    "multiarith": {"test": "multiarith/MultiArith.json"},
    "addsub": {"test": "addsub/AddSub.json"},
    "singleeq": {"test": "singleeq/questions.json"},
    "aqua": {"test": "aqua/test.json"},
    "commonsensqa": {"dev": "commonsenseqa/dev_rand_split.jsonl",
                     "train": "commonsenseqa/train_rand_split.jsonl"},
    "strategyqa": {"train": "strategyqa_bigbench/task.json"},
    "bigbench_date": {"test": "bigbench_date/task.json"},
    "object_tracking": {"test": "bigbench_object_tracking/task.json"},
    "coin_flip": {"test": "coin_flip/coin_flip.json"},
    "last_letters": {"test": "last_letters/last_letters.json"},
}
TRIGGERS = {
    **{name: NUMBER_TRIGGER for name in ("gsm8k", "svamp", "multiarith", "addsub", "singleeq")},
    "aqua": "\nTherefore, among A through E, the answer is",
    "commonsensqa": "\nTherefore, among A through E, the answer is",
    "bigbench_date": "\nTherefore, among A through F, the answer is",
    "object_tracking": "\nTherefore, among A through C, the answer is",
    "strategyqa": YES_NO_TRIGGER, "coin_flip": YES_NO_TRIGGER,
    "last_letters": "\nTherefore, the answer is",
}
CHOICE_FAMILIES = ("aqua", "commonsensqa", "bigbench_date", "object_tracking")
LETTERS = "ABCDEF"


def _number_text(value) -> str:
  text = str(value)
  return text[:-2] if text.endswith(".0") else text


def _jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def kojima_questions(data_dir: pathlib.Path, name: str, split: str
                     ) -> list[tuple[str, str]]:
  """(question as their code prompts it, GT as their code logs it), file order."""
  path = pathlib.Path(data_dir) / FAMILIES[name][split]
  if name == "gsm8k":
    return [(r["question"].strip(), r["answer"].split("#### ")[-1]) for r in _jsonl(path)]
  if name == "aqua":
    out = []
    for r in _jsonl(path):
      listing = ("(" + "(".join(r["options"])).replace("(", " (").replace(")", ") ")
      out.append((r["question"].strip() + " Answer Choices:" + listing, r["correct"]))
    return out
  if name == "commonsensqa":
    out = []
    for r in _jsonl(path):
      listing = "".join(f" ({c['label']}) {c['text']}" for c in r["question"]["choices"])
      out.append((r["question"]["stem"].strip() + " Answer Choices:" + listing, r["answerKey"]))
    return out
  data = json.loads(path.read_text(encoding="utf-8"))
  if name == "svamp":
    return [(r["Body"].strip() + " " + r["Question"].strip(), _number_text(r["Answer"]))
            for r in data]
  if name in ("multiarith", "addsub", "singleeq"):
    return [(r["sQuestion"].strip(), _number_text(r["lSolutions"][0])) for r in data]
  if name == "strategyqa":
    return [(r["input"].strip(), "yes" if int(r["target_scores"]["Yes"]) == 1 else "no")
            for r in data["examples"]]
  if name in ("coin_flip", "last_letters"):
    return [(r["question"], r["answer"]) for r in data["examples"]]
  out = []
  shuffler = random.Random(12345)  # Their shuffle was unseeded; any order will do.
  for r in data["examples"]:
    options = list(r["target_scores"].items())
    if name == "bigbench_date":
      shuffler.shuffle(options)
      listing = "Answer Choices:"
    else:
      listing = "\nWhich choice is true ? Answer Choices:"
    gold = None
    for letter, (option, score) in zip(LETTERS, options):
      listing += f" ({letter}) {option}"
      if score == 1:
        gold = letter
    out.append((r["input"].strip() + " " + listing, gold))
  return out


def cleanse(name: str, text: str) -> str:
  """Their zero-shot(-CoT) answer cleanser: the first candidate, final "." cut."""
  if name in ("aqua", "commonsensqa"):
    found = re.findall(r"A|B|C|D|E", text)
  elif name == "bigbench_date":
    found = re.findall(r"A|B|C|D|E|F", text)
  elif name == "object_tracking":
    found = re.findall(r"A|B|C", text)
  elif name in ("strategyqa", "coin_flip"):
    words = re.sub(r"\"|'|\n|\.|\s|:|,", " ", text.lower()).split(" ")
    found = [w for w in words if w in ("yes", "no")]
  elif name == "last_letters":
    found = [re.sub(r"\"|'|\n|\.|\s", "", text)]
  else:
    found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
  pred = found[0] if found else ""
  return pred[:-1] if pred.endswith(".") else pred


def _roman(value: int) -> str:
  numerals = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
              (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
  out = ""
  for amount, numeral in numerals:
    while value >= amount:
      out, value = out + numeral, value - amount
  return out


FILLER = (" Let me check each step once more, carefully, so that nothing is missed"
          " in the working above.")

# Scenario -> the disagreement class it produces where the log and we differ.
SCENARIO_CLASSES = {
    "correct": None, "wrong": None, "empty_final_marker": "empty_final_marker",
    "fraction_with_decimal": "fraction_with_decimal", "roman": "number_in_words",
    "trailing_zeros": "decimal_zeros", "option_text": "option_text", "hedge": "hedge",
    "separated_letters": "separated_letters",
}
SCENARIOS = {
    "number": ("correct", "wrong", "fraction_with_decimal", "roman", "empty_final_marker",
               "trailing_zeros", "correct"),
    "choice": ("correct", "wrong", "option_text", "hedge", "empty_final_marker", "correct"),
    "yes_no": ("correct", "wrong", "empty_final_marker", "correct"),
    "letters": ("correct", "wrong", "separated_letters", "empty_final_marker", "correct"),
}


def _kind(name: str) -> str:
  if name in CHOICE_FAMILIES:
    return "choice"
  return {"strategyqa": "yes_no", "coin_flip": "yes_no",
          "last_letters": "letters"}.get(name, "number")


def _teacher_text(name: str, scenario: str, question: str, gold: str) -> tuple[str, str]:
  """(CoT after "Let's think step by step.", stage-2 answer) for one scenario."""
  kind = _kind(name)
  if kind == "choice":
    labels = re.findall(r"\(([A-F])\)", question.rpartition("Answer Choices:")[2])
    other = next(l for l in labels if l != gold)
    if scenario == "wrong":
      return " We compare the options.", f" {other}."
    options = dict(re.findall(r"\(([A-F])\) (.*?)(?= \([A-F]\) |$)",
                              question.rpartition("Answer Choices:")[2]))
    option = options.get(gold, "").strip().lower()
    # Only an option text that names one option (unique, no other option's
    # text inside it, no parentheses) can stand for its letter.
    unambiguous = option and "(" not in option and not any(
        label != gold and re.search(rf"(?<!\w){re.escape(text.strip().lower().rstrip('.'))}(?!\w)",
                                    option) for label, text in options.items())
    if scenario == "option_text" and unambiguous:
      return " We compare the options.", f" {option}"
    if scenario == "hedge":
      return " We compare the options.", f" ({gold}) or ({other})."
    if scenario == "empty_final_marker":
      return f" So the answer is ({gold}).{FILLER}", ""
    return " We compare the options.", f" {gold}."
  if kind == "yes_no":
    wrong = "no" if gold == "yes" else "yes"
    if scenario == "empty_final_marker":
      return f" So the answer is {gold}.{FILLER}", ""
    return " We think it through.", f" {wrong if scenario == 'wrong' else gold.capitalize()}."
  if kind == "letters":
    if scenario == "wrong":
      return " We take the last letters.", f" {gold[::-1]}x."
    if scenario == "separated_letters":
      return " We take the last letters.", ' "' + "-".join(gold) + '".'
    if scenario == "empty_final_marker":
      return f" So the answer is {gold}.{FILLER}", ""
    return " We take the last letters.", f" {gold}."
  number = gold.replace(",", "")
  value = float(number)
  if scenario == "wrong":
    return " We add it up.", f" {_number_text(value + 1)}."
  if scenario == "fraction_with_decimal":
    return " We add it up.", f" {_number_text(value * 8)}/8 or {number}."
  if scenario == "roman" and value.is_integer() and 0 < value < 4000:
    return f" So the answer is {number}.", f" {_roman(int(value))}."
  if scenario == "empty_final_marker":
    return f" So the answer is {number}.{FILLER}", ""
  if scenario == "trailing_zeros" and value.is_integer():
    return " We add it up.", f" {number}.00."
  return " We add it up.", f" {number}."


def write_log(data_dir: pathlib.Path, name: str, split: str, path: pathlib.Path, *,
              method: str = "zero_shot_cot", seed: int = 1) -> list[dict]:
  """Writes the log; returns per log record {question, gold, scenario, pred}."""
  questions = kojima_questions(data_dir, name, split)
  order = list(range(len(questions)))
  random.Random(seed).shuffle(order)
  trigger = TRIGGERS[name]
  zero_shot_trigger = trigger.replace("\nTherefore, ", "")
  zero_shot_trigger = zero_shot_trigger[0].upper() + zero_shot_trigger[1:]
  file_path = f"./dataset/x/{FAMILIES[name][split].rsplit('/', 1)[1]}"
  lines = ["*" * 29,
           f"Namespace(api_log_file_name='./log/{name}_{method}_api_log.json', "
           f"cot_trigger=\"Let's think step by step.\", dataset={name!r}, "
           f"dataset_path={file_path!r}, direct_answer_trigger={trigger!r}, "
           f"direct_answer_trigger_for_zeroshot={zero_shot_trigger!r}, method={method!r}, "
           "model='gpt3-xl', random_seed=1)",
           "*" * 29, "setup data loader ...", f"dataset : {name}",
           f"data size : {len(questions)}"]
  scenarios = SCENARIOS[_kind(name)]
  written, correct = [], 0
  for k, index in enumerate(order, 1):
    question, gold = questions[index]
    scenario = scenarios[k % len(scenarios)]
    cot, stage_two = _teacher_text(name, scenario, question, gold)
    if method == "zero_shot":
      block = f"A: {zero_shot_trigger}{stage_two}"
    else:
      block = f"A: Let's think step by step.{cot} {trigger}{stage_two}"
    pred = cleanse(name, stage_two)
    correct += pred == gold
    lines += ["*" * 25, f"{k}st data", "1_th_sampling", f"Q: {question}", block,
              f"pred_before : {stage_two}", f"pred_after : {pred}", f"pred_list : [{pred!r}]",
              f"pred_mode : {pred}", f"GT : {gold}", "*" * 25]
    written.append({"question": question, "gold": gold, "scenario": scenario, "pred": pred})
  lines.append(f"accuracy : {100.0 * correct / len(questions)}")
  pathlib.Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
  return written
