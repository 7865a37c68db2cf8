"""The README is the contract: its commands run, as written, in one flow.

The test reads README.md's bash blocks, replaces only the placeholders the
README names (DATA, LOGS, the teacher URL and MODEL, gs://BUCKET, the API
key) and runs every command from a clean working directory, each stage on
the previous stage's output at the path the README writes. Size comes from
environment variables alone (COT_DISTILL_MAX_EXAMPLES,
COT_DISTILL_GIN_BINDINGS, COT_DISTILL_BENCH_SMOKE), so a README edit that breaks a command fails here.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
TEACHER_MODEL = "local-teacher"
# Commands in the README that this test runs (the set-up block and T5X's
# own commands are checked elsewhere: .ci/run and tests/test_t5x_*.py).
_OURS = re.compile(r"^(cot-distill|python -m cot_distill\.train|export)\b")
_TINY_GIN = "\n".join([
    "include 'gin/models/t5_1_1_tiny.gin'",
    "TRAIN_STEPS = 2",
    "BATCH_SIZE = 4",
    "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 64}",
    "INITIAL_CHECKPOINT_PATH = None",
])


def bash_blocks(text: str) -> list[str]:
  return re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
  """Shell commands of a block: continuations joined, comments dropped."""
  joined = re.sub(r"\\\n\s*", " ", block)
  result = []
  for line in joined.splitlines():
    words = shlex.split(line, comments=True)
    if words:
      result.append(shlex.join(words))
  return result


def readme_commands() -> tuple[list[str], list[str]]:
  """(set-up commands, the commands of every other block this test runs)."""
  setup, flow = [], []
  for block in bash_blocks(README.read_text()):
    found = commands(block)
    if any(command.startswith("bash .ci/") for command in found):
      setup.extend(found)
    elif not any(command.startswith("python -m t5x") for command in found):
      flow.extend(command for command in found if _OURS.match(command))
  return setup, flow


def test_setup_is_exactly_two_commands_and_ci_runs_the_test_command():
  setup, _ = readme_commands()
  assert setup == ["bash .ci/demo.sh", "bash .ci/test.sh"]
  ci_run = (REPO_ROOT / ".ci" / "run").read_text()
  assert "bash .ci/test.sh" in ci_run
  assert "demo.sh --size smoke" in ci_run


def test_flow_covers_every_stage_in_order():
  _, flow = readme_commands()
  stages = ["datasets download", "annotate --dataset", "annotate --resume",
            "annotate --from-log", "cot_distill.train", "evaluate", "report"]
  positions = [next(i for i, command in enumerate(flow) if stage in command)
               for stage in stages]
  assert positions == sorted(positions), flow


class LocalTeacher:
  """`cot-distill teacher serve` on a free loopback port, as a user runs it."""

  def __init__(self, cwd: pathlib.Path, env: dict[str, str], data_dir: str):
    # GSM8K questions are answered with GSM8K's own worked solutions (the
    # synthetic teacher only reasons about coin flips and last letters).
    self.process = subprocess.Popen(
        [sys.executable, "-m", "cot_distill.cli", "teacher", "serve", "--port", "0",
         "--model-name", TEACHER_MODEL, "--worked-solutions", "gsm8k:train"],
        cwd=cwd, env={**env, "COT_DISTILL_DATA_DIR": data_dir},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    self.url = None
    while self.url is None and time.monotonic() < deadline:
      line = self.process.stdout.readline()
      if not line and self.process.poll() is not None:
        break
      match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
      if match:
        self.url = match.group(1)
    if self.url is None:
      self.close()
      raise RuntimeError("the local teacher did not start")

  def close(self):
    self.process.terminate()
    try:
      self.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.process.kill()


def _data_dir(shared_dir: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  """The benchmark files as `datasets download` lays them out (linked, read-only)."""
  target.mkdir()
  for source in sorted((shared_dir / "data").iterdir()):
    if source.is_dir():
      (target / source.name).symlink_to(source, target_is_directory=True)
  return target


def substitute(command: str, values: dict[str, str]) -> str:
  """Replaces the README's placeholders and nothing else."""
  command = command.replace("https://api.example.com/v1", values["url"])
  command = command.replace("gs://BUCKET", values["bucket"])
  command = re.sub(r"\bOPENAI_API_KEY=\.\.\.", "OPENAI_API_KEY=" + values["key"], command)
  command = re.sub(r"--model MODEL\b", f"--model {TEACHER_MODEL}", command)
  command = re.sub(r"(?<![\w/])DATA\b", values["data"], command)
  command = re.sub(r"(?<![\w/])LOGS/", values["logs"] + "/", command)
  return command


def _environment(tmp_path: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  env.update({
      "COT_DISTILL_MAX_EXAMPLES": "12",
      "COT_DISTILL_GIN_BINDINGS": _TINY_GIN,
      "COT_DISTILL_BENCH_SMOKE": "1",
      "XDG_CACHE_HOME": str(tmp_path / "cache"),
      "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
  })
  # A user's shell: none of the test session's settings (conftest's 8 fake
  # devices included).
  for name in ("COT_DISTILL_DATA_DIR", "COT_DISTILL_RUNS_DIR", "COT_DISTILL_SPM_PATH",
               "OPENAI_API_KEY", "XLA_FLAGS", "JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL"):
    env.pop(name, None)
  return env


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, shared_dir):
  _, flow = readme_commands()
  workdir = tmp_path / "clean"
  workdir.mkdir()
  env = _environment(tmp_path)
  values = {"data": str(_data_dir(shared_dir, tmp_path / "data")),
            "logs": str(shared_dir / "data" / "teacher_outputs"),
            # Relative, as a user types it: MODEL_DIR, evaluate and report
            # all resolve it against the working directory.
            "bucket": "bucket", "key": "sk-test-not-a-secret"}
  teacher = LocalTeacher(workdir, env, values["data"])
  try:
    values["url"] = teacher.url
    for command in flow:
      command = substitute(command, values)
      words = shlex.split(command)
      if words[0] == "export":
        name, _, value = words[1].partition("=")
        env[name] = value
        continue
      result = subprocess.run(command, shell=True, cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=600)
      assert result.returncode == 0, (
          f"README command failed ({result.returncode}): {command}\n"
          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  finally:
    teacher.close()

  # Each stage wrote where the README says the next one reads.
  teacher_run = workdir / "runs" / "gsm8k" / "teacher"
  manifest = json.loads((teacher_run / "manifest.json").read_text())
  assert manifest["status"] == "complete"
  records = [json.loads(line) for line in
             (teacher_run / "records.jsonl").read_text().splitlines()]
  assert len(records) == 12  # every question kept: sound worked solutions
  assert (workdir / "runs" / "gsm8k" / "gpt3" / "records.jsonl").is_file()
  model_dir = workdir / "bucket" / "gsm8k_cot_base"
  model_config = json.loads((model_dir / "model_config.json").read_text())
  assert model_config["task"] == "cot_distill.gsm8k.teacher.cot"
  assert model_config["vocabulary"]["spm_path"] == "sentencepiece.model"
  assert (model_dir / "checkpoint_2").is_dir()
  summary = json.loads((workdir / "runs" / "eval_base" / "summary.json").read_text())
  assert summary
  assert (workdir / "runs" / "report" / "report.md").is_file()
  # The key reached the teacher but no file.
  for path in workdir.rglob("*"):
    if path.is_file() and path.stat().st_size < 50_000_000:
      assert b"sk-test-not-a-secret" not in path.read_bytes(), path


def test_placeholders_are_the_only_substitutions():
  values = {"url": "http://127.0.0.1:1/v1", "bucket": "/b", "key": "k", "data": "/d",
            "logs": "/l"}
  command = ("cot-distill annotate --from-log LOGS/x.log --data-dir DATA --teacher-url "
             "https://api.example.com/v1 --model MODEL --out gs://BUCKET/DATA_MODEL")
  assert substitute(command, values) == (
      "cot-distill annotate --from-log /l/x.log --data-dir /d --teacher-url "
      "http://127.0.0.1:1/v1 --model local-teacher --out /b/DATA_MODEL")
