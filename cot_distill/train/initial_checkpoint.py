"""INITIAL_CHECKPOINT_PATH: start fine-tuning from pretrained weights.

Accepts the three formats a user will have: a Hugging Face T5 directory
(config.json + safetensors/bin), a T5X `checkpoint_<step>` directory (legacy
or Orbax), or a cot-distill MODEL_DIR / its `checkpoint_<step>`. Only the
parameters are taken; the optimizer starts fresh, as in T5X fine-tuning.
Either layer layout (T5X's unscanned `layers_N` or scanned `layers`) starts
either kind of run: the parameters are converted to the run's
`T5Config.scan_layers`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np

from cot_distill.model import checkpoints as model_checkpoints
from cot_distill.model import scanned
from cot_distill.model.config import T5Config
from cot_distill.train import checkpoints


def checkpoint_format(path: str) -> str:
  """"huggingface", "cot_distill" or "t5x" (checked in that order)."""
  if "://" not in path:
    if os.path.exists(os.path.join(path, "config.json")):
      return "huggingface"
    parent = os.path.dirname(os.path.abspath(path).rstrip("/"))
    for directory in (path, parent):
      if os.path.exists(os.path.join(directory, checkpoints.MODEL_CONFIG_FILE)):
        return "cot_distill"
  return "t5x"


def _check_tree(loaded: Any, expected: Any, path: str) -> None:
  flat_loaded = {jax.tree_util.keystr(k): v for k, v in
                 jax.tree_util.tree_flatten_with_path(loaded)[0]}
  flat_expected = {jax.tree_util.keystr(k): v for k, v in
                   jax.tree_util.tree_flatten_with_path(expected)[0]}
  problems = []
  for name in sorted(set(flat_expected) - set(flat_loaded)):
    problems.append(f"missing {name}")
  for name in sorted(set(flat_loaded) - set(flat_expected)):
    problems.append(f"unexpected {name}")
  for name in sorted(set(flat_loaded) & set(flat_expected)):
    have, want = np.shape(flat_loaded[name]), tuple(flat_expected[name].shape)
    if tuple(have) != want:
      problems.append(f"{name}: shape {tuple(have)}, model expects {want}")
  if problems:
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise ValueError(f"INITIAL_CHECKPOINT_PATH={path} does not fit the model "
                     f"config:\n  {shown}{more}")


def load_initial_params(path: str, config: T5Config, param_shapes: Any,
                        param_shardings: Any) -> Any:
  """Reads `path`, checks it against the model, places it sharded."""
  kind = checkpoint_format(path)
  logging.info("initialising parameters from %s checkpoint %s", kind, path)
  if kind == "huggingface":
    params, stored = model_checkpoints.load_hf_checkpoint(path)
  elif kind == "cot_distill":
    params, stored, _ = checkpoints.restore_params(path)
  else:
    params, stored = model_checkpoints.load_t5x_checkpoint(path, config=config)
  # To the run's layer layout, with the stored layer counts: a count that
  # differs from the run's then shows as a shape in _check_tree's message.
  params = scanned.to_layout(params, stored.replace(scan_layers=config.scan_layers))
  _check_tree(params, param_shapes, path)

  def place(value, shape, sharding):
    # Every host read the same file, so each hands its devices their slices.
    value = np.asarray(value, dtype=shape.dtype)
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])
  return jax.tree.map(place, params, param_shapes, param_shardings)
