"""Read T5X checkpoints (legacy msgpack + zarr, or Orbax OCDBT) into our parameter tree, and write them.

Only the parameters (`target`) are read, never the optimizer state, so an
XXL checkpoint costs its weights and nothing more. Arrays are opened with
TensorStore directly, which reads local paths and `gs://` alike and needs no
devices or shardings matching the machine that wrote the checkpoint.

Layouts (what T5X writes in `checkpoint_<step>/`):
- legacy: a msgpack file `checkpoint` holding {"optimizer": {"target": tree,
  ...}}; large arrays are TensorStore spec dicts pointing at zarr arrays
  `target.<dotted.path>/` beside it, small ones are inline.
- Orbax: `state/` is a PyTree with `_METADATA` listing the keys
  ('target', ...); arrays live in an OCDBT key-value store under their
  dotted names ("target.encoder.layers_0.mlp.wo.kernel").

`write_t5x_checkpoint` writes the legacy layout (what `cot-distill export
--format t5x` makes): parameters and step, no optimizer state. That is all
`t5x.eval` and `t5x.infer` restore (they build their state without an
optimizer), and T5X's own reader and ours both read it.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from cot_distill.model import param_tree


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into our tree; the message names the array."""


def _is_remote(path: str) -> bool:
  return "://" in path


def _join(base: str, *parts: str) -> str:
  return "/".join([base.rstrip("/"), *parts]) if _is_remote(base) else os.path.join(base, *parts)


def _kvstore(path: str) -> dict[str, Any] | str:
  """TensorStore kvstore spec for a local path or URL (gs://bucket/dir/)."""
  if path.startswith("gs://"):
    bucket, _, rest = path[len("gs://"):].partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": rest}
  if _is_remote(path):
    return path
  return {"driver": "file", "path": os.path.abspath(path)}


def _read_bytes(path: str) -> bytes:
  if not _is_remote(path):
    return pathlib.Path(path).read_bytes()
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  kvstore = ts.KvStore.open(_kvstore(path)).result()
  result = kvstore.read(b"").result()
  if result.state != "value":
    raise FileNotFoundError(path)
  return bytes(result.value)


def _exists(path: str) -> bool:
  if not _is_remote(path):
    return os.path.exists(path)
  try:
    _read_bytes(path)
    return True
  except (FileNotFoundError, ValueError, RuntimeError):
    return False


def detect_layout(path: str) -> str:
  """"legacy" or "orbax" for a `checkpoint_<step>` directory."""
  if _exists(_join(path, "checkpoint")):
    return "legacy"
  if _exists(_join(path, "state", "_METADATA")):
    return "orbax"
  raise CheckpointError(
      f"{path}: not a T5X checkpoint directory (no legacy `checkpoint` msgpack file "
      f"and no Orbax `state/_METADATA`); pass the checkpoint_<step> directory")


def _read_zarr(spec: dict[str, Any], name: str) -> np.ndarray:
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  try:
    return np.asarray(ts.open(spec, open=True, read=True).result().read().result())
  except Exception as error:  # tensorstore raises ValueError/RuntimeError variants
    raise CheckpointError(f"cannot read checkpoint array {name!r}: {error}") from error


def _load_legacy(path: str) -> dict[str, np.ndarray]:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  state = serialization.msgpack_restore(_read_bytes(_join(path, "checkpoint")))
  try:
    target = state["optimizer"]["target"]
  except (KeyError, TypeError):
    raise CheckpointError(f"{path}/checkpoint: no optimizer/target tree in the msgpack "
                          f"(keys: {list(state)})") from None
  flat: dict[str, np.ndarray] = {}
  for name, value in param_tree.flatten(target).items():
    if isinstance(value, dict) and "driver" in value:
      # A TensorStore spec whose kvstore path is relative to the checkpoint.
      spec = dict(value)
      # Current T5X nests the path in a kvstore; older versions put it at the top.
      kvstore = spec.get("kvstore")
      relative = kvstore["path"] if isinstance(kvstore, dict) else spec.pop("path", kvstore)
      if not isinstance(relative, str):
        raise CheckpointError(f"{path}/checkpoint: array {name!r} has a TensorStore spec "
                              f"without a path: {value}")
      spec["kvstore"] = _kvstore(relative if _is_remote(relative) or os.path.isabs(relative)
                                 else _join(path, relative))
      value = _read_zarr(spec, name)
    flat[name] = np.asarray(value)
  return flat


def _load_orbax(path: str) -> dict[str, np.ndarray]:
  state_dir = _join(path, "state")
  metadata = json.loads(_read_bytes(_join(state_dir, "_METADATA")))
  flat: dict[str, np.ndarray] = {}
  for entry in metadata["tree_metadata"].values():
    keys = [item["key"] for item in entry["key_metadata"]]
    if keys[0] != "target":
      continue
    name = "/".join(keys[1:])
    if metadata.get("use_ocdbt", True):
      kvstore = {"driver": "ocdbt", "base": _kvstore(state_dir), "path": ".".join(keys)}
    else:
      kvstore = _kvstore(_join(state_dir, ".".join(keys)))
    driver = "zarr3" if metadata.get("use_zarr3") else "zarr"
    flat[name] = _read_zarr({"driver": driver, "kvstore": kvstore}, name)
  if not flat:
    raise CheckpointError(f"{state_dir}/_METADATA lists no ('target', ...) arrays")
  return flat


def read_t5x_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Flat {"encoder/layers_0/attention/query/kernel": array} from a T5X checkpoint."""
  path = str(path)
  layout = detect_layout(path)
  return _load_legacy(path) if layout == "legacy" else _load_orbax(path)


# T5X's legacy checkpoint format version (t5x/checkpoints.py writes 3).
T5X_CHECKPOINT_VERSION = 3
# Largest zarr chunk written, in bytes: big tables are split along their first
# axis so no single chunk must be held compressed in memory at once.
_MAX_CHUNK_BYTES = 64 * 1024 * 1024


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[int]:
  if not shape:
    return []
  row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
  rows = max(1, min(shape[0], _MAX_CHUNK_BYTES // max(row_bytes, 1)))
  return [int(rows), *map(int, shape[1:])]


def _write_zarr(directory: str, relative: str, array: np.ndarray) -> dict[str, Any]:
  """Writes one array as T5X does (zarr v2, gzip 1); returns the msgpack spec."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  metadata = {"chunks": _chunks(array.shape, array.dtype.itemsize),
              "compressor": {"id": "gzip", "level": 1},
              "shape": list(array.shape)}
  spec = {"driver": "zarr", "dtype": array.dtype.name,
          "kvstore": {"driver": "file", "path": relative}, "metadata": metadata}
  written = dict(spec, kvstore=_kvstore(_join(directory, relative)))
  store = ts.open(written, create=True, delete_existing=True).result()
  store.write(array).result()
  return spec


def write_t5x_checkpoint(params: Any, step: int, model_dir: str | os.PathLike) -> str:
  """Writes `model_dir/checkpoint_<step>` in T5X's legacy layout; returns its path.

  Args:
    params: our parameter tree (T5X's names: encoder/layers_0/...), any
      arrays; written as float32, which T5X restores into any dtype. A
      scanned tree (stacked encoder/layers/...) is written as it is; T5X's
      T5 network reads only the unscanned one (`scanned.unscan_params`,
      which `cot-distill export` applies by default). Our readers take both.
    step: the training step recorded in the checkpoint (and its name).
    model_dir: a local directory, created if needed (T5X's MODEL_DIR role).

  The directory is written under a temporary name and renamed into place, so
  a reader never finds half a checkpoint.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  model_dir = os.fspath(model_dir)
  if _is_remote(model_dir):
    raise CheckpointError(f"{model_dir}: writing T5X checkpoints needs a local "
                          "directory (copy it to the bucket afterwards)")
  final = os.path.join(model_dir, f"checkpoint_{int(step)}")
  temporary = f"{final}.tmp-{os.getpid()}"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(temporary)
  target = {}
  for name, value in param_tree.flatten(params).items():
    array = np.asarray(value, dtype=np.float32)
    relative = "target." + name.replace("/", ".") + "/"
    target[name] = _write_zarr(temporary, relative, array)
  state = {"version": T5X_CHECKPOINT_VERSION,
           "optimizer": {"target": param_tree.unflatten(target),
                         "state": {"step": np.asarray(int(step), dtype=np.int32)}}}
  with open(os.path.join(temporary, "checkpoint"), "wb") as file:
    file.write(serialization.msgpack_serialize(state))
  if os.path.exists(final):
    shutil.rmtree(final)
  os.rename(temporary, final)
  return final
