"""Helpers for the tests that run real T5X (tests/test_t5x_*.py).

T5X and AirIO are installed into the test environment by
`.ci/install_t5x.sh` (from ../shared/vendor). Without them these tests skip,
with one reason; CI sets COT_DISTILL_REQUIRE_T5X=1 so that a missing T5X
fails instead. T5X always runs in a subprocess, through `tests.t5x_main`
(its `jestimator` import shim), from the repository root: T5X's gin files
bind `__main__` to the entry point, and our gin files include each other by
repository-relative paths.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
REQUIRE_T5X_ENV = "COT_DISTILL_REQUIRE_T5X"
README = REPO / "gin" / "t5x" / "README.md"


def require_t5x() -> None:
  """Skip (or fail under $COT_DISTILL_REQUIRE_T5X) when T5X is not installed."""
  missing = [name for name in ("t5x", "airio", "jestimator")
             if importlib.util.find_spec(name) is None]
  if missing:
    if os.environ.get(REQUIRE_T5X_ENV, "") not in ("", "0"):
      pytest.fail(f"{', '.join(missing)} not installed and ${REQUIRE_T5X_ENV} is set: "
                  "run `bash .ci/install_t5x.sh`")
    pytest.skip("needs real T5X in the test environment: run `bash .ci/install_t5x.sh` "
                "(installs the vendored T5X and AirIO from ../shared/vendor)")


def t5x_env(**extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # not the test suite's 8 fake devices
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("COT_DISTILL_SPM_PATH", None)
  env.update(extra)
  return env


def run_t5x(argv: list[str], *, timeout: float = 300, parse_only: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs `python -m t5x.X ARGS` (argv[0] = "t5x.X") via the shim; output captured."""
  env = dict(env or t5x_env())
  if parse_only:
    env["COT_DISTILL_T5X_PARSE_ONLY"] = "1"
  return subprocess.run([sys.executable, "-m", "tests.t5x_main", *argv], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert result.returncode == 0, (
      f"{' '.join(result.args[2:4])} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
      f"{result.stderr[-6000:]}")
  return result


def readme_commands(section: str) -> tuple[dict[str, str], list[list[str]]]:
  """The variables and `python -m t5x.*` commands of one README section's bash block.

  Returns ({VAR: value}, [argv without "python -m"]), continuation lines
  joined and each command split as bash would (after `$VAR` substitution by
  the caller, see `substitute`).
  """
  text = README.read_text()
  start = text.index(f"## {section}")
  block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
  assert block, f"no bash block under '## {section}' in {README}"
  joined = block.group(1).replace("\\\n", " ")
  variables, commands = {}, []
  for line in joined.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
    if assignment:
      variables[assignment.group(1)] = assignment.group(2)
      continue
    words = line.split(None, 3)
    assert words[:2] == ["python", "-m"] and words[2].startswith("t5x."), line
    commands.append(line.split(None, 2)[2])
  return variables, commands


def substitute(command: str, values: dict[str, str]) -> list[str]:
  """`$NAME` replaced by values[NAME], then split like bash."""
  for name, value in values.items():
    command = command.replace(f"${name}", value)
  assert "$" not in command, f"unsubstituted variable in {command}"
  return shlex.split(command)
