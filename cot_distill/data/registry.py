"""The benchmark registry: names, splits, licences, files and loaders.

    from cot_distill.data import registry
    examples = registry.load("gsm8k", "test")          # list[Example]
    registry.splits("mawps")                            # ("fold0_train", ...)

Data directory precedence (first that applies): the `data_dir` argument,
env COT_DISTILL_DATA_DIR, then the download cache ~/.cache/cot_distill/data
(filled by `cot_distill.data.download.download`, i.e.
`cot-distill datasets download NAME`). The directory has the layout of
shared/data (`gsm8k/test.jsonl`, ...), so a copy of that folder works as is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Callable, Mapping

from cot_distill.data import arithmetic, asdiv, bigbench, kojima_symbolic, mawps
from cot_distill.data import multiple_choice, strategyqa
from cot_distill.data.errors import MissingDataError
from cot_distill.data.example import AnswerType, Example
from cot_distill.data.sources import FILES, DataFile

MAX_EXAMPLES_ENV = "COT_DISTILL_MAX_EXAMPLES"
DATA_DIR_ENV = "COT_DISTILL_DATA_DIR"
Loader = Callable[[pathlib.Path, str], list[Example]]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the registry knows about one benchmark.

  Attributes:
    expected_counts: examples per split in the pinned files (SOURCES.md);
      `cot-distill datasets list` flags any difference.
    partition: splits that together hold every problem exactly once; the
      leakage check compares datasets over these (comparing all 10 MAWPS
      fold splits would count each problem five times).
    disjoint_pairs: pairs of this dataset's splits that must not share
      questions (train/test, or two CV folds); the leakage check tests them.
  """

  name: str
  description: str
  answer_type: AnswerType
  expected_counts: Mapping[str, int]
  licence: str
  homepage: str
  files: tuple[DataFile, ...]
  loader: Loader = dataclasses.field(repr=False, compare=False)
  partition: tuple[str, ...] = ()
  disjoint_pairs: tuple[tuple[str, str], ...] = ()

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.expected_counts)

  @property
  def download_urls(self) -> tuple[str, ...]:
    return tuple(data_file.url for data_file in self.files)


# Kojima et al.'s repository has no licence; the upstream terms of these
# copies were not verified (shared/data/SOURCES.md).
_KOJIMA_LICENCE = "unverified (Kojima et al. copy, no licence file)"
_KOJIMA_HOME = "https://github.com/kojima-takeshi188/zero_shot_cot"


def _fold_pairs(splits: list[str]) -> tuple[tuple[str, str], ...]:
  return tuple((a, b) for i, a in enumerate(splits) for b in splits[i + 1:])


def _info(name: str, description: str, answer_type: AnswerType, counts: dict[str, int],
          licence: str, homepage: str, loader: Loader, partition=None,
          disjoint_pairs=None) -> DatasetInfo:
  splits = list(counts)
  return DatasetInfo(
      name=name, description=description, answer_type=answer_type,
      expected_counts=counts, licence=licence, homepage=homepage, files=FILES[name],
      loader=loader, partition=tuple(partition or splits),
      disjoint_pairs=tuple(disjoint_pairs if disjoint_pairs is not None
                           else _fold_pairs(splits)))


_FOLDS = [f"fold{k}" for k in range(5)]
_ASDIV_A_COUNTS = dict(zip(_FOLDS, (238, 238, 238, 238, 266)))
_ASDIV_W_COUNTS = dict(zip(_FOLDS, (444, 444, 444, 444, 529)))
_MAWPS_COUNTS = {split: (1537 if split.endswith("train") else 384) for split in mawps.SPLITS}

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    _info("gsm8k", "Grade-school maths, worked solutions (Cobbe et al. 2021)",
          AnswerType.NUMBER, {"train": 7473, "test": 1319}, "MIT",
          "https://github.com/openai/grade-school-math", arithmetic.load_gsm8k),
    _info("svamp", "Arithmetic challenge set with varied structures (Patel et al. 2021)",
          AnswerType.NUMBER, {"test": 1000}, "MIT (byte-identical to arkilpatel/SVAMP)",
          "https://github.com/arkilpatel/SVAMP", arithmetic.load_svamp),
    _info("multiarith", "Multi-step arithmetic (Roy & Roth 2015)", AnswerType.NUMBER,
          {"test": 600}, _KOJIMA_LICENCE, _KOJIMA_HOME, arithmetic.load_multiarith),
    _info("addsub", "Addition/subtraction problems (Hosseini et al. 2014)",
          AnswerType.NUMBER, {"test": 395}, _KOJIMA_LICENCE, _KOJIMA_HOME,
          arithmetic.load_addsub),
    _info("singleeq", "Single-equation problems (Koncel-Kedziorski et al. 2015)",
          AnswerType.NUMBER, {"test": 508}, _KOJIMA_LICENCE, _KOJIMA_HOME,
          arithmetic.load_singleeq),
    _info("asdiv", "ASDiv whole set ('test') and its 5 CV folds (Miao et al. 2020); "
          "219 answers are not single numbers (meta answer_is_number)",
          AnswerType.NUMBER, {"test": 2305, **_ASDIV_W_COUNTS},
          "CC BY-NC 4.0 (non-commercial)", "https://github.com/chaochun/nlu-asdiv-dataset",
          asdiv.load_asdiv, partition=["test"], disjoint_pairs=_fold_pairs(_FOLDS)),
    _info("asdiv_a", "ASDiv-A, the arithmetic subset, 5 CV folds", AnswerType.NUMBER,
          _ASDIV_A_COUNTS, "CC BY-NC 4.0 (non-commercial)",
          "https://github.com/chaochun/nlu-asdiv-dataset", asdiv.load_asdiv_a),
    _info("mawps", "MAWPS, SVAMP authors' 5-fold CV (1,921 problems per fold)",
          AnswerType.NUMBER, _MAWPS_COUNTS, "MIT (arkilpatel/SVAMP pre-processing)",
          "https://github.com/arkilpatel/SVAMP", mawps.load_mawps,
          partition=["fold0_train", "fold0_dev"],
          disjoint_pairs=[(f"fold{k}_train", f"fold{k}_dev") for k in range(5)]),
    _info("aqua", "Algebra questions with 5 options and rationales (Ling et al. 2017)",
          AnswerType.MULTIPLE_CHOICE, {"test": 254}, _KOJIMA_LICENCE,
          "https://github.com/google-deepmind/AQuA", multiple_choice.load_aqua),
    _info("strategyqa", "Implicit multi-hop yes/no questions with facts (Geva et al. 2021); "
          "eladsegal's 90/10 split of the official train set", AnswerType.YES_NO,
          {"train": 2061, "dev": 229}, "MIT (eladsegal/strategyqa)",
          "https://github.com/eladsegal/strategyqa", strategyqa.load_strategyqa),
    _info("strategyqa_bigbench", "StrategyQA official train set in BIG-bench format "
          "(same questions as strategyqa train+dev)", AnswerType.YES_NO, {"train": 2290},
          _KOJIMA_LICENCE, "https://github.com/google/BIG-bench",
          strategyqa.load_strategyqa_bigbench),
    _info("commonsenseqa", "Commonsense multiple choice (Talmor et al. 2019); dev is "
          "the usual test set", AnswerType.MULTIPLE_CHOICE, {"train": 9741, "dev": 1221},
          _KOJIMA_LICENCE, "https://www.tau-nlp.org/commonsenseqa",
          multiple_choice.load_commonsenseqa),
    _info("coin_flip", "Kojima et al.'s coin flip set, 4 people per question",
          AnswerType.YES_NO, {"test": 500},
          "none (Kojima et al.'s unlicensed generator)", _KOJIMA_HOME,
          kojima_symbolic.load_coin_flip),
    _info("last_letters", "Kojima et al.'s last-letter concatenation, 4 names",
          AnswerType.LETTERS, {"test": 500},
          "none (Kojima et al.'s unlicensed generator)", _KOJIMA_HOME,
          kojima_symbolic.load_last_letters),
    _info("date_understanding", "BIG-bench date understanding (options shuffled, seeded)",
          AnswerType.DATE_OPTION, {"test": 369}, _KOJIMA_LICENCE,
          "https://github.com/google/BIG-bench", bigbench.load_date_understanding),
    _info("tracking_shuffled_objects", "BIG-bench tracking shuffled objects, three objects",
          AnswerType.OPTION_TEXT, {"test": 750}, _KOJIMA_LICENCE,
          "https://github.com/google/BIG-bench", bigbench.load_tracking_shuffled_objects),
)}


def default_cache_dir() -> pathlib.Path:
  """~/.cache/cot_distill/data (XDG_CACHE_HOME respected), where downloads go."""
  cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(cache_root) / "cot_distill" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """Explicit argument > env COT_DISTILL_DATA_DIR > download cache."""
  if data_dir:
    return pathlib.Path(data_dir).expanduser()
  from_env = os.environ.get(DATA_DIR_ENV)
  if from_env:
    return pathlib.Path(from_env).expanduser()
  return default_cache_dir()


def max_examples_from_env() -> int | None:
  """$COT_DISTILL_MAX_EXAMPLES: every split is cut to its first N examples.

  For smoke runs of whole pipelines (CI runs the README's commands this
  way): one setting makes annotation, training data and evaluation small
  without changing a command line. Unset or empty means no limit.
  """
  value = os.environ.get(MAX_EXAMPLES_ENV, "").strip()
  if not value:
    return None
  try:
    limit = int(value)
  except ValueError:
    limit = 0
  if limit < 1:
    raise ValueError(f"${MAX_EXAMPLES_ENV}={value!r}: expected a positive integer")
  logging.getLogger(__name__).debug("%s=%d: splits are cut to their first %d examples",
                                    MAX_EXAMPLES_ENV, limit, limit)
  return limit


def get_info(name: str) -> DatasetInfo:
  try:
    return DATASETS[name]
  except KeyError:
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def splits(name: str) -> tuple[str, ...]:
  return get_info(name).splits


def load(name: str, split: str, data_dir: str | os.PathLike[str] | None = None
         ) -> list[Example]:
  """Examples of one split, in source order, ids `{name}/{split}/{index}`.

  Raises:
    KeyError: unknown dataset.
    ValueError: unknown split.
    MissingDataError: a file is absent (message names it and how to get it).
    DataFormatError: malformed content (message names file and line).
  """
  info = get_info(name)
  if split not in info.splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(info.splits)}")
  root = resolve_data_dir(data_dir)
  try:
    examples = info.loader(root, split)
    limit = max_examples_from_env()
    return examples if limit is None else examples[:limit]
  except MissingDataError as error:
    raise MissingDataError(error.path, (
        f"run `cot-distill datasets download {name} --data-dir {root}`, or point "
        f"--data-dir / {DATA_DIR_ENV} at a copy of the files")) from None
