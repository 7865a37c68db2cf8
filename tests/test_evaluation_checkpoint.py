"""Recognising checkpoints and their vocabulary without loading any array."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cot_distill.evaluation import checkpoint_predictor as predictor_lib


def _model_dir(path, task="demo.coin.cot"):
  path.mkdir()
  (path / "model_config.json").write_text(json.dumps({
      "model": {"vocab_size": 256}, "task": task,
      "vocabulary": {"spm_path": "vocab/spm.model", "extra_ids": 0},
      "task_feature_lengths": {"inputs": 48, "targets": 96}}))
  for step in (10, 20):
    (path / f"checkpoint_{step}").mkdir()
  (path / "train").mkdir()  # TensorBoard folder, not a step
  return path


def test_trainer_model_dir_and_its_steps(tmp_path, t5x_tiny_dir, monkeypatch):
  model_dir = _model_dir(tmp_path / "model")
  (model_dir / "vocab").mkdir()
  shutil.copy(t5x_tiny_dir / "spm256.model", model_dir / "vocab" / "spm.model")
  description = predictor_lib.describe_checkpoint(model_dir)
  assert description.kind == "trainer"
  assert description.step is None and description.resolved_step == 20
  assert description.training_task == "demo.coin.cot"
  assert description.task_feature_lengths == {"inputs": 48, "targets": 96}
  step = predictor_lib.describe_checkpoint(model_dir / "checkpoint_10")
  assert (step.kind, step.step, step.resolved_step) == ("trainer", 10, 10)
  assert step.model_dir == str(model_dir)
  # A relative vocabulary path is relative to model_config.json, from any
  # working directory.
  monkeypatch.chdir(tmp_path)
  vocabulary = predictor_lib._vocabulary(description, None, None)
  assert vocabulary.sentencepiece_model_file == os.path.join(
      str(model_dir), "vocab/spm.model")
  assert vocabulary.extra_ids == 0
  explicit = predictor_lib._vocabulary(description, str(model_dir / "vocab" / "spm.model"), 3)
  assert explicit.extra_ids == 3
  with pytest.raises(FileNotFoundError, match="spm-path"):
    predictor_lib._vocabulary(description, "/x.model", 100)


def test_t5x_checkpoint_with_the_fixture_model_config(t5x_tiny_dir):
  description = predictor_lib.describe_checkpoint(
      t5x_tiny_dir / "checkpoint_legacy" / "checkpoint_1000")
  assert description.kind == "t5x"
  assert description.step == 1000
  assert description.model_config["t5config"]["vocab_size"] == 256
  vocabulary = predictor_lib._vocabulary(description, None, None)
  assert vocabulary.sentencepiece_model_file == os.path.join(str(t5x_tiny_dir), "spm256.model")
  assert vocabulary.extra_ids == 0


def test_unusable_checkpoints_are_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match="checkpoint not found"):
    predictor_lib.describe_checkpoint(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="model_config.json"):
    predictor_lib.describe_checkpoint(tmp_path / "empty")


def test_decode_settings_and_length_buckets():
  with pytest.raises(ValueError, match="--decode sample"):
    predictor_lib.DecodeSettings(method="greedy", num_samples=4)
  with pytest.raises(ValueError, match="greedy, sample or beam"):
    predictor_lib.DecodeSettings(method="nucleus")
  assert [predictor_lib._bucket(n, 512) for n in (1, 8, 9, 100, 600)] == [
      8, 8, 16, 128, 512]
