"""Per-array checksums, written with every checkpoint and checked on restore.

Orbax writes a step atomically, so a killed save never leaves a half step;
it does not notice a step damaged afterwards (a truncated file, a flipped
byte, a block of zeros from a failing disk), and such a step may restore
without error and train on garbage. Every step therefore carries an
`integrity` item, `integrity/integrity.json`:

  {"format": 1,
   "arrays": {"params/encoder/layers_0/...": {"shape": [8, 16],
              "dtype": "float32", "checksum": "89ab01cd23ef4567"}, ...},
   "data": {"checksum": "..."}}

A checksum is two 32-bit sums over the array's raw bit pattern: the plain sum
of its 32-bit words and the sum weighted by (2 * position + 1). Integer sums
wrap and are exact in any order, so the value does not depend on how the
array is sharded or reduced, and any change to a single word changes both
sums. It is computed on the device, in one jitted pass over the state
(`digests`); the training thread only dispatches it, and orbax's commit
thread fetches the small result and writes the JSON (`IntegrityHandler`).
(On CPU with synchronous dispatch, `cpu_runtime`, dispatching is computing:
there the pass runs on the training thread.) A separate pass checks that
every floating array is finite before a save is started: a state holding
NaN or Inf is never written.
The checksums guard against damage, not against an adversary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint import args as ocp_args
from orbax.checkpoint import checkpoint_args
from orbax.checkpoint import handlers as ocp_handlers

ITEM_NAME = "integrity"
FILE_NAME = "integrity.json"
FORMAT = 1


def leaf_names(tree: Any, prefix: str) -> list[str]:
  """'prefix/a/b/0' for every leaf, in jax.tree.leaves order."""
  names = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = [prefix]
    for key in path:
      for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
          parts.append(str(getattr(key, attribute)))
          break
    names.append("/".join(parts))
  return names


def state_items(state: Any) -> dict[str, Any]:
  """The checkpoint items of a TrainState, as they are saved."""
  return {"params": state.params,
          "optimizer": {"step": state.step, "opt_state": state.opt_state,
                        "rng": state.rng}}


def layout(items: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
  """{name: (shape, dtype)} of every array (or ShapeDtypeStruct) in `items`."""
  result = {}
  for prefix, tree in items.items():
    leaves = jax.tree.leaves(tree)
    for name, leaf in zip(leaf_names(tree, prefix), leaves):
      result[name] = (tuple(int(n) for n in leaf.shape),
                      np.dtype(leaf.dtype).name)
  return result


def _words(array: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (narrower types widened, 64-bit split)."""
  dtype = np.dtype(array.dtype)
  if dtype == np.bool_:
    return array.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[
      dtype.itemsize]
  words = jax.lax.bitcast_convert_type(array, unsigned)
  return words.astype(jnp.uint32)


def _checksum(array: jax.Array) -> jax.Array:
  """uint32[2]: plain and position-weighted sums of the array's words."""
  words = _words(array)
  # Row-major position from iotas, not a reshape: a reshape of a sharded
  # array can move data between devices; iotas and sums shard as they are.
  position = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):
    position = position + jax.lax.broadcasted_iota(
        jnp.uint32, words.shape, axis) * jnp.uint32(stride % 2**32)
    stride *= words.shape[axis]
  plain = jnp.sum(words, dtype=jnp.uint32)
  weighted = jnp.sum(words * (position * jnp.uint32(2) + jnp.uint32(1)),
                     dtype=jnp.uint32)
  return jnp.stack([plain, weighted])


def _finite(array: jax.Array) -> jax.Array:
  if jnp.issubdtype(array.dtype, jnp.inexact):
    return jnp.all(jnp.isfinite(array))
  return jnp.asarray(True)


@jax.jit
def _checksums(items):
  return jax.tree.map(_checksum, items)


@jax.jit
def _finite_flags(items):
  return jax.tree.map(_finite, items)


def digests(items: Mapping[str, Any]) -> Any:
  """Device-side checksums, a tree shaped like `items`.

  Dispatched, not waited for: on an accelerator the caller goes on while the
  device computes, and whoever needs the values (the commit thread) fetches
  them.
  """
  return _checksums(dict(items))


def nonfinite_arrays(items: Mapping[str, Any]) -> list[str]:
  """Names of floating arrays holding NaN or Inf (one reduction per array)."""
  flags = jax.device_get(_finite_flags(dict(items)))
  bad = []
  for prefix, tree in items.items():
    for name, finite in zip(leaf_names(tree, prefix),
                            jax.tree.leaves(flags[prefix])):
      if not finite:
        bad.append(name)
  return bad


def _hex(digest: Any) -> str:
  plain, weighted = (int(value) for value in np.asarray(digest))
  return f"{plain:08x}{weighted:08x}"


def data_checksum(data: Mapping[str, Any]) -> str:
  """Checksum of the data-position JSON (covered like the arrays)."""
  text = json.dumps(dict(data), sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass
class PendingManifest:
  """What the commit thread turns into integrity.json."""
  items: Mapping[str, Any]  # ShapeDtypeStructs or arrays: names and layout
  device_digests: Any  # digests(items), possibly still computing
  data: Mapping[str, Any]


def manifest_json(pending: PendingManifest) -> dict[str, Any]:
  """Fetches the digests (blocking, off the training thread) into JSON."""
  checksums = jax.device_get(pending.device_digests)
  arrays = {}
  for prefix, tree in pending.items.items():
    names = leaf_names(tree, prefix)
    leaves = jax.tree.leaves(tree)
    for name, leaf, checksum in zip(names, leaves,
                                    jax.tree.leaves(checksums[prefix])):
      arrays[name] = {"shape": [int(n) for n in leaf.shape],
                      "dtype": np.dtype(leaf.dtype).name,
                      "checksum": _hex(checksum)}
  return {"format": FORMAT, "arrays": arrays,
          "data": {"checksum": data_checksum(pending.data)}}


class IntegrityHandler(ocp_handlers.JsonCheckpointHandler):
  """A JSON item whose content is computed in orbax's commit thread.

  Saving takes a `PendingManifest`; the device-side digests are fetched and
  serialised by the background commit, so the training thread never waits
  for them. The step directory is finalised only after this item is written,
  so a step on disk always has its checksums.
  """

  def __init__(self):
    super().__init__(filename=FILE_NAME)

  async def _save_fn(self, x, directory):
    if isinstance(x, PendingManifest):
      x = manifest_json(x)
    await super()._save_fn(x, directory)


@checkpoint_args.register_with_handler(IntegrityHandler, for_save=True)
@dataclasses.dataclass
class IntegritySave(ocp_args.JsonSave):
  """Save args of the integrity item (a PendingManifest)."""


@checkpoint_args.register_with_handler(IntegrityHandler, for_restore=True)
@dataclasses.dataclass
class IntegrityRestore(ocp_args.JsonRestore):
  """Restore args of the integrity item."""


def problems(manifest: Mapping[str, Any], restored: Mapping[str, Any],
             data: Mapping[str, Any]) -> list[str]:
  """What differs between a manifest and the arrays and data read back.

  Empty when every array is present with the recorded shape, dtype and
  checksum, every floating array is finite, and the data position matches.
  """
  if manifest.get("format") != FORMAT:
    return [f"unknown integrity format {manifest.get('format')!r}"]
  found = []
  recorded = manifest.get("arrays") or {}
  checksums = jax.device_get(digests(restored))
  finites = jax.device_get(_finite_flags(dict(restored)))
  seen = set()
  for prefix, tree in restored.items():
    names = leaf_names(tree, prefix)
    leaves = jax.tree.leaves(tree)
    for name, leaf, checksum, finite in zip(
        names, leaves, jax.tree.leaves(checksums[prefix]),
        jax.tree.leaves(finites[prefix])):
      seen.add(name)
      entry = recorded.get(name)
      if entry is None:
        found.append(f"{name}: not in the manifest")
        continue
      shape = [int(n) for n in leaf.shape]
      dtype = np.dtype(leaf.dtype).name
      if entry.get("shape") != shape or entry.get("dtype") != dtype:
        found.append(f"{name}: {dtype}{shape}, manifest says "
                     f"{entry.get('dtype')}{entry.get('shape')}")
      elif not bool(finite):
        found.append(f"{name}: holds NaN or Inf")
      elif entry.get("checksum") != _hex(checksum):
        found.append(f"{name}: checksum {_hex(checksum)}, manifest says "
                     f"{entry.get('checksum')}")
  prefixes = tuple(f"{prefix}/" for prefix in restored)
  missing = sorted(name for name in recorded
                   if name.startswith(prefixes) and name not in seen)
  found += [f"{name}: in the manifest, not restored" for name in missing]
  if data is not None and (manifest.get("data") or {}).get(
      "checksum") != data_checksum(data):
    found.append("data position: checksum differs from the manifest")
  return found
