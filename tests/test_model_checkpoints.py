"""Checkpoint import/export, and numerical equivalence with Hugging Face's PyTorch T5."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import checkpoints
from cot_distill.model import hf_checkpoints
from cot_distill.model import param_tree
from cot_distill.model.models import EncoderDecoderModel
from model_testing import random_inputs, teacher_forced_batch, tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["t5_1_0_tiny", "t5_1_1_tiny"])
def exported(request, tmp_path_factory):
  """A tiny random model, exported to HF format and loaded by transformers."""
  model, params, config = tiny_model(request.param, seed=7, scale=2.0)
  out_dir = checkpoints.export_hf(params, config, tmp_path_factory.mktemp(request.param))
  transformers.logging.set_verbosity_error()
  reference = transformers.T5ForConditionalGeneration.from_pretrained(out_dir).eval()
  return model, params, config, out_dir, reference


def test_logits_match_transformers(exported):
  model, params, _, _, reference = exported
  # Encoder length 40 crosses the relative-position bucket boundaries at 8 and 16.
  inputs = random_inputs(0, batch=3, length=40, min_length=20)
  targets = random_inputs(1, batch=3, length=20, min_length=10)
  batch = teacher_forced_batch(inputs, targets)
  logits = np.asarray(model.compute_logits(params, batch))
  with torch.no_grad():
    expected = reference(
        input_ids=torch.tensor(inputs, dtype=torch.long),
        attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
        decoder_input_ids=torch.tensor(np.asarray(batch["decoder_input_tokens"]),
                                       dtype=torch.long)).logits.numpy()
  # HF does not mask padded decoder positions; compare the real ones.
  real = targets > 0
  np.testing.assert_allclose(logits[real], expected[real], atol=1e-4, rtol=0)


def test_greedy_decodes_match_transformers_generate(exported):
  model, params, _, _, reference = exported
  inputs = random_inputs(2, batch=4, length=12)
  ours = np.asarray(model.predict_batch(params, {"encoder_input_tokens": jnp.asarray(inputs)},
                                        max_decode_length=10, eos_id=None))
  with torch.no_grad():
    theirs = reference.generate(
        input_ids=torch.tensor(inputs, dtype=torch.long),
        attention_mask=torch.tensor(inputs > 0, dtype=torch.long), do_sample=False,
        num_beams=1, max_new_tokens=10, min_new_tokens=10).numpy()[:, 1:]
  assert len(np.unique(ours)) > 4, "degenerate decode; test cannot fail"
  np.testing.assert_array_equal(ours, theirs)


def test_export_then_import_round_trips(exported):
  _, params, config, out_dir, _ = exported
  loaded, loaded_config = checkpoints.load_hf_checkpoint(out_dir)
  assert loaded_config.replace(dtype=config.dtype) == config
  for name, value in param_tree.flatten(params).items():
    np.testing.assert_array_equal(param_tree.flatten(loaded)[name], value, err_msg=name)
  written = json.loads((out_dir / "config.json").read_text())
  assert written["tie_word_embeddings"] == config.logits_via_embedding


def test_pytorch_bin_import(exported, tmp_path):
  _, params, _, _, reference = exported
  reference.config.save_pretrained(tmp_path)
  torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
  loaded, _ = checkpoints.load_hf_checkpoint(tmp_path)
  for name, value in param_tree.flatten(params).items():
    np.testing.assert_array_equal(param_tree.flatten(loaded)[name], value, err_msg=name)


def test_shape_mismatch_names_the_parameter(tmp_path):
  _, params, config = tiny_model("t5_1_1_tiny")
  state = hf_checkpoints.params_to_hf_state(params, config)
  state["decoder.block.1.layer.2.DenseReluDense.wo.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"decoder/layers_1/mlp/wo/kernel.*\(3, 3\)"):
    hf_checkpoints.hf_state_to_params(state, config, source="test")
  del state["decoder.block.0.layer.1.EncDecAttention.q.weight"]
  with pytest.raises(ValueError, match="EncDecAttention.q.weight"):
    hf_checkpoints.hf_state_to_params(state, config, source="test")


def test_t5x_checkpoint_with_wrong_config_names_the_parameter(t5x_tiny_dir):
  path = t5x_tiny_dir / "checkpoint_legacy" / "checkpoint_1000"
  _, config = checkpoints.load_t5x_checkpoint(path)
  wrong_vocabulary = r"parameter '(decoder/logits_dense/kernel|token_embedder/embedding)' has shape"
  with pytest.raises(ValueError, match=wrong_vocabulary):
    checkpoints.load_t5x_checkpoint(path, config.replace(vocab_size=512))
  with pytest.raises(ValueError, match="layers_2"):
    checkpoints.load_t5x_checkpoint(path, config.replace(num_decoder_layers=3))
  with pytest.raises(ValueError, match="not a T5X checkpoint"):
    checkpoints.load_t5x_checkpoint(t5x_tiny_dir)


def test_fixture_exported_to_hf_reproduces_t5x_logits(t5x_tiny_dir, tmp_path):
  """T5X checkpoint -> HF export -> transformers gives T5X's own logits."""
  params, config = checkpoints.load_t5x_checkpoint(
      t5x_tiny_dir / "checkpoint_orbax" / "checkpoint_1000", dropout_rate=0.0)
  out_dir = checkpoints.export_hf(params, config, tmp_path / "hf")
  transformers.logging.set_verbosity_error()
  reference = transformers.T5ForConditionalGeneration.from_pretrained(out_dir).eval()
  arrays = dict(np.load(t5x_tiny_dir / "batch_and_logits.npz"))
  with torch.no_grad():
    logits = reference(
        input_ids=torch.tensor(arrays["encoder_input_tokens"], dtype=torch.long),
        attention_mask=torch.tensor(arrays["encoder_input_tokens"] > 0, dtype=torch.long),
        decoder_input_ids=torch.tensor(arrays["decoder_input_tokens"], dtype=torch.long)
    ).logits.numpy()
  real = arrays["decoder_target_tokens"] > 0
  np.testing.assert_allclose(logits[real], arrays["logits_float32_activations"][real], atol=1e-4)
  decodes = dict(np.load(t5x_tiny_dir / "greedy_decode.npz"))["decode_ids_float32_activations"]
  with torch.no_grad():
    generated = reference.generate(
        input_ids=torch.tensor(arrays["encoder_input_tokens"], dtype=torch.long),
        attention_mask=torch.tensor(arrays["encoder_input_tokens"] > 0, dtype=torch.long),
        do_sample=False, num_beams=1, max_new_tokens=64).numpy()[:, 1:]
  generated = np.pad(generated, ((0, 0), (0, 64 - generated.shape[1])))
  np.testing.assert_array_equal(generated, decodes)
  ours = EncoderDecoderModel(config.replace(dtype="float32")).predict_batch(
      params, {"encoder_input_tokens": jnp.asarray(arrays["encoder_input_tokens"])},
      max_decode_length=64)
  np.testing.assert_array_equal(ours, decodes)
