"""Generators for coin flip and last-letter concatenation of any size/length.

Kojima et al.'s fixed 500-item sets have 4 names per question and no train
split. These generators write the same question format with a configurable
number of steps (people / words), so we can make train, test and longer
out-of-distribution splits (e.g. train on 2 steps, test on 4 and 6).

Determinism: the random stream is seeded by (dataset, seed, split, steps),
so the same call gives the same examples on every machine and Python
version, and a "train" and a "test" split made with the same seed differ.
Questions are distinct within one call; pass `exclude` (questions or
examples of other splits) to keep splits disjoint as well.

Each example carries a step-by-step gold rationale (no final answer
sentence; `cot_distill.answers.answer_sentence` adds that), so the data can
also train or check a rationale-producing model without a teacher.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

from cot_distill.data.example import AnswerType, Example, make_id

COIN_FLIP_DATASET = "coin_flip_gen"
LAST_LETTERS_DATASET = "last_letters_gen"

# Our own pool of single-word first names from many languages, ASCII letters
# only, so last letters are unambiguous and the tokenizer sees plain words.
FIRST_NAMES: tuple[str, ...] = (
    "Abel", "Ada", "Adrian", "Agnes", "Aiko", "Alba", "Aldo", "Alma", "Amir",
    "Anika", "Anton", "Arjun", "Astrid", "Aurora", "Bao", "Beatriz", "Bernard",
    "Bianca", "Boris", "Bruno", "Camila", "Carmen", "Cecil", "Chidi", "Clara",
    "Colin", "Dalia", "Damien", "Dara", "Dmitri", "Dolores", "Edgar", "Eitan",
    "Elif", "Elena", "Emeka", "Enzo", "Esther", "Ezra", "Fabian", "Farah",
    "Felix", "Fiona", "Florin", "Freya", "Gideon", "Gemma", "Greta", "Gustav",
    "Hana", "Hamid", "Harriet", "Hector", "Helga", "Hugo", "Ilse", "Imani",
    "Ines", "Ingrid", "Isaac", "Ivan", "Jakob", "Jamal", "Jana", "Jasper",
    "Joaquin", "Jonas", "Julia", "Kamal", "Karin", "Kenji", "Keren", "Kofi",
    "Lars", "Layla", "Leon", "Lidia", "Linus", "Lorenzo", "Lucia", "Magnus",
    "Maia", "Malik", "Marta", "Mateo", "Milan", "Mira", "Moritz", "Nadia",
    "Naveen", "Nell", "Nikolai", "Nora", "Odette", "Olaf", "Omar", "Oriana",
    "Oscar", "Pablo", "Paloma", "Petra", "Pieter", "Priya", "Quentin", "Rafael",
    "Rania", "Reza", "Rhea", "Rohan", "Rosa", "Rufus", "Sabine", "Salma",
    "Samir", "Selma", "Sergei", "Sienna", "Silas", "Sofia", "Stellan", "Suki",
    "Tamsin", "Tariq", "Thea", "Tobias", "Tomas", "Ulla", "Umar", "Valentin",
    "Vera", "Viktor", "Wanda", "Wendell", "Xavier", "Yara", "Yusuf", "Yvonne",
    "Zainab", "Zeno", "Zora", "Bertram", "Cosima", "Darius", "Elodie", "Fergus",
    "Gwen", "Horatio", "Ismael", "Juno", "Kasimir", "Ludmila", "Mordecai",
    "Nikita", "Ottilie", "Perpetua", "Radek", "Solveig", "Teodor", "Wilhelmina",
    # Endings other than a/n/s keep the answers' letters varied.
    "Toby", "Wesley", "Harvey", "Ruby", "Audrey", "Dudley", "Rory", "Percy",
    "Claude", "Blaise", "Maurice", "Yvette", "Irene", "Jude", "Louise", "Pierre",
    "Albert", "Margot", "Robert", "Everett", "Derek", "Patrick", "Henrik",
    "Alfred", "David", "Sigrid", "Conrad", "Judith", "Hannah", "Sarah", "Noah",
    "Joseph", "Miriam", "Adam", "William", "Abraham", "Philip", "Beau", "Manu",
    "Andrew", "Matthew", "Marlow", "Greg", "Doug", "Eric", "Marc", "Dominic",
    "Ludovic", "Caleb", "Jacob", "Raj", "Lev", "Jaroslav", "Max", "Alex",
)

_COIN_START = "A coin is heads up."
_COIN_END = 'Is the coin still heads up? Note that "flip" here means "reverse".'


def _rng(dataset: str, seed: int, split: str, steps: int) -> random.Random:
  # A string seed is hashed with SHA-512 by `random`, independent of
  # PYTHONHASHSEED, so streams are stable across processes and machines.
  return random.Random(f"{dataset}|{seed}|{split}|{steps}")


def _excluded_questions(exclude: Iterable[str | Example]) -> set[str]:
  return {item.question if isinstance(item, Example) else item for item in exclude}


def _check_arguments(n: int, steps: int, pool: Sequence[str]) -> None:
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  if steps < 1:
    raise ValueError(f"the number of steps must be >= 1, got {steps}")
  if steps > len(pool):
    raise ValueError(f"{steps} steps need {steps} distinct names; the pool has {len(pool)}")


def _generate(n: int, make_one, rng: random.Random, exclude: set[str]) -> list:
  """Calls make_one(rng) until n distinct, non-excluded questions exist."""
  items, seen = [], set(exclude)
  attempts, max_attempts = 0, 50 * n + 1000
  while len(items) < n:
    attempts += 1
    if attempts > max_attempts:
      raise ValueError(f"could not make {n} distinct questions (made {len(items)}); "
                       "use more steps, a larger pool or a smaller n")
    item = make_one(rng)
    if item[0] not in seen:
      seen.add(item[0])
      items.append(item)
  return items


def coin_flip_question(names: Sequence[str], flips: Sequence[bool]) -> str:
  """Kojima et al.'s wording, one sentence per person."""
  actions = [f"{name} flips the coin." if flipped else f"{name} does not flip the coin."
             for name, flipped in zip(names, flips)]
  return " ".join([_COIN_START, *actions, _COIN_END])


def coin_flip_rationale(names: Sequence[str], flips: Sequence[bool]) -> str:
  """Tracks the coin person by person, ending with its final side."""
  heads_up, sentences = True, ["The coin starts heads up."]
  for name, flipped in zip(names, flips):
    if flipped:
      heads_up = not heads_up
      side = "heads" if heads_up else "tails"
      sentences.append(f"{name} flips the coin, so it is now {side} up.")
    else:
      side = "heads" if heads_up else "tails"
      sentences.append(f"{name} does not flip the coin, so it stays {side} up.")
  sentences.append(f"The coin ends {'heads' if heads_up else 'tails'} up.")
  return " ".join(sentences)


def generate_coin_flip(n: int, num_people: int = 4, seed: int = 0, split: str = "train",
                       *, exclude: Iterable[str | Example] = (),
                       pool: Sequence[str] = FIRST_NAMES) -> list[Example]:
  """`n` coin-flip questions with `num_people` people each.

  The answer is "yes" when the number of flips is even. Each person flips
  with probability 1/2, so answers are balanced in expectation.
  """
  _check_arguments(n, num_people, pool)

  def make_one(rng: random.Random):
    names = rng.sample(list(pool), num_people)
    flips = [rng.random() < 0.5 for _ in names]
    return coin_flip_question(names, flips), names, flips

  rng = _rng(COIN_FLIP_DATASET, seed, split, num_people)
  examples = []
  for index, (question, names, flips) in enumerate(
      _generate(n, make_one, rng, _excluded_questions(exclude))):
    examples.append(Example(
        id=make_id(COIN_FLIP_DATASET, split, index), dataset=COIN_FLIP_DATASET,
        split=split, question=question, answer="yes" if sum(flips) % 2 == 0 else "no",
        answer_type=AnswerType.YES_NO, gold_rationale=coin_flip_rationale(names, flips),
        meta={"num_people": num_people, "names": list(names), "flips": list(flips),
              "seed": seed}))
  return examples


def last_letters_question(words: Sequence[str]) -> str:
  """Kojima et al.'s wording (including its "each words")."""
  return (f'Take the last letters of each words in "{" ".join(words)}" '
          "and concatenate them.")


def last_letters_rationale(words: Sequence[str]) -> str:
  sentences = [f'The last letter of "{word}" is "{word[-1]}".' for word in words]
  answer = "".join(word[-1] for word in words)
  sentences.append(f'Concatenating them is "{answer}".')
  return " ".join(sentences)


def generate_last_letters(n: int, num_words: int = 4, seed: int = 0, split: str = "train",
                          *, exclude: Iterable[str | Example] = (),
                          pool: Sequence[str] = FIRST_NAMES) -> list[Example]:
  """`n` last-letter concatenation questions over `num_words` distinct names."""
  _check_arguments(n, num_words, pool)

  def make_one(rng: random.Random):
    words = rng.sample(list(pool), num_words)
    return last_letters_question(words), words

  rng = _rng(LAST_LETTERS_DATASET, seed, split, num_words)
  examples = []
  for index, (question, words) in enumerate(
      _generate(n, make_one, rng, _excluded_questions(exclude))):
    examples.append(Example(
        id=make_id(LAST_LETTERS_DATASET, split, index), dataset=LAST_LETTERS_DATASET,
        split=split, question=question, answer="".join(word[-1] for word in words),
        answer_type=AnswerType.LETTERS, gold_rationale=last_letters_rationale(words),
        meta={"num_words": num_words, "words": list(words), "seed": seed}))
  return examples
