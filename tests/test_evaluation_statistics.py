"""Interval maths: Wilson, bootstrap, paired difference, fold means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cot_distill.evaluation import statistics


def test_normal_quantile_95():
  assert statistics.normal_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    "successes,total,low,high",
    [
        # Independent check: the interval's ends are the roots of
        # (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0, z = 1.959964.
        (5, 10, 0.236593, 0.763407),
        # Zero successes: low is 0, high = (z^2/n) / (1 + z^2/n).
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722468, 1.0),
        # Roots of (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0.
        (632, 1000, 0.601658, 0.661332),
    ])
def test_wilson_interval_known_values(successes, total, low, high):
  got_low, got_high = statistics.wilson_interval(successes, total)
  assert got_low == pytest.approx(low, abs=1e-6)
  assert got_high == pytest.approx(high, abs=1e-6)


def test_wilson_interval_matches_hand_computation():
  z = statistics.normal_quantile(0.95)
  n, k = 37, 11
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  assert statistics.wilson_interval(k, n) == pytest.approx(
      (centre - half, centre + half))


def test_wilson_interval_contains_proportion_and_narrows_with_n():
  small = statistics.wilson_interval(3, 10)
  large = statistics.wilson_interval(300, 1000)
  assert small[0] < 0.3 < small[1]
  assert large[0] < 0.3 < large[1]
  assert (large[1] - large[0]) < (small[1] - small[0]) / 5


def test_wilson_interval_rejects_impossible_counts():
  with pytest.raises(ValueError, match="successes"):
    statistics.wilson_interval(11, 10)
  assert statistics.wilson_interval(0, 0) == (0.0, 1.0)


def test_accuracy_object_and_format():
  result = statistics.accuracy([True, False, True, True])
  assert (result.correct, result.total, result.value) == (3, 4, 0.75)
  assert result.format() == (f"75.0% [{100 * result.low:.1f}, "
                             f"{100 * result.high:.1f}]")
  assert statistics.accuracy_from_dict(result.to_dict()) == result


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
  values = np.arange(100, dtype=float)
  first = statistics.bootstrap_interval(values)
  assert first == statistics.bootstrap_interval(values)
  assert first[0] < 49.5 < first[1]
  # Standard error of the mean of 0..99 is about 2.9, so the 95% interval
  # is about +-5.7 wide on each side.
  assert 4.0 < 49.5 - first[0] < 7.5


def test_paired_difference_interval():
  a = [True] * 60 + [False] * 40
  b = [True] * 50 + [False] * 50
  difference, low, high = statistics.paired_difference_interval(a, b)
  assert difference == pytest.approx(0.10)
  assert low <= 0.10 <= high
  # a dominates b on every example, so no resample can favour b.
  assert low >= 0.0
  with pytest.raises(ValueError, match="same examples"):
    statistics.paired_difference_interval(a, b[:10])


def test_fold_mean_t_interval():
  folds = [0.80, 0.82, 0.78, 0.84, 0.76]
  result = statistics.fold_mean(folds)
  assert result.mean == pytest.approx(0.80)
  assert result.standard_deviation == pytest.approx(math.sqrt(0.001))
  # t(0.975, 4) = 2.776445; half width = t * sd / sqrt(5).
  half = 2.776445 * math.sqrt(0.001) / math.sqrt(5)
  assert (result.low, result.high) == pytest.approx((0.80 - half, 0.80 + half),
                                                    abs=1e-6)
  single = statistics.fold_mean([0.5])
  assert single.mean == 0.5 and math.isnan(single.low)
