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


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` (real benchmark files, vocabulary, T5X fixture), read in place."""
  if not (SHARED / "data" / "SOURCES.md").is_file():
    pytest.fail(f"shared data not found at {SHARED}; set COT_DISTILL_SHARED")
  return SHARED


@pytest.fixture(scope="session")
def data_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "data"


@pytest.fixture(scope="session")
def spm_path(data_dir) -> pathlib.Path:
  """T5's 32k SentencePiece model (sha256 in shared/data/SOURCES.md)."""
  return data_dir / "vocab" / "spiece.model"


@pytest.fixture(scope="session")
def t5x_tiny_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "fixtures" / "t5x_tiny"
