"""The packaged T5 vocabulary and the MODEL_DIR vocabulary contract."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import pytest

from cot_distill import vocabularies

T5_SPM_SHA256 = "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86"


def test_packaged_default_is_t5s_public_vocabulary(monkeypatch):
  monkeypatch.delenv(vocabularies.SPM_PATH_ENV, raising=False)
  path = pathlib.Path(vocabularies.resolve_spm_path())
  assert path == pathlib.Path(vocabularies.DEFAULT_SPM_PATH)
  assert hashlib.sha256(path.read_bytes()).hexdigest() == T5_SPM_SHA256
  assert (path.parent / "NOTICE.md").read_text().count("Apache") >= 1
  vocabulary = vocabularies.get_vocabulary()
  # Known encodings of T5's vocabulary (shared/data/SOURCES.md).
  assert vocabulary.encode("Hello world") == [8774, 296]
  assert vocabulary.encode("translate English to German: That is good.") == [
      13959, 1566, 12, 2968, 10, 466, 19, 207, 5]


def test_store_copies_into_model_dir_and_records_it_relative(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  source = pathlib.Path("vocab") / "spm.model"
  source.parent.mkdir()
  source.write_bytes(pathlib.Path(vocabularies.DEFAULT_SPM_PATH).read_bytes())
  vocabulary = vocabularies.get_vocabulary(str(source), extra_ids=0)
  entry = vocabularies.store_in_model_dir(vocabulary, "runs/model")
  assert entry == {"spm_path": vocabularies.MODEL_DIR_SPM_FILE, "extra_ids": 0}
  copied = tmp_path / "runs" / "model" / vocabularies.MODEL_DIR_SPM_FILE
  assert copied.read_bytes() == source.read_bytes()
  # Storing again is a no-op; no temporary files are left behind.
  assert vocabularies.store_in_model_dir(vocabulary, "runs/model") == entry
  assert sorted(os.listdir(tmp_path / "runs" / "model")) == [vocabularies.MODEL_DIR_SPM_FILE]
  # The model directory moves with its vocabulary: read from elsewhere.
  (tmp_path / "runs" / "model").rename(tmp_path / "moved")
  (tmp_path / "elsewhere").mkdir()
  monkeypatch.chdir(tmp_path / "elsewhere")
  restored = vocabularies.from_description(entry, str(tmp_path / "moved"))
  assert restored.sentencepiece_model_file == str(tmp_path / "moved" / vocabularies.MODEL_DIR_SPM_FILE)
  assert restored.extra_ids == 0
  assert restored.encode("Hello world") == [8774, 296]


def test_remote_vocabulary_is_recorded_as_given(tmp_path):
  remote = vocabularies.get_vocabulary(vocabularies.PUBLIC_SPM_URL)
  entry = vocabularies.store_in_model_dir(remote, str(tmp_path / "model"))
  assert entry == {"spm_path": vocabularies.PUBLIC_SPM_URL, "extra_ids": 100}
  assert not (tmp_path / "model").exists()
  assert vocabularies.resolve_described_path(entry["spm_path"], str(tmp_path)) == vocabularies.PUBLIC_SPM_URL


def test_descriptions_written_before_the_copy_still_load(tmp_path, monkeypatch):
  # Older model_config.json files recorded the path relative to the training
  # job's working directory.
  monkeypatch.chdir(tmp_path)
  (tmp_path / "vocab").mkdir()
  (tmp_path / "vocab" / "old.model").write_bytes(
      pathlib.Path(vocabularies.DEFAULT_SPM_PATH).read_bytes())
  (tmp_path / "runs" / "old").mkdir(parents=True)
  (tmp_path / "runs" / "old" / "model_config.json").write_text(json.dumps(
      {"vocabulary": {"spm_path": "vocab/old.model", "extra_ids": 100}}))
  vocabulary = vocabularies.from_description(
      {"spm_path": "vocab/old.model", "extra_ids": 100}, "runs/old")
  assert vocabulary.sentencepiece_model_file == str(tmp_path / "vocab" / "old.model")
  # Absolute paths stay as they are.
  absolute = str(tmp_path / "vocab" / "old.model")
  assert vocabularies.resolve_described_path(absolute, "/anywhere") == absolute


def test_missing_vocabulary_is_named_before_any_decoding(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"gone\.model.*--spm-path"):
    vocabularies.from_description({"spm_path": "gone.model", "extra_ids": 0}, str(tmp_path))
