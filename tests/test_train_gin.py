"""Every gin file in the repository parses and binds (no config rots).

Each `gin/**/*.gin` file is checked by the checker of its top folder in
GIN_CHECKERS; a folder without an entry gets `check_trainer_gin_file`, so a
new file or folder is checked, never skipped:

* trainer files (models/, runs/, partitioning/, recipes/, ...) are parsed
  with our modules imported, completed with a model and a run file where
  they are fragments, their %gin.REQUIRED macros filled in, and then every
  argument of `trainer.train` is resolved: each reference is called and each
  macro evaluated, as a real run would do up to the first device use.
* gin/t5x/ files are T5X's: `check_t5x_gin_file` checks their syntax, and
  tests/test_t5x_gin.py parses each under real T5X (installed by
  .ci/install_t5x.sh).

To check a new kind of file differently, add its folder to GIN_CHECKERS.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import gin
import optax
import pytest

from cot_distill.commands import train as train_command
from cot_distill.model.models import EncoderDecoderModel
from cot_distill.train import checkpoints
from cot_distill.train import partitioning
from cot_distill.train import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = REPO / "gin"
ALL_GIN_FILES = sorted(GIN_DIR.rglob("*.gin"))

# Context for fragments: a model file defines MODEL, a run file binds train.
BASE_MODEL_FILE = GIN_DIR / "models" / "t5_1_1_tiny.gin"
BASE_RUN_FILE = GIN_DIR / "runs" / "finetune_cot.gin"
# Values for macros that files leave %gin.REQUIRED (for the command line).
REQUIRED_MACRO_VALUES = {
    "MIXTURE_OR_TASK_NAME": "'cot_distill.coin_flip_gen.gold.cot'",
    "MODEL_DIR": "'/tmp/cot_distill_gin_check'",
    "EVAL_MIXTURE_OR_TASK_NAME": "'cot_distill.eval.coin_flip_gen.test'",
    "INITIAL_CHECKPOINT_PATH": "'/tmp/cot_distill_gin_check_initial'",
}


def _query(selector: str):
  try:
    return gin.query_parameter(selector)
  except ValueError:
    return None


def _is_required(value) -> bool:
  return (isinstance(value, gin.config.ConfigurableReference)
          and repr(value) == "%gin.REQUIRED")


def _parse(files: list[pathlib.Path], bindings: list[str] = ()) -> None:
  gin.clear_config()
  train_command.parse_gin([str(path) for path in files], list(bindings),
                          [str(REPO)])


def _files_with_context(path: pathlib.Path) -> list[pathlib.Path]:
  """The file plus the base model/run files it needs to make a whole run."""
  _parse([path])
  defines_model = _query("%MODEL") is not None
  binds_train = _query("cot_distill.train.trainer.train.model") is not None
  files = [path]
  if not binds_train:
    # A model file goes before the run file; an add-on (partitioning, eval)
    # after it, so that it overrides the run's defaults.
    files = [path, BASE_RUN_FILE] if defines_model else [BASE_RUN_FILE, path]
  if not defines_model:
    files = [BASE_MODEL_FILE] + files
  return list(dict.fromkeys(files))


def check_trainer_gin_file(path: pathlib.Path) -> dict:
  """Parses `path` in context and resolves every argument of train()."""
  files = _files_with_context(path)
  _parse(files)
  bindings = [f"{name} = {value}" for name, value in REQUIRED_MACRO_VALUES.items()
              if _is_required(_query(f"%{name}"))]
  _parse(files, bindings)
  try:
    arguments = gin.get_bindings(trainer.train)
  finally:
    gin.clear_config()
  missing = [name for name, value in arguments.items() if _is_required(value)]
  assert not missing, f"{path}: arguments still %gin.REQUIRED: {missing}"
  return arguments


def check_t5x_gin_file(path: pathlib.Path) -> None:
  """T5X configs: syntax here; tests/test_t5x_gin.py parses them under real T5X."""
  import gin.config_parser  # pylint: disable=import-outside-toplevel
  parser = gin.config_parser.ConfigParser(
      path.read_text(), gin.config.ParserDelegate(skip_unknown=True))
  assert list(parser)  # raises SyntaxError on a malformed file


GIN_CHECKERS: dict[str, Callable[[pathlib.Path], object]] = {
    "t5x": check_t5x_gin_file,
}


def test_the_gin_files_the_tests_rely_on_exist():
  names = {path.relative_to(GIN_DIR).as_posix() for path in ALL_GIN_FILES}
  for name in ("runs/finetune_cot.gin", "runs/finetune_answer_only.gin",
               "runs/periodic_eval.gin", "models/t5_1_1_tiny.gin",
               "models/t5_1_1_small.gin", "partitioning/data_parallel.gin",
               "partitioning/model_parallel.gin", "partitioning/fsdp.gin"):
    assert name in names


@pytest.mark.parametrize(
    "path", ALL_GIN_FILES,
    ids=[path.relative_to(GIN_DIR).as_posix() for path in ALL_GIN_FILES])
def test_gin_file_parses_and_binds(path):
  folder = path.relative_to(GIN_DIR).parts[0]
  result = GIN_CHECKERS.get(folder, check_trainer_gin_file)(path)
  if isinstance(result, dict):
    assert isinstance(result["model"], EncoderDecoderModel)
    assert isinstance(result["partitioner"], partitioning.Partitioner)
    assert isinstance(result["checkpoint"], checkpoints.CheckpointConfig)
    schedule = result["learning_rate"]
    transform = result["optimizer"](
        schedule if callable(schedule) else optax.constant_schedule(schedule))
    assert isinstance(transform, optax.GradientTransformation)
    assert result["train_steps"] > 0 and result["batch_size"] > 0


def test_run_file_settings_reach_train():
  """The macros of finetune_cot.gin arrive in train() as T5X users expect."""
  _parse([BASE_MODEL_FILE, BASE_RUN_FILE, GIN_DIR / "partitioning" / "fsdp.gin"],
         ["MIXTURE_OR_TASK_NAME = 'some.task'", "MODEL_DIR = '/tmp/m'",
          "TRAIN_STEPS = 7", "DROPOUT_RATE = 0.25", "LEARNING_RATE = 0.5"])
  try:
    arguments = gin.get_bindings(trainer.train)
  finally:
    gin.clear_config()
  assert arguments["mixture_or_task_name"] == "some.task"
  assert arguments["model_dir"] == "/tmp/m" and arguments["train_steps"] == 7
  assert arguments["model"].config.dropout_rate == 0.25
  assert arguments["model"].config.emb_dim == 8
  assert float(arguments["learning_rate"](100)) == 0.5
  assert arguments["partitioner"].layout == "fsdp"
  assert arguments["mixture_or_task_module"] == "cot_distill_tasks"


def test_answer_only_run_differs_only_in_target_length():
  answer_only = check_trainer_gin_file(GIN_DIR / "runs" / "finetune_answer_only.gin")
  cot = check_trainer_gin_file(BASE_RUN_FILE)
  assert answer_only["task_feature_lengths"] == {"inputs": 512, "targets": 32}
  assert cot["task_feature_lengths"] == {"inputs": 512, "targets": 256}
  for name in ("batch_size", "train_steps", "pack", "num_microbatches"):
    assert answer_only[name] == cot[name]


@pytest.mark.parametrize("line,error", [
    ("trainer.train.no_such_argument = 1", "no_such_argument"),
    ("trainer.train.batch_size = %UNDEFINED_MACRO", "UNDEFINED_MACRO"),
    ("partitioning.Partitioner.layout = 'pipeline'", "choose one of"),
])
def test_checker_catches_broken_files(tmp_path, line, error):
  path = tmp_path / "broken.gin"
  path.write_text("from __gin__ import dynamic_registration\n"
                  "from cot_distill.train import partitioning\n"
                  "from cot_distill.train import trainer\n" + line + "\n")
  with pytest.raises(Exception, match=error):
    check_trainer_gin_file(path)
  gin.clear_config()
