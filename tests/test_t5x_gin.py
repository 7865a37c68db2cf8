"""gin/t5x/*.gin stay within what real T5X defines.

T5X cannot be installed here, so these files cannot be loaded by T5X in a
test. Instead every file is parsed with gin's own parser and each statement
is checked against names T5X itself defines, listed below with the T5X
source each list was read from (google-research/t5x; function signatures and
dataclass fields for bindings, the run/model gin files for macros). A
binding T5X does not define, a misspelt macro, an include T5X does not ship
or an import T5X would not resolve fails here, naming the file and line.
"""

from __future__ import annotations

import inspect
import pathlib
from typing import Any, Iterator

import gin.config_parser
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
T5X_GIN_DIR = REPO / "gin" / "t5x"
GIN_FILES = sorted(T5X_GIN_DIR.glob("*.gin"))

# --------------------------------------------------------------------------
# What T5X defines. Keys are full Python paths (import path + attribute), as
# gin resolves them after `from t5x import utils` / `import __main__ as ...`.

# The run scripts are imported as `__main__` under an alias, as T5X's run gin
# files do (`import __main__ as train_script`); the alias says which script.
T5X_SCRIPT_ALIASES = {
    "train_script": "t5x.train",  # t5x/configs/runs/finetune.gin, pretrain.gin
    "eval_script": "t5x.eval",  # t5x/configs/runs/eval.gin
    "infer_script": "t5x.infer",  # t5x/configs/runs/infer.gin
}

T5X_CONFIGURABLES: dict[str, frozenset[str]] = {
    # t5x/train.py: keyword arguments of `train(*, ...)`; `relative_steps`
    # from the operative config newer T5X writes (shared/fixtures/t5x_tiny).
    "t5x.train.train": frozenset({
        "model", "train_dataset_cfg", "train_eval_dataset_cfg", "infer_eval_dataset_cfg",
        "checkpoint_cfg", "partitioner", "trainer_cls", "model_dir", "total_steps",
        "eval_steps", "eval_period", "stats_period", "random_seed", "use_hardware_rng",
        "summarize_config_fn", "inference_evaluator_cls", "get_dataset_fn",
        "concurrent_metrics", "actions", "train_eval_get_dataset_fn",
        "run_eval_before_training", "train_state_initializer_cls", "use_gda",
        "use_jax_array", "use_orbax", "verify_matching_vocabs_fn", "gc_period",
        "relative_steps"}),
    # t5x/eval.py: `evaluate(*, ...)`.
    "t5x.eval.evaluate": frozenset({
        "model", "dataset_cfg", "restore_checkpoint_cfg", "partitioner", "output_dir",
        "inference_evaluator_cls", "summarize_config_fn", "fallback_init_rng"}),
    # t5x/infer.py: `infer(*, ...)`.
    "t5x.infer.infer": frozenset({
        "mode", "model", "dataset_cfg", "restore_checkpoint_cfg", "partitioner",
        "output_dir", "checkpoint_period", "shard_id", "num_shards",
        "merge_chunked_results", "write_fn", "checkpoint_ds_iter",
        "train_state_initializer_cls", "fallback_init_rng", "merge_fn",
        "summarize_config_fn", "verify_matching_vocabs_fn", "output_vocab_feature_name",
        "file_extension", "keep_aux_as_numpy", "use_orbax"}),
    # t5x/utils.py: dataclass fields.
    "t5x.utils.DatasetConfig": frozenset({
        "mixture_or_task_name", "task_feature_lengths", "split", "batch_size", "shuffle",
        "seed", "use_cached", "pack", "use_custom_packing_ops", "module",
        "use_memory_cache"}),
    "t5x.utils.CheckpointConfig": frozenset({"save", "restore"}),
    "t5x.utils.SaveCheckpointConfig": frozenset({
        "dtype", "period", "keep", "save_dataset", "checkpointer_cls",
        "state_transformation_fns"}),
    "t5x.utils.RestoreCheckpointConfig": frozenset({
        "path", "mode", "assignment_map", "strict", "fallback_to_scratch", "dtype",
        "restore_dataset", "checkpointer_cls", "state_transformation_fns"}),
    # t5x/utils.py: `create_learning_rate_scheduler(...)`.
    "t5x.utils.create_learning_rate_scheduler": frozenset({
        "factors", "base_learning_rate", "warmup_steps", "decay_factor",
        "steps_per_decay", "steps_per_cycle", "step_offset", "min_learning_rate"}),
    # t5x/partitioning.py: `PjitPartitioner.__init__`, `standard_logical_axis_rules`.
    "t5x.partitioning.PjitPartitioner": frozenset({
        "num_partitions", "model_parallel_submesh", "params_on_devices", "backend",
        "ici_mesh_shape", "dcn_mesh_shape", "logical_axis_rules"}),
    "t5x.partitioning.standard_logical_axis_rules": frozenset({
        "activation_partitioning_dims", "parameter_partitioning_dims", "additional_rules"}),
    # t5x/trainer.py, as bound by t5x/configs/runs/finetune.gin and pretrain.gin.
    "t5x.trainer.Trainer": frozenset({
        "num_microbatches", "learning_rate_fn", "weight_metrics_computer"}),
    # t5x/models.py: `EncoderDecoderModel.__init__`.
    "t5x.models.EncoderDecoderModel": frozenset({
        "module", "input_vocabulary", "output_vocabulary", "optimizer_def", "decode_fn",
        "feature_converter_cls", "label_smoothing", "z_loss", "loss_normalizing_factor",
        "default_decoder_params"}),
    # t5x/decoding.py: keyword arguments of `temperature_sample` the model does
    # not pass itself (inputs, cache, tokens_to_logits, eos_id are its own).
    "t5x.decoding.temperature_sample": frozenset({
        "decode_rng", "num_decodes", "temperature", "topk", "topp", "cache_offset",
        "initial_index", "max_decode_steps", "max_decode_steps_hard_limit",
        "rescale_log_probs", "state_callback_fn", "logit_callback_fn"}),
    "t5x.decoding.beam_search": frozenset(),  # referenced only (the model's default)
    # t5x/adafactor.py, as bound by t5x/examples/t5/t5_1_1/base.gin.
    "t5x.adafactor.Adafactor": frozenset({"decay_rate", "step_offset", "logical_factor_rules"}),
    "t5x.adafactor.standard_logical_factor_rules": frozenset(),
    # t5x/examples/t5/network.py: `T5Config` fields, `Transformer.config`.
    "t5x.examples.t5.network.T5Config": frozenset({
        "vocab_size", "dtype", "emb_dim", "num_heads", "num_encoder_layers",
        "num_decoder_layers", "head_dim", "mlp_dim", "mlp_activations", "dropout_rate",
        "logits_via_embedding", "float32_attention_logits"}),
    "t5x.examples.t5.network.Transformer": frozenset({"config"}),
    # t5x/gin_utils.py, referenced by the run files.
    "t5x.gin_utils.summarize_gin_config": frozenset(),
    # seqio, as bound by T5X's run and model files; checked against the
    # installed seqio below as well.
    "seqio.Evaluator": frozenset({"logger_cls", "num_examples", "use_memory_cache"}),
    "seqio.JSONLogger": frozenset({"write_n_results"}),
    "seqio.PyLoggingLogger": frozenset(),
    "seqio.TensorBoardLogger": frozenset(),
    "seqio.SentencePieceVocabulary": frozenset({"sentencepiece_model_file", "extra_ids"}),
}

# Macros the T5X run and model files define or read.
T5X_MACROS = frozenset({
    # t5x/configs/runs/finetune.gin
    "MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "MIXTURE_OR_TASK_MODULE",
    "TRAIN_STEPS", "INITIAL_CHECKPOINT_PATH", "DROPOUT_RATE", "USE_CACHED_TASKS",
    "BATCH_SIZE", "EVAL_STEPS", "EVAL_PERIOD", "EVALUATOR_USE_MEMORY_CACHE",
    "EVALUATOR_NUM_EXAMPLES", "JSON_WRITE_N_RESULTS", "USE_HARDWARE_RNG", "RANDOM_SEED",
    # t5x/configs/runs/pretrain.gin
    "SHUFFLE_TRAIN_EXAMPLES",
    # t5x/configs/runs/eval.gin, infer.gin
    "CHECKPOINT_PATH", "EVAL_OUTPUT_DIR", "MIXTURE_OR_TASK_SPLIT", "INFER_OUTPUT_DIR",
    # t5x/examples/t5/t5_1_1/base.gin (and the other model files)
    "Z_LOSS", "LABEL_SMOOTHING", "LOSS_NORMALIZING_FACTOR", "VOCABULARY", "OPTIMIZER",
    "MODEL",
    # gin itself
    "gin.REQUIRED",
})

# Scopes T5X's run files use (finetune.gin: train/, train_eval/, infer_eval/).
T5X_SCOPES = frozenset({"", "train", "train_eval", "infer_eval"})

# Gin files T5X ships (google-research/t5x tree).
T5X_GIN_INCLUDES = frozenset(
    [f"t5x/configs/runs/{name}.gin" for name in
     ("finetune", "eval", "infer", "pretrain", "precompile", "export")]
    + [f"t5x/examples/t5/t5_1_1/{size}.gin" for size in
       ("tiny", "small", "base", "large", "xl", "xxl")]
    + [f"t5x/examples/t5/t5_1_0/{size}.gin" for size in
       ("tiny", "small", "base", "large", "3B", "11B")])

# Modules a T5X gin file may import: T5X's own, seqio, gin's switch, and our
# task registry (the one non-T5X import, the point of these files).
T5X_MODULES = frozenset({
    "__gin__.dynamic_registration", "seqio", "t5x.utils", "t5x.partitioning",
    "t5x.trainer", "t5x.models", "t5x.decoding", "t5x.adafactor", "t5x.gin_utils",
    "t5x.examples.t5.network"})
OUR_MODULES = frozenset({"cot_distill_tasks"})

# --------------------------------------------------------------------------
# Parsing.


class _Reference:
  """What the parser delegate makes of `@name` and `%name`."""

  def __init__(self, kind: str, name: str):
    self.kind, self.name = kind, name


class _Delegate(gin.config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference("configurable", scoped_configurable_name)

  def macro(self, macro_name):
    return _Reference("macro", macro_name)


def parse(path: pathlib.Path) -> list[Any]:
  with path.open() as stream:
    return list(gin.config_parser.ConfigParser(stream, _Delegate()))


def references(value: Any) -> Iterator[_Reference]:
  """Every @configurable and %macro inside a (nested) binding value."""
  if isinstance(value, _Reference):
    yield value
  elif isinstance(value, dict):
    for item in (*value.keys(), *value.values()):
      yield from references(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from references(item)


def where(path: pathlib.Path, statement) -> str:
  shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
  return f"{shown}:{statement.location.line_num}"


def resolve(selector: str, aliases: dict[str, str]) -> str | None:
  """`utils.DatasetConfig` -> `t5x.utils.DatasetConfig` via this file's imports."""
  head, _, rest = selector.partition(".")
  if head in aliases and rest:
    return f"{aliases[head]}.{rest}"
  return None


def problems(path: pathlib.Path) -> list[str]:
  """Every statement of one file that T5X would not understand."""
  found = []
  aliases: dict[str, str] = {}
  statements = parse(path)
  for statement in statements:
    if isinstance(statement, gin.config_parser.ImportStatement):
      module = statement.module
      if module == "__main__":
        if statement.alias not in T5X_SCRIPT_ALIASES:
          found.append(f"{where(path, statement)}: __main__ must be imported as one of "
                       f"{sorted(T5X_SCRIPT_ALIASES)}")
          continue
        aliases[statement.alias] = T5X_SCRIPT_ALIASES[statement.alias]
        continue
      if module not in T5X_MODULES | OUR_MODULES:
        found.append(f"{where(path, statement)}: import of {module!r}, which T5X does not ship")
      aliases[statement.bound_name()] = statement.partial_path()
  for statement in statements:
    if isinstance(statement, gin.config_parser.IncludeStatement):
      include = statement.filename
      ours = (REPO / include).is_file() and include.startswith("gin/t5x/")
      if include not in T5X_GIN_INCLUDES and not ours:
        found.append(f"{where(path, statement)}: include {include!r} is neither a T5X gin file "
                     "nor one of gin/t5x/")
    elif isinstance(statement, gin.config_parser.BindingStatement):
      if not statement.arg_name:  # a macro definition: `NAME = value`
        if statement.selector not in T5X_MACROS:
          found.append(f"{where(path, statement)}: macro {statement.selector} is not one T5X defines")
      else:
        if statement.scope not in T5X_SCOPES:
          found.append(f"{where(path, statement)}: scope {statement.scope!r} is not one T5X uses")
        target = resolve(statement.selector, aliases)
        if target is None:
          found.append(f"{where(path, statement)}: {statement.selector} is not imported in this file")
        elif statement.arg_name not in T5X_CONFIGURABLES.get(target, ()):
          found.append(f"{where(path, statement)}: T5X's {target} has no parameter "
                       f"{statement.arg_name!r}")
      for reference in references(statement.value):
        if reference.kind == "macro" and reference.name not in T5X_MACROS:
          found.append(f"{where(path, statement)}: %{reference.name} is not a T5X macro")
        if reference.kind == "configurable":
          scope, _, name = reference.name.rpartition("/")
          target = resolve(name, aliases)
          if scope not in T5X_SCOPES or target not in T5X_CONFIGURABLES:
            found.append(f"{where(path, statement)}: @{reference.name} is not a T5X configurable "
                         "imported in this file")
  return found


# --------------------------------------------------------------------------
# Tests.


def test_there_are_t5x_configs():
  names = {path.name for path in GIN_FILES}
  assert {"cot_distill_tasks.gin", "finetune.gin", "eval.gin", "infer.gin",
          "gsm8k_t5_1_1_xxl_cot.gin", "gsm8k_t5_1_1_xxl_answer_only.gin"} <= names


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda path: path.name)
def test_file_parses_and_uses_only_names_t5x_defines(path):
  assert path.read_text().startswith("# "), f"{path.name}: start with a comment saying what it is for"
  assert problems(path) == []


@pytest.mark.parametrize("bad_line,complaint", [
    ("utils.DatasetConfig.batchsize = 8", "has no parameter 'batchsize'"),
    ("TRAINING_STEPS = 10", "macro TRAINING_STEPS is not one T5X defines"),
    ("include 't5x/configs/runs/finetune_cot.gin'", "neither a T5X gin file"),
    ("import t5x.contrib.calm", "which T5X does not ship"),
    ("partitioning.PjitPartitioner.num_partitions = 2", "not imported in this file"),
    ("eval/utils.DatasetConfig.split = 'test'", "scope 'eval' is not one T5X uses"),
    ("utils.DatasetConfig.seed = %SEED", "%SEED is not a T5X macro"),
    ("utils.CheckpointConfig.save = @utils.SaveConfig()", "@utils.SaveConfig is not a T5X"),
])
def test_checker_catches_what_t5x_would_reject(tmp_path, bad_line, complaint):
  """The checker is only worth something if it fails on real mistakes."""
  path = tmp_path / "bad.gin"
  path.write_text("# bad\nfrom __gin__ import dynamic_registration\nfrom t5x import utils\n"
                  f"{bad_line}\n")
  found = problems(path)
  assert len(found) == 1 and complaint in found[0], found


def test_seqio_names_exist_in_the_installed_seqio():
  """The seqio part of the list is checked against seqio itself."""
  import seqio  # pylint: disable=g-import-not-at-top
  for path, parameters in T5X_CONFIGURABLES.items():
    if not path.startswith("seqio."):
      continue
    accepted = inspect.signature(getattr(seqio, path.removeprefix("seqio."))).parameters
    assert parameters <= set(accepted), (path, parameters - set(accepted))


def test_vocabulary_override_matches_what_our_tasks_use(monkeypatch):
  """T5X rejects a model whose vocabulary differs from the task's."""
  monkeypatch.delenv("COT_DISTILL_SPM_PATH", raising=False)
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  bindings = {(statement.selector, statement.arg_name): statement.value
              for statement in parse(T5X_GIN_DIR / "cot_distill_tasks.gin")
              if isinstance(statement, gin.config_parser.BindingStatement)}
  assert bindings[("seqio.SentencePieceVocabulary", "sentencepiece_model_file")] == \
      vocabularies.DEFAULT_SPM_PATH
  assert bindings[("seqio.SentencePieceVocabulary", "extra_ids")] == vocabularies.DEFAULT_EXTRA_IDS


def _task_names_in_configs() -> set[str]:
  names = set()
  for path in GIN_FILES:
    for statement in parse(path):
      if not isinstance(statement, gin.config_parser.BindingStatement):
        continue
      if (statement.selector, statement.arg_name) in {("MIXTURE_OR_TASK_NAME", ""),
                                                       ("utils.DatasetConfig", "mixture_or_task_name")}:
        names.add(statement.value)
  return names


@pytest.mark.parametrize("task_name", sorted(_task_names_in_configs()))
def test_task_names_are_registered(task_name):
  import seqio  # pylint: disable=g-import-not-at-top
  import cot_distill_tasks  # pylint: disable=g-import-not-at-top,unused-import
  registered = task_name in seqio.TaskRegistry.names() or task_name in seqio.MixtureRegistry.names()
  assert registered, f"{task_name} is not registered by cot_distill_tasks"
