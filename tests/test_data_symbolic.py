"""Coin flip / last letters generators: Kojima's format, seeded, any length."""

from __future__ import annotations

import collections
import re

import pytest

from cot_distill.data import registry, symbolic
from cot_distill.data.example import AnswerType

# One pattern for Kojima's file and our output: same wording, any number of people.
COIN_FLIP = re.compile(r'^A coin is heads up\.((?: [^.]+ (?:flips|does not flip) the coin\.)+) '
                       r'Is the coin still heads up\? Note that "flip" here means "reverse"\.$')
LAST_LETTERS = re.compile(
    r'^Take the last letters of each words in "([^"]+)" and concatenate them\.$')


def test_generated_questions_match_kojima_format(data_dir):
  for example in registry.load("coin_flip", "test", data_dir):
    assert COIN_FLIP.match(example.question), example.question
  for example in registry.load("last_letters", "test", data_dir):
    assert LAST_LETTERS.match(example.question), example.question
  for example in symbolic.generate_coin_flip(50, 4, seed=3, split="test"):
    assert COIN_FLIP.match(example.question)
  for example in symbolic.generate_last_letters(50, 4, seed=3, split="test"):
    assert LAST_LETTERS.match(example.question)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_coin_flip_answers_follow_the_flips(steps):
  examples = symbolic.generate_coin_flip(200, steps, seed=11, split="ood")
  for example in examples:
    actions = COIN_FLIP.match(example.question).group(1)
    flips = actions.count(" flips the coin.")
    assert flips + actions.count(" does not flip the coin.") == steps
    assert flips == sum(example.meta["flips"])
    assert example.answer == ("yes" if flips % 2 == 0 else "no")
    assert example.answer_type is AnswerType.YES_NO
    side = "heads" if example.answer == "yes" else "tails"
    assert example.gold_rationale.endswith(f"The coin ends {side} up.")
  assert 0.4 < collections.Counter(e.answer for e in examples)["yes"] / 200 < 0.6


@pytest.mark.parametrize("steps", [2, 4, 9])
def test_last_letters_answers(steps):
  for example in symbolic.generate_last_letters(100, steps, seed=5, split="train"):
    words = LAST_LETTERS.match(example.question).group(1).split()
    assert len(words) == steps == example.meta["num_words"]
    assert example.answer == "".join(word[-1] for word in words)
    assert example.answer_type is AnswerType.LETTERS
    assert example.gold_rationale.endswith(f'Concatenating them is "{example.answer}".')


def test_seeded_deterministic_and_split_dependent():
  first = symbolic.generate_coin_flip(30, 4, seed=1, split="train")
  assert symbolic.generate_coin_flip(30, 4, seed=1, split="train") == first
  assert symbolic.generate_coin_flip(30, 4, seed=2, split="train") != first
  test = symbolic.generate_coin_flip(30, 4, seed=1, split="test")
  assert [e.question for e in test] != [e.question for e in first]
  assert first[0].id == "coin_flip_gen/train/0" and test[29].id == "coin_flip_gen/test/29"
  letters = symbolic.generate_last_letters(5, 3, seed=1, split="dev")
  assert {e.dataset for e in letters} == {"last_letters_gen"}
  # Pinned values: a change to the name pool or the random stream shows here
  # (and would silently change every generated split made before it).
  assert letters[0].meta["words"] == ["Magnus", "Everett", "Hana"]
  assert letters[0].answer == "sta"
  assert symbolic.generate_coin_flip(1, 2, 0, "train")[0].question == (
      'A coin is heads up. Viktor flips the coin. Jamal flips the coin. '
      'Is the coin still heads up? Note that "flip" here means "reverse".')


def test_distinct_and_exclusion():
  train = symbolic.generate_last_letters(300, 2, seed=0, split="train")
  assert len({e.question for e in train}) == 300
  test = symbolic.generate_last_letters(300, 2, seed=0, split="test", exclude=train)
  assert not {e.question for e in train} & {e.question for e in test}


def test_impossible_requests_raise():
  with pytest.raises(ValueError, match="distinct names"):
    symbolic.generate_coin_flip(1, num_people=3, seed=0, split="x", pool=("Ann", "Bo"))
  # One person from two names, flipping or not: only 4 distinct questions exist.
  with pytest.raises(ValueError, match="could not make 5 distinct questions"):
    symbolic.generate_coin_flip(5, num_people=1, seed=0, split="x", pool=("Ann", "Bo"))
  with pytest.raises(ValueError, match="steps must be >= 1"):
    symbolic.generate_last_letters(3, num_words=0, seed=0, split="x")
  assert symbolic.generate_coin_flip(4, num_people=1, seed=0, split="x", pool=("Ann", "Bo"))
