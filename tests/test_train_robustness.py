"""Trainer robustness: URL MODEL_DIRs, TPU VM multi-host detection, empty tasks.

The gs:// tests swap tf.io.gfile for an in-memory store: they check that our
side files go through gfile (and never make a local "gs:" directory), not
that GCS itself works.
"""

from __future__ import annotations

import io
import json
import os

import pytest
import tensorflow as tf

from cot_distill import seqio_tasks
from cot_distill import vocabularies
from cot_distill.data import symbolic
from cot_distill.train import checkpoints
from cot_distill.train import data
from cot_distill.train import metrics_writer
from cot_distill.train import multihost
from cot_distill.train import trainer

import train_testing


class _FakeObjectStore:
  """tf.io.gfile's calls we use, over a dict, for gs:// paths only."""

  def __init__(self):
    self.files: dict[str, str] = {}
    self.directories: set[str] = set()

  def _check(self, path):
    assert str(path).startswith("gs://"), f"local path reached gfile: {path}"

  def makedirs(self, path):
    self._check(path)
    self.directories.add(path)

  def exists(self, path):
    self._check(path)
    return path in self.files or path in self.directories

  def rename(self, source, destination, overwrite=False):
    self._check(source)
    assert overwrite or destination not in self.files
    self.files[destination] = self.files.pop(source)

  def GFile(self, path, mode="r"):  # pylint: disable=invalid-name
    self._check(path)
    store = self
    if mode == "r":
      return io.StringIO(self.files[path])

    class _Writer(io.StringIO):

      def close(self):
        store.files[path] = self.getvalue()
        super().close()

    return _Writer()


@pytest.fixture
def object_store(monkeypatch, tmp_path):
  store = _FakeObjectStore()
  for name in ("makedirs", "exists", "rename", "GFile"):
    monkeypatch.setattr(tf.io.gfile, name, getattr(store, name))
  monkeypatch.chdir(tmp_path)
  yield store
  assert not os.path.exists(tmp_path / "gs:"), "a local 'gs:' directory appeared"


def test_is_local_path():
  assert checkpoints.is_local_path("runs/a")
  assert checkpoints.is_local_path("/abs/runs/a")
  assert not checkpoints.is_local_path("gs://bucket/x")
  assert checkpoints.absolute_if_local("gs://bucket/x") == "gs://bucket/x"
  assert checkpoints.absolute_if_local("runs/a") == os.path.abspath("runs/a")


def test_write_json_atomic_local(tmp_path):
  path = tmp_path / "new" / "model_config.json"
  checkpoints.write_json_atomic(str(path), {"b": 1})
  checkpoints.write_json_atomic(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 2}
  assert os.listdir(path.parent) == ["model_config.json"]  # no tmp left


def test_write_json_atomic_through_gfile(object_store):
  checkpoints.write_json_atomic("gs://bucket/run/model_config.json", {"a": 1})
  assert object_store.files == {
      "gs://bucket/run/model_config.json": '{\n  "a": 1\n}\n'}


def test_resolve_checkpoint_keeps_urls(object_store):
  assert checkpoints._resolve_checkpoint(  # pylint: disable=protected-access
      "gs://bucket/run/checkpoint_5/", None) == ("gs://bucket/run", 5)
  assert checkpoints._resolve_checkpoint(  # pylint: disable=protected-access
      "gs://bucket/run", None) == ("gs://bucket/run", None)


def test_restore_params_reads_config_through_gfile(object_store):
  with pytest.raises(FileNotFoundError, match="gs://bucket/run/model_config"):
    checkpoints.restore_params("gs://bucket/run")


def test_json_lines_local_appends(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  for steps in ((1, 2), (2, 3)):  # a resumed run rewrites step 2
    writer = metrics_writer.JsonLinesWriter(path)
    for step in steps:
      writer.write_scalars(step, {"train/loss": float(step * 10)})
    writer.close()
  assert len(open(path).read().splitlines()) == 4
  assert metrics_writer.read_metrics(str(tmp_path)) == {
      1: {"train/loss": 10.0}, 2: {"train/loss": 20.0},
      3: {"train/loss": 30.0}}


def test_json_lines_url_rewrites_whole_file(object_store):
  path = "gs://bucket/run/metrics.jsonl"
  object_store.files[path] = '{"step": 1, "train/loss": 5.0}'  # cut-off line
  writer = metrics_writer.JsonLinesWriter(path)
  writer.write_scalars(2, {"train/loss": 4.0})
  assert object_store.files[path].splitlines() == [
      '{"step": 1, "train/loss": 5.0}', '{"step": 2, "train/loss": 4.0}']
  writer.write_texts(3, {"note": "hi"})
  writer.flush()
  writer.close()
  assert metrics_writer.read_metrics("gs://bucket/run") == {
      1: {"train/loss": 5.0}, 2: {"train/loss": 4.0}, 3: {"note": "hi"}}
  assert list(object_store.files) == [path]  # temporaries renamed away


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    ({"TPU_ACCELERATOR_TYPE": "v4-8", "TPU_WORKER_ID": "0"}, False),
    ({"TPU_ACCELERATOR_TYPE": "v5litepod-8"}, False),
    ({"TPU_NAME": "my-tpu"}, False),
    ({"TPU_ACCELERATOR_TYPE": "v4-32"}, True),
    ({"TPU_ACCELERATOR_TYPE": "v5litepod-16", "TPU_WORKER_ID": "0"}, True),
    ({"TPU_WORKER_ID": "3"}, True),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1"}, True),
    ({"SLURM_NTASKS": "4"}, True),
    ({"COT_DISTILL_MULTIHOST": "1"}, True),
    ({"COT_DISTILL_MULTIHOST": "0", "TPU_ACCELERATOR_TYPE": "v4-32"}, False),
])
def test_environment_says_multihost(environ, expected):
  assert multihost._environment_says_multihost(  # pylint: disable=protected-access
      environ) is expected


def test_environment_multihost_rejects_bad_override():
  with pytest.raises(ValueError, match="COT_DISTILL_MULTIHOST"):
    multihost._environment_says_multihost(  # pylint: disable=protected-access
        {"COT_DISTILL_MULTIHOST": "maybe"})


def test_tpu_vm_initializes_without_arguments(monkeypatch):
  calls = []
  monkeypatch.setattr(multihost.jax.distributed, "initialize",
                      lambda *args, **kwargs: calls.append((args, kwargs)))
  assert multihost.initialize(environ={"TPU_ACCELERATOR_TYPE": "v5p-64"})
  assert calls == [((), {})]


_EMPTY_TASK = "cot_distill.test_robustness.coin_flip_too_long"
_LENGTHS = {"inputs": 4, "targets": 4}


@pytest.fixture(scope="module")
def too_long_task(spm_path):
  vocabulary = vocabularies.get_vocabulary(str(spm_path), extra_ids=0)
  seqio_tasks.register_examples_task(
      _EMPTY_TASK, symbolic.generate_coin_flip(8, seed=1), vocabulary)
  return _EMPTY_TASK


@pytest.mark.timeout(120)
def test_require_examples_raises_on_empty_task(too_long_task):
  with pytest.raises(ValueError, match=r"coin_flip_too_long.*'train'.*'inputs': 4"):
    data.require_examples(mixture_or_task_name=too_long_task,
                          task_feature_lengths=_LENGTHS)
  # Long enough lengths keep examples: no error.
  data.require_examples(mixture_or_task_name=too_long_task,
                        task_feature_lengths={"inputs": 256, "targets": 256})


@pytest.mark.timeout(120)
def test_train_fails_fast_on_empty_task(too_long_task, tmp_path):
  with pytest.raises(ValueError, match="yields no examples"):
    trainer.train(model=train_testing.tiny_model(),
                  mixture_or_task_name=too_long_task,
                  task_feature_lengths=_LENGTHS, train_steps=2, batch_size=8,
                  model_dir=str(tmp_path / "run"))
