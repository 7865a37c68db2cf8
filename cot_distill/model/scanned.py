"""Scanned layers (`T5Config.scan_layers`): where the layer axis goes, and tree conversion.

A scanned network (`network.scan_layers`) keeps one stacked copy of each
per-layer parameter instead of `layers_0 ... layers_{N-1}`:

    unscanned (T5X's t5 network)          scanned
    encoder/layers_N/mlp/wo/kernel [m, e]  encoder/layers/mlp/wo/kernel [m, N, e]
    encoder/layers_N/pre_mlp_layer_norm/scale [e]
                                           encoder/layers/pre_mlp_layer_norm/scale [e, N]

The layer axis is axis 1 with logical name "layers", as T5X's scalable_t5
(`param_scan_axis = 1`) and MaxText put it: axis 0 stays the kernel's input
axis, so the partitioning of every other axis is the unscanned one. The
stacked module is named "layers" (MaxText's name; scalable_t5 calls it
"encoder"/"decoder" and also has a relative-position table per layer, which
T5 does not, so its trees are a different model either way). Everything
outside the layers (embedding, relpos tables, final norms, logits) is the
same in both trees.

Checkpoints in either layout convert exactly (stacking and slicing only):
`scan_params` / `unscan_params` for nested trees, `to_layout` for "whatever
this is, in the layout `config` asks for", and the flat forms for importers.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cot_distill.model.config import T5Config

# Axis of the stacked parameters (T5X scalable_t5's and MaxText's default).
PARAM_SCAN_AXIS = 1
# Axis of the stacked decoding cache: in front, as T5X (which passes
# `cache_offset=1` to its decoders): a cache stacked after its rows is moved
# to the front and back by nn.scan at every decoding step, which made cached
# greedy decoding of T5 1.1 small ~3x slower on CPU. Beam search is told
# that the rows are axis 1 (`decoding.beam_search(state_batch_axis=1)`).
CACHE_SCAN_AXIS = 0
# Logical axis name of the layer axis (the partitioning rules keep it whole).
LAYER_AXIS_NAME = "layers"
# Name of the scanned module inside each stack: encoder/layers/...
SCANNED_NAME = "layers"
STACKS = ("encoder", "decoder")

_UNSCANNED = re.compile(r"^(encoder|decoder)/layers_(\d+)/(.+)$")
_SCANNED = re.compile(r"^(encoder|decoder)/layers/(.+)$")


def _num_layers(config: T5Config, stack: str) -> int:
  return config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers


def is_scanned(tree: Mapping[str, Any]) -> bool:
  """Whether a nested or flat ("a/b/c") parameter tree has stacked layers."""
  from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
  return any(_SCANNED.match(name) for name in param_tree.flatten(tree))


def _stack(values: Sequence[Any]) -> Any:
  if any(isinstance(value, jax.ShapeDtypeStruct) for value in values):
    first = values[0]
    shape = list(first.shape)
    shape.insert(PARAM_SCAN_AXIS, len(values))
    return jax.ShapeDtypeStruct(tuple(shape), first.dtype)
  if any(isinstance(value, jax.Array) for value in values):
    return jnp.stack(values, axis=PARAM_SCAN_AXIS)
  return np.stack([np.asarray(value) for value in values], axis=PARAM_SCAN_AXIS)


def _layer(value: Any, index: int) -> Any:
  if isinstance(value, jax.ShapeDtypeStruct):
    shape = list(value.shape)
    del shape[PARAM_SCAN_AXIS]
    return jax.ShapeDtypeStruct(tuple(shape), value.dtype)
  if not isinstance(value, jax.Array):
    value = np.asarray(value)  # basic indexing below: a view, no copy
  return value[(slice(None),) * PARAM_SCAN_AXIS + (index,)]


def scan_flat(flat: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """Flat unscanned tree -> flat scanned tree; other names pass through.

  Raises ValueError naming a layer parameter that is missing, beyond the
  config's layer count, or shaped unlike its layer 0.
  """
  result: dict[str, Any] = {}
  groups: dict[tuple[str, str], dict[int, Any]] = {}
  for name, value in flat.items():
    match = _UNSCANNED.match(name)
    if match is None:
      result[name] = value
      continue
    stack, index, rest = match.group(1), int(match.group(2)), match.group(3)
    groups.setdefault((stack, rest), {})[index] = value
  for (stack, rest), by_index in sorted(groups.items()):
    count = _num_layers(config, stack)
    extra = sorted(index for index in by_index if index >= count)
    if extra:
      raise ValueError(f"parameter {stack}/layers_{extra[0]}/{rest!r} is beyond the "
                       f"config's {count} {stack} layers")
    missing = [index for index in range(count) if index not in by_index]
    if missing:
      raise ValueError(f"parameter '{stack}/layers_{missing[0]}/{rest}' is missing "
                       f"({len(missing)} of {count} {stack} layers lack {rest!r})")
    shapes = {index: tuple(np.shape(value)) for index, value in by_index.items()}
    for index in range(count):
      if shapes[index] != shapes[0]:
        raise ValueError(f"parameter '{stack}/layers_{index}/{rest}' has shape "
                         f"{shapes[index]}, but layer 0's has {shapes[0]}")
    result[f"{stack}/{SCANNED_NAME}/{rest}"] = _stack(
        [by_index[index] for index in range(count)])
  return result


def unscan_flat(flat: Mapping[str, Any], config: T5Config | None = None) -> dict[str, Any]:
  """Flat scanned tree -> flat unscanned (T5X) tree; other names pass through.

  The layer count is read from each stacked array; with `config`, a count
  that differs from the config's is a ValueError naming the parameter.
  """
  result: dict[str, Any] = {}
  for name, value in flat.items():
    match = _SCANNED.match(name)
    if match is None:
      result[name] = value
      continue
    stack, rest = match.group(1), match.group(2)
    shape = tuple(np.shape(value))
    if len(shape) <= PARAM_SCAN_AXIS:
      raise ValueError(f"parameter {name!r} has shape {shape}: no layer axis "
                       f"{PARAM_SCAN_AXIS} to unstack")
    count = shape[PARAM_SCAN_AXIS]
    if config is not None and count != _num_layers(config, stack):
      raise ValueError(f"parameter {name!r} stacks {count} layers (shape {shape}) but "
                       f"the config has {_num_layers(config, stack)} {stack} layers")
    for index in range(count):
      result[f"{stack}/layers_{index}/{rest}"] = _layer(value, index)
  return result


def flat_to_layout(flat: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """A flat tree in either layout, in the one `config.scan_layers` asks for."""
  scanned = any(_SCANNED.match(name) for name in flat)
  if config.scan_layers and not scanned:
    return scan_flat(flat, config)
  if scanned and not config.scan_layers:
    return unscan_flat(flat, config)
  return dict(flat)


def scan_params(tree: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """Unscanned (T5X) nested params -> the scanned tree of `config`'s layer counts."""
  from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
  return param_tree.unflatten(scan_flat(param_tree.flatten(tree), config))


def unscan_params(tree: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """Scanned nested params -> T5X's unscanned tree (`layers_0` ... `layers_{N-1}`)."""
  from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
  return param_tree.unflatten(unscan_flat(param_tree.flatten(tree), config))


def to_layout(tree: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
  """Nested params in either layout, in `config`'s (unchanged if already)."""
  from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
  flat = param_tree.flatten(tree)
  scanned = any(_SCANNED.match(name) for name in flat)
  if scanned == config.scan_layers:
    return tree
  return param_tree.unflatten(flat_to_layout(flat, config))


def layer_axis(names: Sequence[str]) -> int | None:
  """The layer axis of the parameter at path `names`, None when not stacked.

  For code that sees parameter paths but not their axis names (the
  optimizer): a path through `encoder/layers/` or `decoder/layers/` is a
  stacked parameter of a scanned network. The unscanned `layers_N` never
  match.
  """
  names = [str(name) for name in names]
  for index in range(len(names) - 1):
    if names[index] in STACKS and names[index + 1] == SCANNED_NAME:
      return PARAM_SCAN_AXIS
  return None
