"""Benchmark loaders over the real files in shared/data.

Counts are typed in from shared/data/SOURCES.md (not read from the
registry), so a loader that drops or duplicates records fails here.
"""

from __future__ import annotations

import collections
import functools
import json
import re

import pytest

from cot_distill.data import registry
from cot_distill.data.example import AnswerType, Example
from cot_distill.data.number_format import canonical_number

SOURCES_COUNTS = {
    ("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319,
    ("svamp", "test"): 1000, ("multiarith", "test"): 600, ("addsub", "test"): 395,
    ("singleeq", "test"): 508, ("asdiv", "test"): 2305,
    **{("asdiv", f"fold{k}"): n for k, n in enumerate((444, 444, 444, 444, 529))},
    **{("asdiv_a", f"fold{k}"): n for k, n in enumerate((238, 238, 238, 238, 266))},
    **{("mawps", f"fold{k}_train"): 1537 for k in range(5)},
    **{("mawps", f"fold{k}_dev"): 384 for k in range(5)},
    ("aqua", "test"): 254, ("strategyqa", "train"): 2061, ("strategyqa", "dev"): 229,
    ("strategyqa_bigbench", "train"): 2290, ("commonsenseqa", "train"): 9741,
    ("commonsenseqa", "dev"): 1221, ("coin_flip", "test"): 500, ("last_letters", "test"): 500,
    ("date_understanding", "test"): 369, ("tracking_shuffled_objects", "test"): 750,
}
CANONICAL_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d*[1-9])?$")


@pytest.fixture(scope="module")
def load(data_dir):
  return functools.lru_cache(maxsize=None)(
      lambda name, split: registry.load(name, split, data_dir))


def test_registry_covers_the_contract_names_and_sources_splits():
  assert set(registry.DATASETS) == {
      "gsm8k", "svamp", "multiarith", "addsub", "singleeq", "asdiv", "asdiv_a", "mawps",
      "aqua", "strategyqa", "strategyqa_bigbench", "commonsenseqa", "coin_flip",
      "last_letters", "date_understanding", "tracking_shuffled_objects"}
  assert {(name, split) for name in registry.DATASETS
          for split in registry.splits(name)} == set(SOURCES_COUNTS)
  for info in registry.DATASETS.values():
    assert dict(info.expected_counts) == {
        split: SOURCES_COUNTS[(info.name, split)] for split in info.splits}
    assert all(url.startswith("https://raw.githubusercontent.com/") for url in info.download_urls)


@pytest.mark.parametrize("name,split", sorted(SOURCES_COUNTS))
def test_counts_ids_and_canonical_answers(load, name, split):
  examples = load(name, split)
  assert len(examples) == SOURCES_COUNTS[(name, split)]
  assert [e.id for e in examples] == [f"{name}/{split}/{i}" for i in range(len(examples))]
  info = registry.DATASETS[name]
  for example in examples:
    assert (example.dataset, example.split, example.answer_type) == (name, split, info.answer_type)
    assert example.question and example.question == example.question.strip()
    if info.answer_type is AnswerType.NUMBER:
      if example.meta.get("answer_is_number", True):
        assert CANONICAL_NUMBER.match(example.answer), example
    elif info.answer_type is AnswerType.YES_NO:
      assert example.answer in ("yes", "no")
    elif info.answer_type is AnswerType.LETTERS:
      assert example.answer.isalpha()
    else:
      assert example.answer in [label for label, _ in example.choices]
  for example in examples[::97]:  # JSON round trip on a spread-out sample
    assert Example.from_dict(json.loads(json.dumps(example.to_dict()))) == example


def test_gsm8k_gold_rationale_and_thousands_separators(load):
  first = load("gsm8k", "train")[0]
  assert first.answer == "72"
  assert first.gold_rationale == ("Natalia sold 48/2 = 24 clips in May.\n"
                                  "Natalia sold 48+24 = 72 clips altogether in April and May.")
  assert "<<48/2=24>>" in first.meta["annotated_solution"]
  test = load("gsm8k", "test")
  # The file writes these as 2,125 / 114,200 / 276,000 (SOURCES.md: 14 such).
  assert [test[i].answer for i in (146, 201, 230)] == ["2125", "114200", "276000"]
  assert not any("####" in e.gold_rationale or "<<" in e.gold_rationale for e in test)


def test_svamp_joins_body_and_question(load):
  first = load("svamp", "test")[0]
  assert first.question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 "
                            "dollars on each pack How much do you have to pay to buy each pack?")
  assert first.answer == "51"
  assert first.meta["source_id"] == "chal-1"


def test_mawps_numbers_are_put_back(load):
  first = load("mawps", "fold0_train")[0]
  assert first.question == ("Mary is baking a cake . The recipe wants 8 cups of flour . "
                            "She already put in 2 cups . How many cups does she need to add ?")
  assert first.answer == "6"
  for split in registry.splits("mawps"):
    assert not any(re.search(r"number\d", e.question) for e in load("mawps", split))


def test_asdiv_answers_and_asdiv_a_folds(load):
  whole = load("asdiv", "test")
  assert (whole[0].answer, whole[0].meta["answer_units"]) == ("9", ["apples"])
  not_numbers = [e for e in whole if not e.meta["answer_is_number"]]
  assert len(not_numbers) == 219
  assert {"Mrs. Hilt", "3:4", "8; 40"} <= {e.answer for e in not_numbers}
  assert {e.answer for e in whole if e.meta["raw_answer"] == "5/2"} == {"2.5"}
  folds = [load("asdiv_a", f"fold{k}") for k in range(5)]
  source_ids = [e.meta["source_id"] for fold in folds for e in fold]
  assert len(source_ids) == len(set(source_ids)) == 1218
  assert all(e.meta["answer_is_number"] for fold in folds for e in fold)
  by_id = {e.meta["source_id"]: e for e in whole}
  assert all(by_id[e.meta["source_id"]].question == e.question for e in folds[0])


def test_multiple_choice_sets(load):
  aqua = load("aqua", "test")[0]
  assert aqua.choices[0] == ("A", "5(√3 + 1)") and len(aqua.choices) == 5
  assert aqua.answer == "A" and aqua.gold_rationale.endswith("Answer : A")
  csqa = load("commonsenseqa", "dev")[0]
  assert csqa.answer == "A" and csqa.choices[0] == ("A", "bank")
  assert csqa.question.endswith("security measure at a what?")


def test_strategyqa_both_copies(load):
  original = load("strategyqa", "train")[0]
  assert original.question == "Are more people today related to Genghis Khan than Julius Caesar?"
  assert original.answer == "yes"
  assert original.gold_rationale.startswith("Julius Caesar had three children. Genghis Khan")
  assert "evidence" not in original.meta
  bigbench = load("strategyqa_bigbench", "train")
  assert bigbench[1].answer == "no"
  assert bigbench[1].gold_rationale.startswith("Hydrogen is the first element")
  assert collections.Counter(e.answer for e in bigbench) == {"no": 1219, "yes": 1071}


def test_date_options_are_shuffled_deterministically(load, data_dir):
  examples = load("date_understanding", "test")
  first = examples[0]
  assert dict(first.choices)[first.answer] == "05/01/2021"  # scored 1 in the file
  assert sorted(text for _, text in first.choices) == sorted(first.meta["source_options"])
  letters = collections.Counter(e.answer for e in examples)
  assert max(letters.values()) < 0.3 * len(examples)  # in file order "A" would be 99%
  assert registry.load("date_understanding", "test", data_dir) == examples


def test_tracking_and_symbolic_files(load):
  tracking = load("tracking_shuffled_objects", "test")
  assert collections.Counter(e.answer for e in tracking) == {"A": 250, "B": 250, "C": 250}
  assert tracking[0].choices == (("A", "orange ball."), ("B", "white ball."), ("C", "blue ball."))
  assert tracking[0].answer == "C"
  matches = collections.Counter()
  for example in load("last_letters", "test"):
    words = re.search(r'"(.*)"', example.question).group(1).split()
    literal = "".join(word[-1] for word in words)
    assert example.meta["answer_matches_words"] == (example.answer == literal)
    matches[example.answer == literal] += 1
    if example.answer != literal:  # a compound name ("Jose Antonio") counted once
      assert (len(words), len(example.answer)) == (5, 4)
  assert matches == {True: 485, False: 15}
  for example in load("coin_flip", "test"):
    flips = example.question.count(" flips the coin.")
    assert example.answer == ("yes" if flips % 2 == 0 else "no")


@pytest.mark.parametrize("value,expected", [
    ("40,000", "40000"), (51.0, "51"), ("2.50", "2.5"), ("-7", "-7"), (7, "7"),
    (0.1 + 0.2, "0.30000000000000004"), ("1e-05", "0.00001"), (" 12 ", "12")])
def test_canonical_number(value, expected):
  assert canonical_number(value) == expected


@pytest.mark.parametrize("value", ["5/2", "3:4", "Bob", "", True, "nan", "1,00"])
def test_canonical_number_rejects(value):
  with pytest.raises(ValueError):
    canonical_number(value)
