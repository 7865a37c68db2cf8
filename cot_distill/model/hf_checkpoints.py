"""Hugging Face T5 weights <-> our (T5X-named) parameter tree.

The two implementations compute the same function, so conversion is renaming
and transposing only:
- torch `nn.Linear` stores [out, in]; T5X kernels are [in, out] -> transpose.
- HF's attention also has no 1/sqrt(d_kv) at run time (`scaling = 1.0`, the
  Mesh TensorFlow convention), so query kernels copy over unchanged.
- HF keeps each stack's relative-position table in layer 0's self-attention
  as an Embedding [buckets, heads]; T5X has `relpos_bias/rel_embedding`
  [heads, buckets] per stack.
- Tied models (T5 1.0) have no `lm_head`; HF then rescales decoder outputs by
  d_model**-0.5 exactly like T5X's `logits_via_embedding`.
- HF has one module per layer (T5X's unscanned tree); a scanned config's
  stacked layers are sliced on export and stacked on import (`scanned.py`).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Mapping

import numpy as np

from cot_distill.model import param_tree
from cot_distill.model import scanned
from cot_distill.model.config import EOS_ID, PAD_ID, T5Config

_FEED_FORWARD = {("relu",): "relu", ("gelu", "linear"): "gated-gelu",
                 ("silu", "linear"): "gated-silu", ("relu", "linear"): "gated-relu"}
_ATTENTION = {"q": "query", "k": "key", "v": "value", "o": "out"}


def config_to_hf(config: T5Config) -> dict[str, Any]:
  """transformers `T5Config` fields for our config (raises if HF cannot express it)."""
  feed_forward = _FEED_FORWARD.get(tuple(config.mlp_activations))
  if feed_forward is None:
    raise ValueError(f"mlp_activations {config.mlp_activations} has no Hugging Face T5 "
                     f"equivalent (supported: {sorted(_FEED_FORWARD)})")
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "d_ff": config.mlp_dim,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.num_buckets,
      "relative_attention_max_distance": config.max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0,
      "feed_forward_proj": feed_forward,
      "is_encoder_decoder": True,
      "use_cache": True,
      "pad_token_id": PAD_ID,
      "eos_token_id": EOS_ID,
      "decoder_start_token_id": PAD_ID,
      "tie_word_embeddings": config.logits_via_embedding,
      "dtype": "float32",
  }


def _scales_decoder_outputs(hf_config: Mapping[str, Any]) -> bool:
  """Whether the model is T5 1.0-style tied (output layer = embedding, rescaled).

  transformers >= 5 always writes tie_word_embeddings=true and records the
  real choice as scale_decoder_outputs; older files only have
  tie_word_embeddings (absent means tied, the T5 1.0 default).
  """
  if "scale_decoder_outputs" in hf_config:
    return bool(hf_config["scale_decoder_outputs"])
  return hf_config.get("tie_word_embeddings", True) is not False


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> T5Config:
  """Our config from a transformers T5 config.json dict."""
  feed_forward = hf_config.get("feed_forward_proj", "relu")
  by_name = {name: activations for activations, name in _FEED_FORWARD.items()}
  if feed_forward not in by_name:
    # HF's plain "gelu" is the exact erf GELU; T5X's is the tanh form.
    raise ValueError(f"config.json feed_forward_proj={feed_forward!r} is not supported "
                     f"(supported: {sorted(by_name)})")
  values = dict(
      vocab_size=hf_config["vocab_size"], emb_dim=hf_config["d_model"],
      num_heads=hf_config["num_heads"], head_dim=hf_config["d_kv"],
      mlp_dim=hf_config["d_ff"], num_encoder_layers=hf_config["num_layers"],
      num_decoder_layers=hf_config.get("num_decoder_layers") or hf_config["num_layers"],
      mlp_activations=by_name[feed_forward],
      dropout_rate=hf_config.get("dropout_rate", 0.1),
      logits_via_embedding=_scales_decoder_outputs(hf_config),
      num_buckets=hf_config.get("relative_attention_num_buckets", 32),
      max_distance=hf_config.get("relative_attention_max_distance", 128),
      layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-6))
  values.update(overrides)
  return T5Config(**values)


def _mlp_names(config: T5Config) -> list[str]:
  return ["wi"] if len(config.mlp_activations) == 1 else [
      f"wi_{index}" for index in range(len(config.mlp_activations))]


def name_map(config: T5Config) -> dict[str, tuple[str, bool]]:
  """{our name: (HF name, transpose?)} for every parameter of `config`."""
  names: dict[str, tuple[str, bool]] = {"token_embedder/embedding": ("shared.weight", False)}
  stacks = (("encoder", config.num_encoder_layers, (("attention", "SelfAttention"),),
             ("pre_attention_layer_norm", "pre_mlp_layer_norm")),
            ("decoder", config.num_decoder_layers,
             (("self_attention", "SelfAttention"), ("encoder_decoder_attention", "EncDecAttention")),
             ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
              "pre_mlp_layer_norm")))
  for stack, num_layers, attentions, norms in stacks:
    names[f"{stack}/relpos_bias/rel_embedding"] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
    final_norm = "encoder_norm" if stack == "encoder" else "decoder_norm"
    names[f"{stack}/{final_norm}/scale"] = (f"{stack}.final_layer_norm.weight", False)
    for layer in range(num_layers):
      ours, theirs = f"{stack}/layers_{layer}", f"{stack}.block.{layer}.layer"
      for sub_layer, norm in enumerate(norms):
        names[f"{ours}/{norm}/scale"] = (f"{theirs}.{sub_layer}.layer_norm.weight", False)
      for sub_layer, (attention, hf_attention) in enumerate(attentions):
        for hf_proj, proj in _ATTENTION.items():
          names[f"{ours}/{attention}/{proj}/kernel"] = (
              f"{theirs}.{sub_layer}.{hf_attention}.{hf_proj}.weight", True)
      mlp = len(attentions)
      for dense in _mlp_names(config) + ["wo"]:
        names[f"{ours}/mlp/{dense}/kernel"] = (
            f"{theirs}.{mlp}.DenseReluDense.{dense}.weight", True)
  if not config.logits_via_embedding:
    names["decoder/logits_dense/kernel"] = ("lm_head.weight", True)
  return names


def params_to_hf_state(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
  flat = scanned.unscan_flat(param_tree.flatten(params), config)
  state = {}
  for ours, (theirs, transpose) in name_map(config).items():
    if ours not in flat:
      raise ValueError(f"export: parameter {ours!r} missing from params for this config")
    array = np.asarray(flat[ours], np.float32)
    state[theirs] = np.ascontiguousarray(array.T if transpose else array)
  return state


def hf_state_to_params(state: Mapping[str, np.ndarray], config: T5Config,
                       source: str) -> dict[str, Any]:
  """Our nested params (in `config`'s layer layout) from an HF state dict.

  Errors name the HF tensor.
  """
  flat = {}
  for ours, (theirs, transpose) in name_map(config).items():
    if theirs not in state:
      raise ValueError(f"{source}: tensor {theirs!r} (our {ours!r}) is missing; "
                       f"config: {config}")
    array = np.asarray(state[theirs], np.float32)
    flat[ours] = array.T if transpose else array
  return param_tree.check_and_unflatten(flat, config, source=source)


def _read_state(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Tensors from model.safetensors (single or sharded) or pytorch_model.bin."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  index = path / "model.safetensors.index.json"
  if index.is_file():
    state = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
      state.update(load_file(str(path / shard)))
    return state
  if (path / "model.safetensors").is_file():
    return load_file(str(path / "model.safetensors"))
  if (path / "pytorch_model.bin").is_file():
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError(f"{path}/pytorch_model.bin needs torch (pip install "
                        f"'cot-distill[reference]') or a safetensors copy") from error
    state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}
  raise FileNotFoundError(f"{path}: no model.safetensors(.index.json) or pytorch_model.bin")


def load_hf_checkpoint(path: str | os.PathLike, **config_overrides: Any):
  """(params, T5Config) from a Hugging Face T5 directory (config.json + weights)."""
  path = pathlib.Path(path)
  config_file = path / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"{config_file} not found (a Hugging Face T5 directory holds "
                            f"config.json and model.safetensors or pytorch_model.bin)")
  hf_config = json.loads(config_file.read_text())
  if hf_config.get("model_type", "t5") not in ("t5", "mt5"):
    raise ValueError(f"{config_file}: model_type {hf_config.get('model_type')!r} is not T5")
  config = config_from_hf(hf_config, **config_overrides)
  state = _read_state(path)
  if config.logits_via_embedding:
    lm_head = state.pop("lm_head.weight", None)  # a tied copy some checkpoints carry
    if lm_head is not None and not np.array_equal(lm_head, state.get("shared.weight")):
      raise ValueError(f"{path}: config.json says the output layer is the rescaled "
                       f"embedding (T5 1.0), but tensor 'lm_head.weight' differs from "
                       f"'shared.weight'; set tie_word_embeddings=false for T5 1.1")
  return hf_state_to_params(state, config, source=str(path)), config


def export_hf(params: Mapping[str, Any], config: T5Config, out_dir: str | os.PathLike) -> pathlib.Path:
  """Writes model.safetensors + config.json + generation_config.json.

  `transformers.T5ForConditionalGeneration.from_pretrained(out_dir)` loads
  the result. Files are written to a temporary name and renamed, so an
  interrupted export never leaves a half-written model behind.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  state = params_to_hf_state(params, config)
  generation = {"decoder_start_token_id": PAD_ID, "eos_token_id": EOS_ID,
                "pad_token_id": PAD_ID}
  files = {"config.json": json.dumps(config_to_hf(config), indent=2) + "\n",
           "generation_config.json": json.dumps(generation, indent=2) + "\n"}
  with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".tmp", delete=False) as handle:
    temporary = handle.name
  save_file(state, temporary, metadata={"format": "pt"})
  os.replace(temporary, out_dir / "model.safetensors")
  for name, text in files.items():
    temporary = out_dir / f"{name}.tmp"
    temporary.write_text(text)
    os.replace(temporary, out_dir / name)
  return out_dir
