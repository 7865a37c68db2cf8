"""Leakage check: known overlaps of the real data, plus unit behaviour."""

from __future__ import annotations

import pytest

from cot_distill.data import leakage, symbolic
from cot_distill.data.example import Example

NAMES = ["gsm8k", "multiarith", "addsub", "singleeq", "mawps", "strategyqa",
         "strategyqa_bigbench", "coin_flip"]


@pytest.fixture(scope="module")
def report(data_dir):
  return leakage.check_datasets(NAMES, data_dir)


def test_normalize_question():
  assert leakage.normalize_question("Mary has 8 apples . How MANY?") == "mary has 8 apples how many"
  assert leakage.normalize_question("  a,b\n\tc ") == "a b c"
  assert leakage.normalize_question("does n't", compact=True) == leakage.normalize_question(
      "doesn't", compact=True) == "doesnt"


def test_mawps_contains_most_of_multiarith_addsub_singleeq(report):
  # SOURCES.md: at least 550/600, 362/395 and 322/508 after normalisation.
  found = {name: report.find((name, "*"), ("mawps", "*")) for name in
           ("multiarith", "addsub", "singleeq")}
  assert found["multiarith"].left_examples == 550
  assert found["addsub"].left_examples == 362
  assert found["singleeq"].left_examples == 322
  assert found["multiarith"].sample[0] == ("multiarith/test/0", "mawps/fold0_train/413")


def test_compact_mode_finds_all_of_multiarith(data_dir):
  compact = leakage.check_datasets(["multiarith", "mawps"], data_dir, compact=True)
  assert compact.find(("multiarith", "*"), ("mawps", "*")).left_examples == 600


def test_strategyqa_bigbench_is_the_original_train_set(report, data_dir):
  whole = report.find(("strategyqa", "*"), ("strategyqa_bigbench", "*"))
  assert (whole.left_examples, whole.right_examples) == (2290, 2290)
  by_split = leakage.check_datasets(["strategyqa", "strategyqa_bigbench"], data_dir, by_split=True)
  train = by_split.find(("strategyqa", "train"), ("strategyqa_bigbench", "train"))
  dev = by_split.find(("strategyqa", "dev"), ("strategyqa_bigbench", "train"))
  assert (train.left_examples, dev.left_examples) == (2061, 229)
  bigbench = next(g for g in report.groups if g.dataset == "strategyqa_bigbench")
  assert bigbench.duplicates == 1  # SOURCES.md: 2,289 distinct questions


def test_required_disjoint_pairs(report):
  for left, right in [(("gsm8k", "train"), ("gsm8k", "test")),
                      (("strategyqa", "train"), ("strategyqa", "dev"))]:
    assert report.find(left, right).shared == 0
  # MAWPS repeats problems, so each CV fold's dev shares questions with its train.
  assert report.find(("mawps", "fold0_train"), ("mawps", "fold0_dev")).shared == 61
  assert report.find(("gsm8k", "*"), ("coin_flip", "*")).shared == 0


def test_render_lists_leaks_duplicates_and_clean_pairs(report):
  text = report.render()
  assert "strategyqa/*" in text and "2290/2290 (100%)" in text
  assert "(same dataset!)" in text  # the MAWPS fold overlaps
  assert "multiarith/test: 20 of 600" in text
  assert "gsm8k train|test" in text
  assert set(report.to_dict()) == {"compact", "groups", "overlaps"}


def _example(dataset: str, split: str, index: int, question: str) -> Example:
  return Example(id=f"{dataset}/{split}/{index}", dataset=dataset, split=split,
                 question=question, answer="1", answer_type="number")


def test_find_overlaps_counts_examples_and_distinct_questions():
  left = [_example("a", "train", i, q) for i, q in enumerate(["One two.", "one TWO", "Three"])]
  right = [_example("b", "test", i, q) for i, q in enumerate(["one, two", "four"])]
  result = leakage.find_overlaps({("a", "train"): left, ("b", "test"): right})
  (overlap,) = result.overlaps
  assert (overlap.shared, overlap.left_examples, overlap.right_examples) == (1, 2, 1)
  assert overlap.sample == (("a/train/0", "b/test/0"),)
  assert [g.duplicates for g in result.groups] == [1, 0]
  assert not overlap.within_dataset


def test_generated_splits_as_extra_groups(data_dir):
  train = symbolic.generate_coin_flip(200, 4, seed=0, split="train")
  test = symbolic.generate_coin_flip(100, 4, seed=0, split="test", exclude=train)
  extra = leakage.group_examples(train + test + train[:5])
  result = leakage.check_datasets(["coin_flip"], data_dir, extra=extra)
  assert result.find(("coin_flip_gen", "train"), ("coin_flip_gen", "test")).shared == 0
  assert result.find(("coin_flip_gen", "train"), ("coin_flip", "*")).shared == 0
  train_group = next(g for g in result.groups if g.split == "train")
  assert train_group.duplicates == 5
