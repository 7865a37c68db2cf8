"""`cot-distill evaluate` decodes on a mesh, and the mesh changes no decode.

A `cot-distill train` MODEL_DIR with random tiny parameters (float32, T5's
vocabulary) is restored onto 8 fake CPU devices with each layout and onto
one device; greedy, sampled (fixed seed), beam and calculator-scored
predictions must be identical, and the 8-device parameters must really be
split as the layout says. The command line runs in a subprocess with 8
devices, and as two joined processes of 4 devices (the hosts of a slice,
the data axis across them); each predictions.jsonl must equal a 1-device
run's.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from cot_distill import errors
from cot_distill import vocabularies
from cot_distill.data.example import AnswerType, Example
from cot_distill.evaluation import checkpoint_predictor as predictor_lib
from cot_distill.evaluation import evaluator
from cot_distill.evaluation import predictions as predictions_lib
from cot_distill.evaluation.checkpoint_predictor import DecodeSettings
from cot_distill.model.config import get_config
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import checkpoints
from cot_distill.train import partitioning
from cot_distill.train import sharded_decode
from cot_distill.train.data import DataPosition
from cot_distill.train.state import TrainState

import train_testing

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LENGTHS = {"inputs": 32, "targets": 24}
# As the trainer records it: evaluation defaults to a 2 data x 4 model mesh.
TRAINED_PARTITIONING = {"layout": "model_parallel", "num_partitions": 4,
                        "num_devices": 8}
QUESTIONS = ["What is 3 + 4?", "Tom has 5 apples and eats 2. How many are left?",
             "A train goes 60 km in 2 hours. How fast is it?",
             "Is 17 a prime number?", "What is 12 times 11?"]
# (layout, num_partitions) on 8 devices: 8x1, 2x4, 1x8 and FSDP 8x1.
LAYOUTS = [("data_parallel", 1), ("model_parallel", 4), ("model_parallel", 8),
           ("fsdp", 1)]


@pytest.fixture(autouse=True, scope="module")
def _fast_compilation():
  with train_testing.fast_compilation():
    yield


def _config():
  return get_config("t5_1_1_tiny", dtype="float32")


def _random_params(config):
  model = EncoderDecoderModel(config)
  variables = model.get_initial_variables(
      jax.random.PRNGKey(7), {"encoder_input_tokens": (1, 8),
                              "decoder_input_tokens": (1, 8)})
  # T5's initial scale makes every input decode alike; larger weights make
  # the decodes depend on the question, so equal predictions mean something.
  return jax.tree.map(lambda x: 4.0 * x, nn.unbox(variables["params"]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A `cot-distill train` MODEL_DIR: orbax step 5 + model_config.json."""
  return _write_model_dir(tmp_path_factory.mktemp("sharded") / "run",
                          _config(), TRAINED_PARTITIONING)


def _write_model_dir(path, config, partitioning_entry):
  checkpointer = checkpoints.TrainCheckpointer(
      str(path), checkpoints.CheckpointConfig(async_save=False))
  checkpointer.save(
      TrainState(step=jnp.asarray(5, jnp.int32), params=_random_params(config),
                 opt_state={"count": jnp.zeros((), jnp.int32)},
                 rng=jax.random.PRNGKey(0)),
      DataPosition(mixture_or_task_name="cot_distill.arith.gpt3.cot",
                   task_feature_lengths=LENGTHS, batch_size=8, seed=0,
                   pack=False, steps_consumed=5))
  checkpointer.wait()
  checkpointer.close()
  checkpoints.write_model_config(
      str(path), config=config,
      vocabulary={"spm_path": vocabularies.DEFAULT_SPM_PATH, "extra_ids": 100},
      mixture_or_task_name="cot_distill.arith.gpt3.cot",
      task_feature_lengths=LENGTHS, partitioning=partitioning_entry)
  return path


def _one_device():
  return partitioning.Partitioner(devices=jax.devices()[:1])


def _predictor(model_dir, decode, partitioner=None, batch_size=4, **kwargs):
  return predictor_lib.CheckpointPredictor.from_checkpoint(
      str(model_dir), decode=decode, batch_size=batch_size,
      partitioner=partitioner, **kwargs)


def _predict(predictor):
  """Texts of every question, in batches (the last one partial)."""
  texts = []
  for start in range(0, len(QUESTIONS), predictor.batch_size):
    batch = QUESTIONS[start:start + predictor.batch_size]
    for outputs in predictor(batch, batch_index=start // predictor.batch_size):
      texts.append([output.text for output in outputs])
  return texts


def _spec(array):
  return tuple(array.sharding.spec) + (None,) * (
      array.ndim - len(array.sharding.spec))


def test_eight_fake_devices_are_present():
  train_testing.require_eight_devices()


def test_parameters_are_restored_onto_the_training_mesh(model_dir):
  predictor = _predictor(model_dir, DecodeSettings())
  mesh = predictor.partitioner.mesh
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  assert predictor.partitioner.layout == "model_parallel"
  params = predictor.params
  wi = params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  embedding = params["token_embedder"]["embedding"]
  assert _spec(wi) == (None, "model")
  assert _spec(embedding) == ("model", None)
  # Each device holds a quarter of the vocabulary, not the whole table.
  shard = embedding.addressable_shards[0].data
  assert shard.shape == (embedding.shape[0] // 4, embedding.shape[1])
  assert len(embedding.sharding.device_set) == 8


@pytest.mark.parametrize("layout,num_partitions", LAYOUTS)
def test_parameters_follow_an_explicit_layout(model_dir, layout, num_partitions):
  predictor = _predictor(model_dir, DecodeSettings(), layout=layout,
                         num_partitions=num_partitions)
  assert predictor.partitioner.layout == layout
  assert predictor.partitioner.mesh.shape["model"] == num_partitions
  wi = predictor.params["decoder"]["layers_1"]["mlp"]["wi_0"]["kernel"]
  expected = {"data_parallel": (None, None), "model_parallel": (None, "model"),
              "fsdp": ("data", "model")}[layout]
  assert _spec(wi) == expected


@pytest.fixture(scope="module")
def one_device_predictions(model_dir):
  """Greedy and sampled predictions decoded on one device."""
  return {
      name: _predict(_predictor(model_dir, decode, _one_device()))
      for name, decode in _DECODES.items()}


_DECODES = {
    "greedy": DecodeSettings(),
    "sample": DecodeSettings(method="sample", num_samples=3, temperature=0.7,
                             top_k=40, seed=3),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout,num_partitions", LAYOUTS)
def test_eight_device_predictions_equal_one_device_predictions(
    model_dir, one_device_predictions, layout, num_partitions):
  for name, decode in _DECODES.items():
    predictor = _predictor(model_dir, decode, layout=layout,
                           num_partitions=num_partitions)
    assert predictor.partitioner.mesh.size == 8
    predicted = _predict(predictor)
    assert predicted == one_device_predictions[name], (name, layout)
  greedy = one_device_predictions["greedy"]
  # Not a degenerate model: the decodes differ between questions.
  assert len({tuple(texts) for texts in greedy}) > 1
  assert any(texts[0] for texts in greedy)
  samples = one_device_predictions["sample"]
  assert any(len(set(texts)) > 1 for texts in samples)


def test_beam_search_is_the_same_on_a_2x4_mesh():
  """The decode core itself, with the method the periodic eval may use."""
  model = EncoderDecoderModel(_config())
  params = _random_params(model.config)
  tokens = np.random.RandomState(0).randint(2, 300, (3, 12)).astype(np.int32)
  results = []
  for partitioner in (_one_device(), partitioning.Partitioner(
      layout="model_parallel", num_partitions=4)):
    placed = sharded_decode.place_params(
        params, sharded_decode.param_shardings(model, partitioner))
    results.append(sharded_decode.decode(
        model, placed, partitioner, tokens, decode_method="beam",
        beam_size=3, num_decodes=2, max_decode_length=10))
  (tokens_1, scores_1), (tokens_8, scores_8) = results
  assert tokens_8.shape == (3, 2, 10)
  np.testing.assert_array_equal(tokens_8, tokens_1)
  # Sums of ten float32 log-probabilities whose softmax normalisers are
  # reduced over a vocabulary split 4 ways: rounding moves them by ~1e-5.
  np.testing.assert_allclose(scores_8, scores_1, rtol=1e-4)


@pytest.mark.slow
def test_a_scanned_student_trained_with_fsdp_decodes_as_on_one_device(
    tmp_path):
  """scan_layers stacks the layers on one axis ('layers', never split)."""
  path = _write_model_dir(tmp_path / "scanned",
                          _config().replace(scan_layers=True),
                          {"layout": "fsdp", "num_partitions": 2,
                           "num_devices": 8})
  predictor = _predictor(path, DecodeSettings(max_decode_length=12))
  assert dict(predictor.partitioner.mesh.shape) == {"data": 4, "model": 2}
  wi = predictor.params["encoder"]["layers"]["mlp"]["wi_0"]["kernel"]
  assert _spec(wi) == ("data", None, "model")  # (embed, layers, mlp)
  one = _predictor(path, DecodeSettings(max_decode_length=12), _one_device())
  assert _predict(predictor) == _predict(one)


def test_beam_search_through_evaluate_is_the_same_on_8_devices(model_dir):
  beam = DecodeSettings(method="beam", beam_size=3, max_decode_length=12)
  assert "beam_size" in beam.to_dict()
  # Unused beam settings stay out of greedy fingerprints (resume as before).
  assert "beam_size" not in DecodeSettings().to_dict()
  eight = _predictor(model_dir, beam)
  assert eight.partitioner.mesh.size == 8
  predicted = _predict(eight)
  assert predicted == _predict(_predictor(model_dir, beam, _one_device()))
  with pytest.raises(ValueError, match="one output per question"):
    DecodeSettings(method="beam", num_samples=2)


def _examples_file(path):
  with open(path, "w") as handle:
    for index, question in enumerate(QUESTIONS):
      handle.write(json.dumps(Example(
          id=f"arith/test/{index}", dataset="arith", split="test",
          question=question, answer=str(index),
          answer_type=AnswerType.NUMBER).to_dict()) + "\n")
  return path


def _records(out):
  return predictions_lib.read_predictions(out / "arith" / "predictions.jsonl")


@pytest.mark.slow
def test_evaluate_with_the_calculator_is_the_same_on_8_devices_and_1(
    model_dir, tmp_path):
  examples = _examples_file(tmp_path / "arith.jsonl")
  common = dict(checkpoint=str(model_dir), tasks=[f"arith={examples}"],
                batch_size=4, calculator=True, max_decode_length=16)
  summary = evaluator.evaluate(out_dir=str(tmp_path / "eight"), **common)
  single = evaluator.evaluate(
      out_dir=str(tmp_path / "one"), **common,
      predictor_factory=lambda path, decode, batch_size: _predictor(
          path, decode, _one_device(), batch_size=batch_size))
  eight, one = _records(tmp_path / "eight"), _records(tmp_path / "one")
  assert len(eight) == len(QUESTIONS)
  assert eight == one
  assert "calculator_text" in eight[0]
  assert summary["tasks"]["arith"] == single["tasks"]["arith"]


_CLI_DECODE = ["--batch-size", "4", "--decode", "sample", "--num-samples", "2",
               "--seed", "11", "--max-decode-length", "16"]


def _environment(devices):
  environment = {key: value for key, value in os.environ.items()
                 if not key.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                                        "JAX_PROCESS_ID", "TPU_", "SLURM_"))}
  environment.update(
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return environment


def _command(model_dir, examples, out, *extra):
  return [sys.executable, "-m", "cot_distill.cli", "evaluate", "--checkpoint",
          str(model_dir), "--examples", f"arith={examples}", *_CLI_DECODE,
          "--out", str(out), *extra]


def _one_device_cli_equivalent(model_dir, examples, out):
  """The same evaluation in this process, on one device."""
  evaluator.evaluate(
      checkpoint=str(model_dir), tasks=[f"arith={examples}"],
      out_dir=str(out), batch_size=4, decode_method="sample",
      num_samples=2, seed=11, max_decode_length=16,
      predictor_factory=lambda path, decode, batch_size: _predictor(
          path, decode, _one_device(), batch_size=batch_size))
  return _records(out)


@pytest.mark.slow
def test_command_line_on_8_devices_writes_the_1_device_predictions(
    model_dir, tmp_path):
  """`cot-distill evaluate` in a fresh process that sees 8 devices."""
  examples = _examples_file(tmp_path / "arith.jsonl")
  result = subprocess.run(
      _command(model_dir, examples, tmp_path / "cli"), cwd=REPO_ROOT,
      env=_environment(8), capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "decoding on 8 device(s): 2 data x 4 model, layout model_parallel" in (
      result.stderr)
  assert _records(tmp_path / "cli") == _one_device_cli_equivalent(
      model_dir, examples, tmp_path / "one")


@pytest.mark.slow
def test_two_hosts_evaluate_on_one_mesh_as_one_device(model_dir, tmp_path):
  """Two processes of 4 devices join (as the hosts of a slice do) and decode
  on one 2 x 4 mesh whose data axis spans them; each writes the 1-device
  predictions."""
  examples = _examples_file(tmp_path / "arith.jsonl")
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  processes = [subprocess.Popen(
      _command(model_dir, examples, tmp_path / f"host{index}",
               "--coordinator-address", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(index)),
      cwd=REPO_ROOT, env=_environment(4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for index in range(2)]
  try:
    outputs = [process.communicate(timeout=600) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert "decoding on 8 device(s): 2 data x 4 model" in stderr
  expected = _one_device_cli_equivalent(model_dir, examples, tmp_path / "one")
  assert _records(tmp_path / "host0") == expected
  assert _records(tmp_path / "host1") == expected


# ----------------------------------------------------------------------------
# Which mesh: explicit settings, the training run's, or data parallel.


def _description(partitioning_entry=None):
  config = {"model": _config().to_dict()}
  if partitioning_entry is not None:
    config["partitioning"] = partitioning_entry
  return predictor_lib.CheckpointDescription(
      path="run", kind="trainer", model_dir="run", step=None,
      model_config=config, model_config_path="run/model_config.json")


def _mesh(partitioner):
  return (partitioner.layout, dict(partitioner.mesh.shape))


def test_partitioner_precedence():
  choose = predictor_lib.choose_partitioner
  trained = _description(TRAINED_PARTITIONING)
  assert _mesh(choose(trained)) == ("model_parallel", {"data": 2, "model": 4})
  assert _mesh(choose(_description())) == ("data_parallel", {"data": 8, "model": 1})
  assert _mesh(choose(trained, layout="fsdp")) == ("fsdp", {"data": 8, "model": 1})
  assert _mesh(choose(trained, num_partitions=2)) == (
      "model_parallel", {"data": 4, "model": 2})
  assert _mesh(choose(trained, layout="model_parallel")) == (
      "model_parallel", {"data": 2, "model": 4})
  assert _mesh(choose(_description(), num_partitions=8)) == (
      "model_parallel", {"data": 1, "model": 8})
  assert _mesh(choose(trained, layout="data_parallel")) == (
      "data_parallel", {"data": 8, "model": 1})


def test_a_trained_mesh_that_does_not_fit_falls_back_and_says_so(caplog):
  trained = _description({"layout": "fsdp", "num_partitions": 4,
                          "num_devices": 64})
  with caplog.at_level(logging.WARNING):
    partitioner = predictor_lib.choose_partitioner(
        trained, devices=jax.devices()[:6])
  assert _mesh(partitioner) == ("fsdp", {"data": 3, "model": 2})
  assert "num_partitions=4 on 64 devices" in caplog.text
  assert "splits the model 2 ways instead" in caplog.text
  one = predictor_lib.choose_partitioner(trained, devices=jax.devices()[:1])
  assert _mesh(one) == ("fsdp", {"data": 1, "model": 1})


def test_num_devices_takes_the_first_devices():
  partitioner = predictor_lib.choose_partitioner(
      _description(TRAINED_PARTITIONING), num_devices=4)
  assert _mesh(partitioner) == ("model_parallel", {"data": 1, "model": 4})
  assert list(partitioner.mesh.devices.flat) == jax.devices()[:4]
  with pytest.raises(errors.ConfigurationError, match="num_devices=9"):
    predictor_lib.choose_partitioner(_description(), num_devices=9)


def test_explicit_settings_that_cannot_be_used_are_refused():
  with pytest.raises(errors.ConfigurationError, match="must divide"):
    predictor_lib.choose_partitioner(_description(), num_partitions=3)
  with pytest.raises(errors.ConfigurationError, match="num_partitions must be 1"):
    predictor_lib.choose_partitioner(_description(), layout="data_parallel",
                                     num_partitions=2)
  with pytest.raises(errors.ConfigurationError, match="choose one of"):
    predictor_lib.choose_partitioner(_description(), layout="tensor")


def test_a_batch_size_off_the_data_parallel_size_is_padded(model_dir, caplog):
  with caplog.at_level(logging.WARNING):
    predictor = _predictor(model_dir, DecodeSettings(), batch_size=3,
                           layout="data_parallel")
  assert "each batch is padded to 8 rows" in caplog.text
  assert len(predictor(QUESTIONS[:3], batch_index=0)) == 3
  with pytest.raises(errors.ConfigurationError, match="batch size"):
    _predictor(model_dir, DecodeSettings(), batch_size=0)


def test_the_trainer_records_its_mesh(tmp_path, monkeypatch):
  from cot_distill.train import trainer  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(trainer, "_store_vocabulary", lambda *_: {})
  trainer._write_run_files(  # pylint: disable=protected-access
      str(tmp_path), EncoderDecoderModel(_config()), "task", LENGTHS,
      partitioning.Partitioner(layout="fsdp", num_partitions=2))
  written = json.loads((tmp_path / "model_config.json").read_text())
  assert written["partitioning"] == {"layout": "fsdp", "num_partitions": 2,
                                     "num_devices": 8}


def test_a_t5x_checkpoint_is_placed_on_the_mesh(t5x_tiny_dir):
  """T5X checkpoints are read on the host, then split (2-D FSDP, 4 x 2).

  (The fixture decodes in bfloat16, where a sharded product may round
  apart from one device's, so its texts are compared with T5X's own only
  on one device, in test_evaluation_commands.py.)
  """
  rows = [json.loads(line) for line in
          (t5x_tiny_dir / "validation.jsonl").read_text().splitlines()][:3]
  predictor = _predictor(
      t5x_tiny_dir / "checkpoint_legacy" / "checkpoint_1000",
      DecodeSettings(max_input_length=64, max_decode_length=64),
      layout="fsdp", num_partitions=2)
  assert dict(predictor.partitioner.mesh.shape) == {"data": 4, "model": 2}
  wo = predictor.params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
  assert _spec(wo) == ("model", "data")
  outputs = predictor([row["inputs"] for row in rows], batch_index=0)
  # Trained on "... The answer is N." targets, sharded or not.
  assert all("The answer is" in output[0].text for output in outputs)
