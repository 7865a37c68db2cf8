"""Accuracy with confidence intervals, and means over cross-validation folds.

Benchmarks here are small (SVAMP 1,000, MultiArith 600, a 5-fold MAWPS fold
384), so a bare accuracy hides how much of a gap between two students is
noise. Every accuracy this package reports carries a 95% interval:

* Wilson's score interval for a proportion (the default): closed form, well
  behaved at 0% and 100% and for small n, unlike the normal approximation.
* A percentile bootstrap for statistics that are not a single proportion
  (a mean CoT length, a difference between two paired runs).

Resampling is seeded, so the numbers are the same on every machine.
"""

from __future__ import annotations

import dataclasses
import math
import statistics as stdlib_statistics
from typing import Callable, Sequence

import numpy as np

DEFAULT_CONFIDENCE = 0.95


def normal_quantile(confidence: float) -> float:
  """Two-sided standard-normal critical value, e.g. 1.95996... for 0.95."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  return stdlib_statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, total: int,
                    confidence: float = DEFAULT_CONFIDENCE
                    ) -> tuple[float, float]:
  """Wilson score interval for the proportion successes / total.

  Returns (low, high) as fractions in [0, 1]. With total == 0 nothing is known
  and the interval is the whole (0, 1) range.
  """
  if total < 0 or successes < 0 or successes > total:
    raise ValueError(
        f"need 0 <= successes <= total, got successes={successes}, total={total}")
  if total == 0:
    return (0.0, 1.0)
  z = normal_quantile(confidence)
  proportion = successes / total
  z_squared_over_n = z * z / total
  denominator = 1.0 + z_squared_over_n
  centre = (proportion + z_squared_over_n / 2.0) / denominator
  half_width = (z / denominator) * math.sqrt(
      proportion * (1.0 - proportion) / total
      + z * z / (4.0 * total * total))
  # Clamp float round-off (e.g. -1e-17 at 0 successes).
  return (max(0.0, centre - half_width), min(1.0, centre + half_width))


def bootstrap_interval(values: Sequence[float],
                       statistic: Callable[[np.ndarray], float] = np.mean,
                       *,
                       confidence: float = DEFAULT_CONFIDENCE,
                       num_resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of `statistic` over `values`.

  Resampling is seeded, so a report regenerated from the same predictions
  shows the same interval.
  """
  data = np.asarray(values, dtype=np.float64)
  if data.size == 0:
    return (math.nan, math.nan)
  rng = np.random.default_rng(seed)
  indices = rng.integers(0, data.size, size=(num_resamples, data.size))
  resampled = np.array([statistic(data[row]) for row in indices])
  tail = (1.0 - confidence) / 2.0
  low, high = np.quantile(resampled, [tail, 1.0 - tail])
  return (float(low), float(high))


def paired_difference_interval(correct_a: Sequence[bool],
                               correct_b: Sequence[bool],
                               *,
                               confidence: float = DEFAULT_CONFIDENCE,
                               num_resamples: int = 2000,
                               seed: int = 0) -> tuple[float, float, float]:
  """Accuracy(a) - accuracy(b) on the same examples, with a paired bootstrap.

  Pairing matters: two students scored on the same questions share the
  questions' difficulty, so the interval of the difference is much narrower
  than what two independent intervals suggest.

  Returns (difference, low, high).
  """
  a = np.asarray(correct_a, dtype=np.float64)
  b = np.asarray(correct_b, dtype=np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired runs need the same examples: {a.shape} vs {b.shape}")
  difference = a - b
  low, high = bootstrap_interval(difference, confidence=confidence,
                                 num_resamples=num_resamples, seed=seed)
  return (float(difference.mean()) if difference.size else math.nan, low, high)


@dataclasses.dataclass(frozen=True)
class Accuracy:
  """An accuracy with its interval; what every table row and plot bar shows."""

  correct: int
  total: int
  low: float
  high: float
  method: str = "wilson"
  confidence: float = DEFAULT_CONFIDENCE

  @property
  def value(self) -> float:
    return self.correct / self.total if self.total else math.nan

  def to_dict(self) -> dict[str, object]:
    return {
        "accuracy": self.value,
        "correct": self.correct,
        "total": self.total,
        "interval": [self.low, self.high],
        "interval_method": self.method,
        "confidence": self.confidence,
    }

  def format(self, digits: int = 1) -> str:
    """'63.2% [60.1, 66.2]' in percent, as the report tables print it."""
    if not self.total:
      return "n/a"
    return (f"{100 * self.value:.{digits}f}% "
            f"[{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]")


def accuracy(correct_flags: Sequence[bool],
             confidence: float = DEFAULT_CONFIDENCE) -> Accuracy:
  """Accuracy of a list of per-example verdicts with a Wilson interval."""
  correct = sum(1 for flag in correct_flags if flag)
  total = len(correct_flags)
  low, high = wilson_interval(correct, total, confidence)
  return Accuracy(correct=correct, total=total, low=low, high=high,
                  confidence=confidence)


def accuracy_from_dict(data: dict) -> Accuracy:
  """Inverse of `Accuracy.to_dict` (used by the report on summary files)."""
  low, high = data["interval"]
  return Accuracy(correct=int(data["correct"]), total=int(data["total"]),
                  low=float(low), high=float(high),
                  method=data.get("interval_method", "wilson"),
                  confidence=float(data.get("confidence", DEFAULT_CONFIDENCE)))


def t_quantile(confidence: float, degrees_of_freedom: int) -> float:
  """Two-sided Student-t critical value (12.706 for 95% and 1 dof).

  Five folds give four degrees of freedom, where the normal quantile would
  understate the interval by 30%. scipy comes with jax, so it is always here.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(0.5 + confidence / 2.0, degrees_of_freedom))


@dataclasses.dataclass(frozen=True)
class FoldMean:
  """Mean of per-fold accuracies, as MAWPS / ASDiv-A results are reported."""

  fold_values: tuple[float, ...]
  mean: float
  standard_deviation: float
  low: float
  high: float

  def to_dict(self) -> dict[str, object]:
    return {"fold_accuracies": list(self.fold_values), "mean": self.mean,
            "standard_deviation": self.standard_deviation,
            "interval": [self.low, self.high],
            "interval_method": "student_t_over_folds"}


def fold_mean(fold_values: Sequence[float],
              confidence: float = DEFAULT_CONFIDENCE) -> FoldMean:
  """Mean over folds with a t interval over the fold-level accuracies."""
  values = tuple(float(v) for v in fold_values)
  if not values:
    raise ValueError("fold_mean needs at least one fold")
  mean = sum(values) / len(values)
  if len(values) == 1:
    return FoldMean(values, mean, 0.0, math.nan, math.nan)
  deviation = stdlib_statistics.stdev(values)
  half_width = (t_quantile(confidence, len(values) - 1)
                * deviation / math.sqrt(len(values)))
  return FoldMean(values, mean, deviation,
                  max(0.0, mean - half_width), min(1.0, mean + half_width))
