"""Shared test set-up.

JAX reads XLA_FLAGS once, at import, so the 8 fake CPU devices used by the
sharding tests must be requested here, before any test module imports JAX.
Sharding tests assert the device count and fail (never skip) without them.
"""

from __future__ import annotations

import os
import pathlib

_FAKE_DEVICES = "--xla_force_host_platform_device_count=8"
if _FAKE_DEVICES not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAKE_DEVICES).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("COT_DISTILL_SHARED", REPO_ROOT.parent / "shared"))


# CI sets this so that a missing ../shared fails instead of skipping.
REQUIRE_SHARED_ENV = "COT_DISTILL_REQUIRE_SHARED"
MISSING_SHARED = (
    f"needs the shared benchmark files and T5X fixture at {SHARED} (not in this "
    "clone): put them there or set COT_DISTILL_SHARED; `cot-distill datasets "
    "download all --data-dir DIR` fetches the benchmark files (T5's vocabulary "
    "ships in the package)")


def require_shared() -> pathlib.Path:
  """`../shared`, or a skip (a failure when $COT_DISTILL_REQUIRE_SHARED=1).

  Every test that needs ../shared skips through this one place, with one
  reason, so pytest's summary folds them into a single line.
  """
  if not (SHARED / "data" / "SOURCES.md").is_file():
    if os.environ.get(REQUIRE_SHARED_ENV, "") not in ("", "0"):
      pytest.fail(f"shared data not found at {SHARED} and ${REQUIRE_SHARED_ENV} is set")
    pytest.skip(MISSING_SHARED)
  return SHARED


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` (real benchmark files, T5X fixture), read in place."""
  return require_shared()


@pytest.fixture(scope="session")
def data_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "data"


@pytest.fixture(scope="session")
def spm_path() -> pathlib.Path:
  """T5's 32k SentencePiece model, as packaged (the bytes of shared/data/vocab)."""
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  return pathlib.Path(vocabularies.DEFAULT_SPM_PATH)


@pytest.fixture(scope="session")
def t5x_tiny_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "fixtures" / "t5x_tiny"


def pytest_terminal_summary(terminalreporter):
  """One line per skip reason (pytest's -ra prints one per test location).

  A clone without ../shared skips some hundred tests for one reason; a user
  should read that reason once, with what to do about it.
  """
  reasons: dict[str, int] = {}
  for report in terminalreporter.stats.get("skipped", []):
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    reasons[reason] = reasons.get(reason, 0) + 1
  for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
    terminalreporter.write_line(f"SKIPPED {count} test(s): {reason}")
