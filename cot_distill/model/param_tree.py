"""Flat "a/b/c" views of parameter trees and checks against a config's expected shapes.

Every importer (T5X, Hugging Face) produces a flat {path: array} mapping and
goes through `check_and_unflatten`, so a wrong shape, a missing array or an
unexpected one is reported with the parameter's name in one place. It is also
where a tree stored with the other layer layout (scanned vs T5X's unscanned
`layers_N`, `scanned.py`) is converted to the one the config asks for.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from cot_distill.model.config import T5Config


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> {"a/b/c": leaf}; stops at TensorStore spec dicts (a "driver" key)."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping) and "driver" not in value:
      flat.update(flatten(value, name))
    else:
      flat[name] = value
  return flat


def path_names(path: Any) -> tuple[str, ...]:
  """The names along a jax key path (dict keys, attribute names, indices),
  so code walking any tree (params, optimizer state) can read `a/b/c`."""
  names = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        names.append(str(getattr(key, attribute)))
        break
  return tuple(names)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def expected_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """{path: shape} of every parameter for `config`, without allocating anything.

  With `config.scan_layers` the layer parameters are the stacked
  `{encoder,decoder}/layers/...` ones.
  """
  from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  model = EncoderDecoderModel(config)
  shapes = jax.eval_shape(lambda: nn.unbox(model.get_initial_variables(
      jax.random.PRNGKey(0), {"encoder_input_tokens": (1, 1),
                              "decoder_input_tokens": (1, 1)})))
  return {name: tuple(leaf.shape) for name, leaf in flatten(shapes["params"]).items()}


def check_and_unflatten(flat: Mapping[str, np.ndarray], config: T5Config, *,
                        source: str, dtype: Any = np.float32) -> dict[str, Any]:
  """Validates names and shapes against `config`; returns the nested params tree.

  Raises ValueError naming the first offending parameter (and what the config
  expects), so a checkpoint/config mismatch never surfaces as a broadcast
  error deep inside a jitted step. `flat` may have either layer layout; the
  result has `config`'s (`config.scan_layers`).
  """
  from cot_distill.model import scanned  # pylint: disable=g-import-not-at-top
  try:
    flat = scanned.flat_to_layout(flat, config)
  except ValueError as error:
    raise ValueError(f"{source}: {error}; config: {config}") from None
  expected = expected_shapes(config)
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  if missing:
    raise ValueError(f"{source}: parameter {missing[0]!r} (shape {expected[missing[0]]}) is "
                     f"missing from the checkpoint ({len(missing)} missing in all: "
                     f"{missing[:5]}); is the config right? {config}")
  if unexpected:
    raise ValueError(f"{source}: checkpoint has parameter {unexpected[0]!r} that config "
                     f"does not ({len(unexpected)} in all: {unexpected[:5]}); config: {config}")
  for name, shape in expected.items():
    actual = tuple(np.shape(flat[name]))
    if actual != shape:
      raise ValueError(f"{source}: parameter {name!r} has shape {actual} but the config "
                       f"expects {shape}; config: {config}")
  return unflatten({name: np.asarray(value, dtype) for name, value in flat.items()})
