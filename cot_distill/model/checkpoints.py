"""Checkpoint import/export entry points (the contract's API).

    load_t5x_checkpoint(path, config=None) -> (params, T5Config)
    load_hf_checkpoint(path)               -> (params, T5Config)
    export_hf(params, config, out_dir)     -> out_dir

T5X checkpoints carry no model config, so `load_t5x_checkpoint` infers one
from the array shapes when none is given; a given config is checked against
every array and a mismatch names the parameter.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from cot_distill.model import param_tree
from cot_distill.model import t5x_checkpoints
from cot_distill.model.config import T5Config
from cot_distill.model.hf_checkpoints import export_hf, load_hf_checkpoint

__all__ = ["load_t5x_checkpoint", "load_hf_checkpoint", "export_hf", "infer_config"]


def infer_config(flat: Mapping[str, np.ndarray], **overrides: Any) -> T5Config:
  """A T5Config matching the shapes of a flat T5X params mapping.

  Heads come from the relative-position table (heads, buckets), which splits
  the joined q/k/v width into heads x head_dim. A gated MLP is assumed to be
  T5 1.1's gated GELU (the only gated variant T5X ships); pass
  `mlp_activations=` to say otherwise. A scanned tree (stacked
  `encoder/layers/...`) gives `scan_layers=True`, so the params load as stored.
  """
  from cot_distill.model import scanned  # pylint: disable=g-import-not-at-top
  stored_scanned = scanned.is_scanned(flat)
  if stored_scanned:
    flat = scanned.unscan_flat(flat)  # views: only the shapes are read
  def shape(name: str) -> tuple[int, ...]:
    if name not in flat:
      raise ValueError(f"cannot infer the config: parameter {name!r} is missing "
                       f"(have e.g. {sorted(flat)[:5]})")
    return tuple(np.shape(flat[name]))

  vocab_size, emb_dim = shape("token_embedder/embedding")
  num_heads, num_buckets = shape("encoder/relpos_bias/rel_embedding")
  joined_kv = shape("encoder/layers_0/attention/query/kernel")[1]
  count = lambda stack: len({name.split("/")[1] for name in flat
                             if name.startswith(f"{stack}/layers_")})
  gated = "encoder/layers_0/mlp/wi_0/kernel" in flat
  mlp_dim = shape("encoder/layers_0/mlp/wo/kernel")[0]
  values = dict(vocab_size=vocab_size, emb_dim=emb_dim, num_heads=num_heads,
                head_dim=joined_kv // num_heads, mlp_dim=mlp_dim,
                num_encoder_layers=count("encoder"), num_decoder_layers=count("decoder"),
                mlp_activations=("gelu", "linear") if gated else ("relu",),
                logits_via_embedding="decoder/logits_dense/kernel" not in flat,
                num_buckets=num_buckets, scan_layers=stored_scanned)
  values.update(overrides)
  return T5Config(**values)


def load_t5x_checkpoint(path: str | os.PathLike, config: T5Config | None = None,
                        **config_overrides: Any) -> tuple[dict[str, Any], T5Config]:
  """(params, config) from a T5X `checkpoint_<step>` dir (legacy or Orbax; local or gs://).

  Without `config` the config is inferred from the shapes (dtype and dropout
  from `config_overrides` or the defaults).
  """
  flat = t5x_checkpoints.read_t5x_params(path)
  if config is None:
    config = infer_config(flat, **config_overrides)
  elif config_overrides:
    config = config.replace(**config_overrides)
  return param_tree.check_and_unflatten(flat, config, source=str(path)), config
