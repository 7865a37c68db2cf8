"""What a user sees: quiet start-up, one-paragraph errors (exit 2), true help."""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys

import httpx
import pytest

from cot_distill import cli
from cot_distill.commands import datasets as datasets_command
from cot_distill.data import download as download_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Start-up notices of TensorFlow / XLA / JAX that a user should not see.
CHATTER = ("oneDNN", "cuInit", "cudart_stub", "Unable to initialize backend",
           "absl::InitializeLog", "not cached so using number")


def _run(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def _train_args(task: str, model_dir: pathlib.Path) -> list[str]:
  return ["-m", "cot_distill.train", f"--gin_file={REPO_ROOT}/gin/models/t5_1_1_tiny.gin",
          f"--gin_file={REPO_ROOT}/gin/runs/finetune_cot.gin",
          f"--gin.MIXTURE_OR_TASK_NAME='{task}'", f"--gin.MODEL_DIR='{model_dir}'"]


def test_unknown_task_is_one_paragraph_with_close_matches_and_no_traceback(tmp_path):
  result = _run(*_train_args("cot_distill.coin_flip.gold.cot", tmp_path / "model"),
                cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  assert "is not a registered SeqIO task" in result.stderr
  assert "cot_distill.coin_flip_gen.gold.cot" in result.stderr  # a close match
  assert not (tmp_path / "model").exists()  # nothing created
  # Quiet start-up: JAX says once what it runs on; no library chatter.
  assert "JAX: cpu backend" in result.stderr
  for notice in CHATTER:
    assert notice not in result.stderr, notice


def test_debug_shows_the_traceback(tmp_path):
  result = _run(*_train_args("no.such.task", tmp_path / "model"), "--debug", cwd=tmp_path)
  assert result.returncode == 2
  assert "Traceback" in result.stderr and "UserError" in result.stderr


def test_gin_typo_names_the_file_and_line(tmp_path):
  typo = tmp_path / "typo.gin"
  typo.write_text("from cot_distill.train import trainer\n"
                  "trainer.train.model_dirr = 'x'\n")
  result = _run("-m", "cot_distill.cli", "train", f"--gin_file={typo}", cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  assert re.search(r'In file ".*typo\.gin", line 2', result.stderr), result.stderr


def test_verbose_lets_the_notices_through(tmp_path):
  result = _run("-m", "cot_distill.cli", "-v", "train", cwd=tmp_path)
  assert result.returncode == 2
  assert "give at least one --gin_file" in result.stderr


def test_offline_download_says_what_to_do_and_leaves_no_folders(tmp_path, monkeypatch):
  def unreachable(*args, **kwargs):
    raise httpx.ConnectError("[Errno -2] Name or service not known")
  monkeypatch.setattr(download_lib, "download", unreachable)
  data_dir = tmp_path / "data"
  code = cli.main(["datasets", "download", "svamp", "--data-dir", str(data_dir)])
  assert code == 2
  assert not data_dir.exists()


def test_download_keeps_folders_that_existed(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(download_lib, "download", lambda *a, **k: (_ for _ in ()).throw(
      httpx.ConnectError("offline")))
  (tmp_path / "svamp").mkdir()
  assert cli.main(["datasets", "download", "svamp", "--data-dir", str(tmp_path)]) == 2
  assert (tmp_path / "svamp").is_dir()
  message = capsys.readouterr().err
  assert "--data-dir" in message and "svamp/SVAMP.json" in message


def _all_help_texts() -> list[str]:
  texts = []

  def visit(parser: argparse.ArgumentParser):
    texts.append(parser.format_help())
    for action in parser._actions:  # pylint: disable=protected-access
      if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
        for sub in action.choices.values():
          visit(sub)

  visit(cli.build_parser())
  return texts


def test_every_help_example_names_something_that_exists():
  import seqio
  import cot_distill_tasks  # noqa: F401  pylint: disable=unused-import
  registered = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  text = "\n".join(_all_help_texts())
  tasks = set(re.findall(r"'(cot_distill\.[a-z0-9_.]+)'", text))
  assert tasks, "no task named in any --help (the train help shows an example)"
  assert tasks <= registered, sorted(tasks - registered)
  for gin_path in set(re.findall(r"\bgin/[\w/]+\.gin\b", text)):
    assert (REPO_ROOT / gin_path).is_file(), gin_path


def test_datasets_list_without_data_says_how_to_get_it(tmp_path, capsys):
  code = datasets_command.run(argparse.Namespace(
      datasets_action="list", data_dir=str(tmp_path / "nothing")))
  assert code == 1
  err = capsys.readouterr().err
  assert "cot-distill datasets download all --data-dir" in err


def test_unknown_dataset_exits_2_listing_the_known_ones(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["datasets", "show", "no_such_dataset"])
  assert exit_info.value.code == 2
  assert "invalid choice: 'no_such_dataset'" in capsys.readouterr().err
