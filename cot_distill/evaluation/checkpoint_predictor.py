"""A `Predictor` backed by a trained checkpoint: tokenise, decode, detokenise.

Checkpoints it reads (decided by files, see `describe_checkpoint`):
* a training run of `cot-distill train` (MODEL_DIR with model_config.json and
  orbax checkpoints), or one of its step directories: parameters come from
  `cot_distill.train.checkpoints.restore_params`, the model and vocabulary
  from model_config.json, so evaluation tokenises exactly as training did;
* a T5X checkpoint_<step> directory (legacy or Orbax), with a
  model_config.json beside it or one level up giving the T5Config (our
  format, or the T5X fixture's {"t5config", "vocabulary"} format).

Input lengths: inputs are tokenised, truncated to `max_input_length` (the
training task's input length unless overridden) keeping the final EOS, and
padded to a power-of-two bucket so a whole benchmark compiles a handful of
shapes, not one per batch. The batch dimension is always padded to the full
batch size for the same reason.

Devices: parameters are restored straight onto a mesh with the training
partitioning (`choose_partitioner`: the evaluate settings, else the layout
the run recorded in model_config.json, else data parallel over every
device) and decoded there by `train.sharded_decode.decode`, the trainer's
own decode path; no array is ever gathered onto one device, so a student
evaluates on the slice that trained it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
from typing import Any, Sequence

from cot_distill.errors import ConfigurationError, UserError
from cot_distill.evaluation.predictions import Generation

MODEL_CONFIG_FILE = "model_config.json"
DEFAULT_MAX_INPUT_LENGTH = 512
DEFAULT_MAX_DECODE_LENGTH = 256
_STEP_DIRECTORY = re.compile(r"^(?:checkpoint_)?(\d+)$")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How outputs are generated. `num_samples` > 1 needs method "sample".

  "beam" keeps `beam_size` beams and returns the best one by T5X's
  length-penalised score (GNMT penalty `alpha`).
  """

  method: str = "greedy"
  num_samples: int = 1
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  max_input_length: int | None = None
  max_decode_length: int | None = None
  beam_size: int = 4
  alpha: float = 0.6

  def __post_init__(self):
    if self.method not in ("greedy", "sample", "beam"):
      raise ValueError("decode method must be greedy, sample or beam, got "
                       f"{self.method!r}")
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if self.method in ("greedy", "beam") and self.num_samples != 1:
      raise ValueError(f"{self.method} decoding gives one output per question; "
                       "use --decode sample for --num-samples > 1")
    if self.beam_size < 1:
      raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")

  def to_dict(self) -> dict[str, Any]:
    values = dataclasses.asdict(self)
    if self.method != "beam":
      # Not used: left out so that greedy and sampled evaluations keep the
      # fingerprints (and resume) of runs made before beam search existed.
      del values["beam_size"], values["alpha"]
    return values


@dataclasses.dataclass(frozen=True)
class CheckpointDescription:
  """What a checkpoint is, read from small JSON files only (no arrays)."""

  path: str
  kind: str  # "trainer" or "t5x"
  model_dir: str | None
  step: int | None
  model_config: dict[str, Any]
  model_config_path: str | None

  @property
  def resolved_step(self) -> int | None:
    """The step that will be restored: the named one, else the newest
    checkpoint_<step> directory (so a fingerprint changes when training
    writes a newer checkpoint into the same MODEL_DIR)."""
    if self.step is not None or self.model_dir is None:
      return self.step
    steps = [int(match.group(1)) for match in
             map(_STEP_DIRECTORY.match, _list_directory(self.model_dir))
             if match and match.group(0).startswith("checkpoint_")]
    return max(steps) if steps else None

  @property
  def training_task(self) -> str | None:
    return self.model_config.get("task")

  @property
  def task_feature_lengths(self) -> dict[str, int]:
    lengths = self.model_config.get("task_feature_lengths") or {}
    if not lengths:
      training = self.model_config.get("training") or {}
      lengths = training.get("task_feature_lengths") or {}
    return dict(lengths)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# Checkpoints may live in a bucket (gs://...): remote paths go through
# tf.io.gfile, local ones through os (so describing a local checkpoint
# never imports TensorFlow).


def _is_remote(path: str) -> bool:
  return "://" in path


def _join(path: str, *parts: str) -> str:
  if _is_remote(path):
    return "/".join([path.rstrip("/"), *parts])
  return os.path.join(path, *parts)


def _parent(path: str) -> str:
  if _is_remote(path):
    return path.rstrip("/").rsplit("/", 1)[0]
  return os.path.dirname(os.path.abspath(path))


def _name(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[-1] if _is_remote(path) else os.path.basename(
      os.path.abspath(path))


def _exists(path: str, *, directory: bool | None = None) -> bool:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not tf.io.gfile.exists(path):
      return False
    return directory is None or tf.io.gfile.isdir(path) == directory
  if directory is None:
    return os.path.exists(path)
  return os.path.isdir(path) if directory else os.path.isfile(path)


def _read_text(path: str) -> str:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "r") as handle:
      return handle.read()
  with open(path, encoding="utf-8") as handle:
    return handle.read()


def _list_directory(path: str) -> list[str]:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return [name.rstrip("/") for name in tf.io.gfile.listdir(path)]
  return os.listdir(path)


def canonical_path(path: str | os.PathLike) -> str:
  """Absolute local path, or the remote URL as given."""
  path = os.fspath(path)
  return path if _is_remote(path) else str(pathlib.Path(path).resolve())


def _find_model_config(path: str) -> str | None:
  directory = path
  for _ in range(3):
    candidate = _join(directory, MODEL_CONFIG_FILE)
    if _exists(candidate, directory=False):
      return candidate
    directory = _parent(directory)
  return None


def describe_checkpoint(checkpoint: str | os.PathLike) -> CheckpointDescription:
  """Identify a checkpoint directory and read its model_config.json."""
  path = os.fspath(checkpoint)
  if not _exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  config_path = _find_model_config(path)
  model_config: dict[str, Any] = {}
  if config_path is not None:
    try:
      model_config = json.loads(_read_text(config_path))
    except json.JSONDecodeError as error:
      raise ValueError(f"{config_path}: not valid JSON ({error})") from error
  step_match = _STEP_DIRECTORY.match(_name(path))
  step = int(step_match.group(1)) if step_match else None
  is_t5x = (_exists(_join(path, "checkpoint"), directory=False)
            or _exists(_join(path, "state", "_METADATA"), directory=False))
  if is_t5x and "model" not in model_config:
    kind, model_dir = "t5x", None
  else:
    if config_path is None:
      raise FileNotFoundError(
          f"{path}: no {MODEL_CONFIG_FILE} here or in the two directories above; "
          "pass a `cot-distill train` MODEL_DIR (or one of its step directories) "
          "or a T5X checkpoint_<step> directory with a model_config.json beside it")
    kind, model_dir = "trainer", _parent(config_path)
  return CheckpointDescription(
      path=path, kind=kind, model_dir=model_dir, step=step,
      model_config=model_config, model_config_path=config_path)


class CheckpointUnavailableError(UserError, FileNotFoundError):
  """The checkpoint a user named is missing or cannot be read."""


def check_checkpoint(checkpoint: str | os.PathLike) -> CheckpointDescription:
  """Fails early, before any output exists, if `checkpoint` cannot be used.

  Checks what can be checked without reading arrays: the path exists, it is
  a `cot-distill train` MODEL_DIR (or step) or a T5X checkpoint, its
  model_config.json parses, and a MODEL_DIR holds at least one step (the
  named step, when a step directory is given). A damaged array is still
  found at restore time, by the checksums (`restore_params`).
  """
  path = os.fspath(checkpoint)
  parent = _parent(path)
  if (not _exists(path) and _STEP_DIRECTORY.match(_name(path))
      and _exists(_join(parent, MODEL_CONFIG_FILE), directory=False)):
    steps = sorted(int(match.group(1)) for match in
                   map(_STEP_DIRECTORY.match, _list_directory(parent))
                   if match and match.group(0).startswith("checkpoint_"))
    raise CheckpointUnavailableError(
        f"--checkpoint {path}: {parent} has no step "
        f"{_STEP_DIRECTORY.match(_name(path)).group(1)} (its steps: "
        f"{', '.join(map(str, steps)) or 'none yet'})")
  if not _exists(path):
    raise CheckpointUnavailableError(
        f"--checkpoint {path}: no such file or directory. Give the MODEL_DIR "
        "of `cot-distill train`, one of its checkpoint_<step> directories, or "
        "a T5X checkpoint_<step> directory.")
  try:
    description = describe_checkpoint(path)
  except (OSError, ValueError) as error:
    raise CheckpointUnavailableError(f"--checkpoint {path}: {error}") from None
  if description.kind == "trainer":
    if description.resolved_step is None:
      raise CheckpointUnavailableError(
          f"--checkpoint {path}: {description.model_dir} has a "
          f"{MODEL_CONFIG_FILE} but no checkpoint_<step> directory yet (has "
          "its training saved a step?)")
    if "model" not in description.model_config:
      raise CheckpointUnavailableError(
          f"--checkpoint {path}: {description.model_config_path} has no "
          "'model' entry (T5Config fields), so the network cannot be built")
    if description.step is not None and not _exists(
        _join(description.model_dir, f"checkpoint_{description.step}"),
        directory=True):
      raise CheckpointUnavailableError(
          f"--checkpoint {path}: step {description.step} is not a checkpoint "
          f"directory of {description.model_dir}")
  return description


def _vocabulary(description: CheckpointDescription, spm_path: str | None,
                extra_ids: int | None):
  """explicit > model_config.json (relative to its directory) > package default."""
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  directory = (_parent(description.model_config_path)
               if description.model_config_path else None)
  return vocabularies.from_description(
      description.model_config.get("vocabulary"), directory,
      spm_path=spm_path, extra_ids=extra_ids)


def _t5_config_for(description: CheckpointDescription):
  from cot_distill.model.config import T5Config  # pylint: disable=g-import-not-at-top
  config = description.model_config
  values = config.get("model") or config.get("t5config")
  if not values:
    raise ValueError(
        f"{description.model_config_path or description.path}: no 'model' "
        "(T5Config fields) in model_config.json, so the network cannot be built")
  return T5Config.from_dict(values)


def restore(description: CheckpointDescription, shardings: Any | None = None):
  """(params, T5Config, info) for a described checkpoint.

  With `shardings` (a tree of jax Shardings, `sharded_decode.param_shardings`)
  the parameters are laid out on the mesh: orbax reads each host's shards of
  a trainer checkpoint directly; a T5X import is read on the host, then
  placed. Without, whole arrays on one device (export).
  """
  if description.kind == "t5x":
    from cot_distill.model import param_tree  # pylint: disable=g-import-not-at-top
    from cot_distill.model import t5x_checkpoints  # pylint: disable=g-import-not-at-top
    config = _t5_config_for(description)
    flat = t5x_checkpoints.read_t5x_params(description.path)
    params = param_tree.check_and_unflatten(flat, config, source=description.path)
    if shardings is not None:
      from cot_distill.train import sharded_decode  # pylint: disable=g-import-not-at-top
      params = sharded_decode.place_params(params, shardings)
    return params, config, {"step": description.step, "format": "t5x"}
  from cot_distill.train import checkpoints  # pylint: disable=g-import-not-at-top
  target = description.model_dir if description.step is None else description.path
  params, config, info = checkpoints.restore_params(target, shardings=shardings)
  return params, config, dict(info or {})


def choose_partitioner(description: CheckpointDescription | None, *,
                       layout: str | None = None,
                       num_partitions: int | None = None,
                       num_devices: int | None = None,
                       devices: Sequence[Any] | None = None):
  """The mesh and rules to restore and decode on.

  The mesh spans `devices` (default: every device of every host; with
  `num_devices`, the first N of them, on one host only: a small student on
  part of a machine, or one device to reproduce a single-device decode
  bit for bit in bfloat16, where a sharded product may round differently).

  Precedence: `layout` / `num_partitions` as given (gin `evaluate.layout`,
  `--layout`, ...; a size that does not divide the devices is an error);
  else the run's own, from the "partitioning" entry the trainer writes into
  model_config.json; else data parallel over all devices. A recorded
  num_partitions that the devices here do not divide (a run trained on a
  larger slice) falls back to the largest size that divides both, with a
  warning: the same layout, fewer ways split.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from cot_distill.train import partitioning  # pylint: disable=g-import-not-at-top
  devices = tuple(jax.devices() if devices is None else devices)
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices) or (
        num_devices < len(devices) and jax.process_count() > 1):
      raise ConfigurationError(
          f"evaluate: num_devices={num_devices} must be between 1 and the "
          f"{len(devices)} devices here (all of them on several hosts)")
    devices = devices[:num_devices]
  recorded = dict((description.model_config if description else {})
                  .get("partitioning") or {})
  recorded_layout = recorded.get("layout")
  recorded_partitions = int(recorded.get("num_partitions") or 1)
  if layout is None and num_partitions is None and recorded_layout:
    layout, wanted, source = (recorded_layout, recorded_partitions,
                              "as trained (model_config.json)")
  elif layout is None and num_partitions is None:
    layout, wanted, source = "data_parallel", 1, "default"
  else:
    if layout is None:
      layout = (recorded_layout if recorded_layout not in (None, "data_parallel")
                else "model_parallel" if (num_partitions or 1) > 1
                else "data_parallel")
    if num_partitions is not None:
      if num_partitions < 1 or len(devices) % num_partitions:
        raise ConfigurationError(
            f"evaluate: num_partitions={num_partitions} must divide the "
            f"number of devices ({len(devices)})")
      wanted, source = num_partitions, "as given"
    else:
      wanted = recorded_partitions if layout == recorded_layout else 1
      source = "as given"
  partitions = wanted
  fitted = math.gcd(partitions, len(devices))
  if fitted != partitions:
    logging.warning(
        "the run was trained with layout %s and num_partitions=%d on %s "
        "devices; %d devices here are not divisible by %d, so decoding "
        "splits the model %d ways instead", layout, partitions,
        recorded.get("num_devices", "?"), len(devices), partitions, fitted)
    source += f", num_partitions {partitions} -> {fitted} to fit {len(devices)} devices"
  partitioner = partitioning.Partitioner(layout=layout, num_partitions=fitted,
                                         devices=devices)
  logging.info("decoding on %d device(s): %d data x %d model, layout %s (%s)",
               len(devices), len(devices) // fitted, fitted, layout, source)
  return partitioner


def _bucket(length: int, limit: int) -> int:
  """Smallest power of two >= length (at least 8), capped at `limit`."""
  size = 8
  while size < length:
    size *= 2
  return min(size, limit)


class CheckpointPredictor:
  """Generates text with the trainer's sharded decode path.

  Construction places the parameters on the partitioner's mesh (a no-op for
  parameters restored there); `__call__` decodes one batch on it.
  """

  def __init__(self, params: Any, config: Any, vocabulary: Any, *,
               decode: DecodeSettings, batch_size: int,
               max_input_length: int, max_decode_length: int,
               partitioner: Any | None = None):
    from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
    from cot_distill.train import partitioning  # pylint: disable=g-import-not-at-top
    from cot_distill.train import sharded_decode  # pylint: disable=g-import-not-at-top
    if batch_size < 1:
      raise ConfigurationError(f"evaluate: batch size must be >= 1, got {batch_size}")
    self.partitioner = partitioner or partitioning.Partitioner()
    self.model = EncoderDecoderModel(config)
    self.config = config
    self.params = sharded_decode.place_params(
        params, sharded_decode.param_shardings(self.model, self.partitioner))
    self.vocabulary = vocabulary
    self.decode = decode
    self.num_samples = decode.num_samples
    self.batch_size = batch_size
    self.max_input_length = max_input_length
    self.max_decode_length = max_decode_length
    self.eos_id = vocabulary.eos_id
    self.truncated_inputs = 0
    rows = sharded_decode.round_up_rows(batch_size, self.partitioner)
    if rows != batch_size:
      # Decodes are unchanged (see sharded_decode); only the time is wasted.
      logging.warning(
          "batch size %d is not a multiple of the %d data-parallel devices: "
          "each batch is padded to %d rows (pass a multiple of %d to use "
          "them all)", batch_size, self.partitioner.data_parallel_size, rows,
          self.partitioner.data_parallel_size)

  @classmethod
  def from_checkpoint(cls, checkpoint: str | os.PathLike, *,
                      decode: DecodeSettings, batch_size: int,
                      spm_path: str | None = None,
                      extra_ids: int | None = None,
                      layout: str | None = None,
                      num_partitions: int | None = None,
                      num_devices: int | None = None,
                      partitioner: Any | None = None) -> "CheckpointPredictor":
    """Restores `checkpoint` onto a mesh (see `choose_partitioner`; an
    explicit `partitioner` wins over layout / num_partitions / num_devices)."""
    from cot_distill.model.models import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
    from cot_distill.train import sharded_decode  # pylint: disable=g-import-not-at-top
    description = describe_checkpoint(checkpoint)
    vocabulary = _vocabulary(description, spm_path, extra_ids)
    partitioner = partitioner or choose_partitioner(
        description, layout=layout, num_partitions=num_partitions,
        num_devices=num_devices)
    shardings = sharded_decode.param_shardings(
        EncoderDecoderModel(_t5_config_for(description)), partitioner)
    params, config, info = restore(description, shardings)
    lengths = description.task_feature_lengths
    max_input = (decode.max_input_length or lengths.get("inputs")
                 or DEFAULT_MAX_INPUT_LENGTH)
    max_decode = (decode.max_decode_length or lengths.get("targets")
                  or DEFAULT_MAX_DECODE_LENGTH)
    logging.info("restored %s (step %s): %s; vocabulary %s; lengths %d/%d",
                 checkpoint, info.get("step", description.step), config,
                 vocabulary.sentencepiece_model_file, max_input, max_decode)
    return cls(params, config, vocabulary, decode=decode,
               batch_size=batch_size, max_input_length=int(max_input),
               max_decode_length=int(max_decode), partitioner=partitioner)

  def encode(self, texts: Sequence[str]):
    """Token ids [batch_size, bucket] with EOS, right-padded with 0."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    rows = []
    for text in texts:
      ids = list(self.vocabulary.encode(text))
      if len(ids) > self.max_input_length - 1:
        # Same rule as seqio's append_eos_after_trim: cut, then add EOS.
        ids = ids[:self.max_input_length - 1]
        self.truncated_inputs += 1
      rows.append(ids + [self.eos_id])
    width = _bucket(max(len(r) for r in rows), self.max_input_length)
    tokens = np.zeros((self.batch_size, width), dtype=np.int32)
    for index, row in enumerate(rows):
      tokens[index, :len(row)] = row
    return tokens

  def _text(self, ids) -> Generation:
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    # Padding (0) after a row that hit the length limit is not output.
    while ids and ids[-1] == 0:
      ids.pop()
    return Generation(self.vocabulary.decode(ids), num_tokens=len(ids))

  def __call__(self, inputs: Sequence[str], *,
               batch_index: int) -> list[list[Generation]]:
    import jax  # pylint: disable=g-import-not-at-top
    from cot_distill.train import sharded_decode  # pylint: disable=g-import-not-at-top
    if len(inputs) > self.batch_size:
      raise ValueError(f"{len(inputs)} inputs exceed batch size {self.batch_size}")
    tokens = self.encode(inputs)
    settings = {}
    if self.decode.method == "sample":
      settings = dict(
          temperature=self.decode.temperature, top_k=self.decode.top_k,
          top_p=self.decode.top_p, rng=jax.random.fold_in(
              jax.random.PRNGKey(self.decode.seed), batch_index))
    elif self.decode.method == "beam":
      settings = dict(beam_size=self.decode.beam_size, alpha=self.decode.alpha)
    output, _ = sharded_decode.decode(
        self.model, self.params, self.partitioner, tokens,
        decode_method=self.decode.method, num_decodes=self.num_samples,
        max_decode_length=self.max_decode_length, **settings)
    return [[self._text(output[row, sample]) for sample in range(output.shape[1])]
            for row in range(len(inputs))]
