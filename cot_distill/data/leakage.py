"""Leakage check: which questions appear in two splits or datasets.

Questions are compared after normalisation (lowercase, punctuation turned
into spaces, whitespace collapsed), which matches the spelling variants
between these sources: MAWPS writes "cake . The" where AddSub writes
"cake. The". The optional compact mode also drops spaces, catching
tokenisation variants such as "does n't" / "doesn't" (MultiArith vs MAWPS:
550/600 normalised, 600/600 compact) at a small risk of false matches.

Which pairs are compared (`check_datasets`):
* across datasets: each dataset as a whole (`name/*`, the union of its
  `partition`, the splits that hold each problem once) against every other,
  or with `by_split` each partition split against each;
* within a dataset: its `disjoint_pairs` (train/test, CV folds), which must
  be empty;
* extra groups (e.g. generated or annotated JSONL files) against everything.
Known results on the shared data: MAWPS contains most of MultiArith, AddSub
and SingleEq, and strategyqa train+dev are exactly the BIG-bench copy.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Iterable, Mapping, Sequence

from cot_distill.data import registry
from cot_distill.data.example import Example

Group = tuple[str, str]  # (dataset, split)
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")  # \W is Unicode-aware: "é" stays


def normalize_question(text: str, compact: bool = False) -> str:
  """'Mary has 8 apples . How many?' -> 'mary has 8 apples how many'."""
  words = _NOT_ALPHANUMERIC.sub(" ", text.lower()).split()
  return "".join(words) if compact else " ".join(words)


@dataclasses.dataclass(frozen=True)
class GroupSummary:
  """One (dataset, split): its size and repeated questions inside it."""

  dataset: str
  split: str
  size: int
  distinct: int
  duplicate_sample: tuple[tuple[str, str], ...]  # (first id, repeat id)

  @property
  def duplicates(self) -> int:
    return self.size - self.distinct


@dataclasses.dataclass(frozen=True)
class Overlap:
  """Questions shared by two groups.

  Attributes:
    shared: distinct normalised questions present in both.
    left_examples / right_examples: examples of each side whose question is
      in the other (differs from `shared` when a side repeats questions).
    sample: up to a few (left id, right id) pairs, to look at by hand.
    within_dataset: both groups are splits of one dataset.
  """

  left: Group
  right: Group
  left_size: int
  right_size: int
  shared: int
  left_examples: int
  right_examples: int
  sample: tuple[tuple[str, str], ...]

  @property
  def within_dataset(self) -> bool:
    return self.left[0] == self.right[0]


@dataclasses.dataclass(frozen=True)
class LeakageReport:
  compact: bool
  groups: tuple[GroupSummary, ...]
  overlaps: tuple[Overlap, ...]  # every compared pair, overlapping or not

  @property
  def leaks(self) -> tuple[Overlap, ...]:
    return tuple(overlap for overlap in self.overlaps if overlap.shared)

  def find(self, left: Group, right: Group) -> Overlap | None:
    for overlap in self.overlaps:
      if {overlap.left, overlap.right} == {left, right}:
        return overlap
    return None

  def to_dict(self) -> dict:
    return {"compact": self.compact,
            "groups": [dataclasses.asdict(group) | {"duplicates": group.duplicates}
                       for group in self.groups],
            "overlaps": [dataclasses.asdict(overlap) for overlap in self.overlaps]}

  def render(self) -> str:
    return render_report(self)


def _name(group: Group) -> str:
  return f"{group[0]}/{group[1]}"


def _index(examples: Sequence[Example], compact: bool):
  first_id: dict[str, str] = {}
  counts: collections.Counter[str] = collections.Counter()
  repeats = []
  for example in examples:
    key = normalize_question(example.question, compact)
    counts[key] += 1
    if key in first_id:
      repeats.append((first_id[key], example.id))
    else:
      first_id[key] = example.id
  return first_id, counts, tuple(repeats)


def find_overlaps(groups: Mapping[Group, Sequence[Example]],
                  pairs: Iterable[tuple[Group, Group]] | None = None, *,
                  compact: bool = False, sample_size: int = 3) -> LeakageReport:
  """Compares the given pairs of groups (default: every unordered pair)."""
  indexed = {group: _index(examples, compact) for group, examples in groups.items()}
  names = list(groups)
  if pairs is None:
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
  overlaps = []
  for left, right in pairs:
    left_ids, left_counts, _ = indexed[left]
    right_ids, right_counts, _ = indexed[right]
    shared_keys = left_ids.keys() & right_ids.keys()
    ordered = [key for key in left_ids if key in shared_keys]  # left's file order
    overlaps.append(Overlap(
        left=left, right=right, left_size=len(groups[left]), right_size=len(groups[right]),
        shared=len(shared_keys),
        left_examples=sum(left_counts[key] for key in shared_keys),
        right_examples=sum(right_counts[key] for key in shared_keys),
        sample=tuple((left_ids[key], right_ids[key]) for key in ordered[:sample_size])))
  summaries = tuple(
      GroupSummary(group[0], group[1], len(groups[group]), len(indexed[group][0]),
                   indexed[group][2][:sample_size])
      for group in names)
  return LeakageReport(compact, summaries, tuple(overlaps))


ALL_SPLITS = "*"  # split name of a group holding a whole dataset (its partition)


def check_datasets(names: Sequence[str] | None = None,
                   data_dir: str | os.PathLike[str] | None = None, *,
                   extra: Mapping[Group, Sequence[Example]] | None = None,
                   compact: bool = False, by_split: bool = False) -> LeakageReport:
  """Loads registry datasets (default: all) and checks them and `extra`.

  Args:
    names: registry names to check.
    data_dir: see `registry.resolve_data_dir`.
    extra: more groups, e.g. `group_examples(generated)`; each is compared
      with every dataset and every other extra group.
    compact: also ignore spaces (see `normalize_question`).
    by_split: compare datasets split by split (each split of the partition)
      instead of as wholes (`name/*`, the union of the partition).
  """
  names = list(names or registry.DATASETS)
  extra = dict(extra or {})
  loaded: dict[Group, list[Example]] = {}

  def split_group(name: str, split: str) -> Group:
    if (name, split) not in loaded:
      loaded[(name, split)] = registry.load(name, split, data_dir)
    return (name, split)

  pairs: list[tuple[Group, Group]] = []
  units: dict[str, list[Group]] = {}
  for name in names:
    info = registry.get_info(name)
    pairs += [(split_group(name, a), split_group(name, b)) for a, b in info.disjoint_pairs]
    partition = [split_group(name, split) for split in info.partition]
    if by_split:
      units[name] = partition
    else:
      loaded[(name, ALL_SPLITS)] = [ex for group in partition for ex in loaded[group]]
      units[name] = [(name, ALL_SPLITS)]
  for i, first in enumerate(names):
    for second in names[i + 1:]:
      pairs += [(a, b) for a in units[first] for b in units[second]]
  every_unit = [group for name in names for group in units[name]]
  extra_groups = list(extra)
  for i, group in enumerate(extra_groups):
    loaded[group] = list(extra[group])
    pairs += [(group, other) for other in every_unit + extra_groups[i + 1:]]
  return find_overlaps(loaded, pairs, compact=compact)


def group_examples(examples: Iterable[Example]) -> dict[Group, list[Example]]:
  """Buckets examples (e.g. a generated JSONL file) by (dataset, split)."""
  grouped: dict[Group, list[Example]] = {}
  for example in examples:
    grouped.setdefault((example.dataset, example.split), []).append(example)
  return grouped


def render_report(report: LeakageReport) -> str:
  """A plain-text summary: leaks first, then duplicates, then clean pairs."""
  mode = "compact" if report.compact else "normalised"
  lines = [f"Leakage check ({mode} question text): {len(report.groups)} groups, "
           f"{len(report.overlaps)} pairs compared, {len(report.leaks)} with overlap."]
  if report.leaks:
    lines.append("")
    lines.append(f"{'left':32s} {'right':32s} {'shared':>7s} {'left in right':>15s} "
                 f"{'right in left':>15s}")
    for overlap in sorted(report.leaks, key=lambda o: -o.shared):
      lines.append(
          f"{_name(overlap.left):32s} {_name(overlap.right):32s} {overlap.shared:7d} "
          f"{_fraction(overlap.left_examples, overlap.left_size):>15s} "
          f"{_fraction(overlap.right_examples, overlap.right_size):>15s}"
          + ("  (same dataset!)" if overlap.within_dataset else ""))
      for left_id, right_id in overlap.sample[:1]:
        lines.append(f"    e.g. {left_id} == {right_id}")
  # A whole-dataset group repeats its only split's line; list it once.
  split_lines = {(g.dataset, g.size, g.duplicates) for g in report.groups
                 if g.split != ALL_SPLITS}
  duplicated = [group for group in report.groups if group.duplicates and not (
      group.split == ALL_SPLITS
      and (group.dataset, group.size, group.duplicates) in split_lines)]
  if duplicated:
    lines += ["", "Repeated questions inside one split:"]
    for group in duplicated:
      example = f" (e.g. {group.duplicate_sample[0][0]} == {group.duplicate_sample[0][1]})"
      lines.append(f"  {group.dataset}/{group.split}: {group.duplicates} of {group.size}"
                   + example)
  clean = [o for o in report.overlaps if o.within_dataset and not o.shared]
  if clean:
    lines += ["", "Disjoint as required: " + ", ".join(
        f"{o.left[0]} {o.left[1]}|{o.right[1]}" for o in clean)]
  return "\n".join(lines)


def _fraction(part: int, whole: int) -> str:
  return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0"
