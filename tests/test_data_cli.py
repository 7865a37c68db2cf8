"""`cot-distill datasets ...` through the command's own register/run.

The parser is built from `cot_distill.commands.datasets.register` alone, so
these tests do not depend on the other command modules being present.
"""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from cot_distill.commands import datasets
from cot_distill.data import registry
from cot_distill.data.example import Example


def run_command(*argv: str) -> int:
  parser = argparse.ArgumentParser(prog="cot-distill")
  datasets.register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["datasets", *argv])
  return args.func(args)


def test_list_shows_every_dataset_with_pinned_counts(data_dir, capsys):
  assert run_command("list", "--data-dir", str(data_dir)) == 0
  out = capsys.readouterr().out
  for name in registry.DATASETS:
    assert f"\n{name} " in out
  assert "7473  number           MIT" in out
  assert "CC BY-NC 4.0" in out and "[expected" not in out


def test_list_uses_env_and_flags_missing_files(tmp_path, data_dir, monkeypatch, capsys):
  shutil.copytree(data_dir / "svamp", tmp_path / "svamp")
  monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
  assert run_command("list") == 1
  captured = capsys.readouterr()
  assert f"data dir: {tmp_path}" in captured.out
  assert "svamp                      test           1000" in captured.out
  assert f"[missing: {tmp_path / 'gsm8k' / 'train.jsonl'}]" in captured.out
  assert "missing or not matching" in captured.err


def test_show_pretty_and_json(data_dir, capsys):
  assert run_command("show", "gsm8k", "--split", "test", "--limit", "2",
                     "--data-dir", str(data_dir)) == 0
  out = capsys.readouterr().out
  assert out.startswith("gsm8k/test/0  [number]  answer: 18\n  question: Janet")
  assert "gsm8k/test/1  [number]" in out and "(2 of 1319 examples in gsm8k/test)" in out
  assert run_command("show", "aqua", "--limit", "1", "--offset", "3", "--json",
                     "--data-dir", str(data_dir)) == 0
  (line,) = capsys.readouterr().out.splitlines()
  assert Example.from_dict(json.loads(line)).id == "aqua/test/3"


def test_show_errors_exit_nonzero_with_the_path(tmp_path, capsys):
  assert run_command("show", "svamp", "--data-dir", str(tmp_path)) == 1
  assert f"error: {tmp_path / 'svamp' / 'SVAMP.json'}: file not found" in capsys.readouterr().err
  assert run_command("show", "svamp", "--split", "train", "--data-dir", str(tmp_path)) == 2
  assert "has no split 'train'" in capsys.readouterr().err


def test_generate_then_check_leakage(tmp_path, data_dir, capsys):
  train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
  assert run_command("generate", "last_letters", "--n", "40", "--steps", "3", "--seed", "7",
                     "--split", "train", "--out", str(train)) == 0
  assert run_command("generate", "last_letters", "--n", "20", "--steps", "3", "--seed", "7",
                     "--split", "test", "--out", str(test), "--exclude", str(train)) == 0
  lines = train.read_text(encoding="utf-8").splitlines()
  assert len(lines) == 40
  first = Example.from_dict(json.loads(lines[0]))
  assert first.id == "last_letters_gen/train/0" and first.meta["num_words"] == 3
  assert not list(tmp_path.glob("*.tmp"))
  capsys.readouterr()
  assert run_command("leakage", "--datasets", "last_letters", "--file", str(train),
                     "--file", str(test), "--data-dir", str(data_dir)) == 0
  out = capsys.readouterr().out
  assert "4 groups, 3 pairs compared, 0 with overlap" in out


def test_leakage_on_strategyqa(data_dir, capsys):
  assert run_command("leakage", "--datasets", "strategyqa", "strategyqa_bigbench",
                     "--data-dir", str(data_dir)) == 0
  out = capsys.readouterr().out
  assert "strategyqa/*" in out and "strategyqa_bigbench/*" in out and "2289" in out
  assert run_command("leakage", "--datasets", "strategyqa", "--json",
                     "--data-dir", str(data_dir)) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["overlaps"][0]["left"] == ["strategyqa", "train"]


def test_generate_rejects_impossible_request(tmp_path, capsys):
  out = tmp_path / "x.jsonl"
  assert run_command("generate", "coin_flip", "--n", "3", "--steps", "1000",
                     "--out", str(out)) == 1
  assert "distinct names" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("action", ["list", "show", "leakage", "generate", "download", "prepare"])
def test_every_action_has_help(action, capsys):
  with pytest.raises(SystemExit) as caught:
    run_command(action, "--help")
  assert caught.value.code == 0
  assert "usage: cot-distill datasets " + action in capsys.readouterr().out


def test_prepare_builds_tfds_datasets(tmp_path, data_dir, capsys):
  assert run_command("prepare", "coin_flip", "--tfds-dir", str(tmp_path),
                     "--data-dir", str(data_dir)) == 0
  out = capsys.readouterr().out
  assert "cot_distill_benchmarks/coin_flip:1.0.0 in " in out and out.rstrip().endswith("test=500")
  assert (tmp_path / "cot_distill_benchmarks" / "coin_flip" / "1.0.0" / "dataset_info.json").is_file()
