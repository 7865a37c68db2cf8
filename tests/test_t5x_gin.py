"""Every file in gin/t5x parses under real T5X, and our tasks resolve.

Each file is given to T5X's own entry point (`t5x.train`, `t5x.eval` or
`t5x.infer`, through tests.t5x_main's parse-only mode) with T5X's model file
first and exactly the bindings its header says to pass: T5X parses it with
its own search paths and `skip_unknown=False`, resolving T5X's included
files, and finalizes gin, which fails on an unknown configurable or
parameter and on a macro left `%gin.REQUIRED` (as DROPOUT_RATE once was in
eval.gin and infer.gin). Running the files is tests/test_t5x_end_to_end.py.
"""

from __future__ import annotations


import gin.config_parser
import pytest

from t5x_testing import REPO, check, require_t5x, run_t5x

T5X_GIN_DIR = REPO / "gin" / "t5x"
GIN_FILES = sorted(T5X_GIN_DIR.glob("*.gin"))
TINY = "--gin_file=t5x/examples/t5/t5_1_1/tiny.gin"

# file -> (T5X entry point, flags its header says to pass).
PARSE_COMMANDS = {
    "cot_distill_tasks.gin": ("t5x.infer", [
        TINY, "--gin_file=gin/t5x/cot_distill_tasks.gin", "--gin_file=t5x/configs/runs/infer.gin",
        "--gin.DROPOUT_RATE=0.0", "--gin.MIXTURE_OR_TASK_NAME='cot_distill.eval.gsm8k.test'",
        "--gin.TASK_FEATURE_LENGTHS=None", "--gin.CHECKPOINT_PATH='/x'",
        "--gin.INFER_OUTPUT_DIR='/x'"]),
    "finetune.gin": ("t5x.train", [
        TINY, "--gin_file=gin/t5x/finetune.gin",
        "--gin.MIXTURE_OR_TASK_NAME='cot_distill.gsm8k.gold.answer_only'",
        "--gin.INITIAL_CHECKPOINT_PATH='/x'", "--gin.TRAIN_STEPS=1001000",
        "--gin.MODEL_DIR='/x'"]),
    "eval.gin": ("t5x.eval", [
        TINY, "--gin_file=gin/t5x/eval.gin",
        "--gin.MIXTURE_OR_TASK_NAME='cot_distill.eval.gsm8k.test'",
        "--gin.CHECKPOINT_PATH='/x'", "--gin.EVAL_OUTPUT_DIR='/x'"]),
    "infer.gin": ("t5x.infer", [
        TINY, "--gin_file=gin/t5x/infer.gin",
        "--gin.MIXTURE_OR_TASK_NAME='cot_distill.eval.gsm8k.test'",
        "--gin.CHECKPOINT_PATH='/x'", "--gin.INFER_OUTPUT_DIR='/x'"]),
    "gsm8k_t5_1_1_xxl_cot.gin": ("t5x.train", [
        "--gin_file=gin/t5x/gsm8k_t5_1_1_xxl_cot.gin", "--gin.MODEL_DIR='/x'"]),
    "gsm8k_t5_1_1_xxl_answer_only.gin": ("t5x.train", [
        "--gin_file=gin/t5x/gsm8k_t5_1_1_xxl_answer_only.gin", "--gin.MODEL_DIR='/x'"]),
}


def test_every_file_has_a_parse_check():
  assert sorted(PARSE_COMMANDS) == sorted(path.name for path in GIN_FILES)
  for path in GIN_FILES:
    assert path.read_text().startswith("# "), f"{path.name}: start with a comment saying what it is for"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARSE_COMMANDS))
def test_file_parses_under_t5x(name):
  require_t5x()
  module, flags = PARSE_COMMANDS[name]
  result = check(run_t5x([module, *flags], parse_only=True, timeout=180))
  assert "PARSED" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("bad_flag,complaint", [
    ("--gin.utils.DatasetConfig.batchsize=8", "batchsize"),
    ("--gin.DROPOUT_RATE=%gin.REQUIRED", "DROPOUT_RATE"),
])
def test_parse_check_fails_on_what_t5x_rejects(bad_flag, complaint):
  """The parse check is worth something only if T5X's rejection reaches it."""
  require_t5x()
  module, flags = PARSE_COMMANDS["eval.gin"]
  result = run_t5x([module, *flags, bad_flag], parse_only=True, timeout=180)
  assert result.returncode != 0 and "PARSED" not in result.stdout
  assert complaint in result.stderr


def _task_names_in_configs() -> set[str]:
  names = set()
  for path in GIN_FILES:
    with path.open() as stream:
      statements = list(gin.config_parser.ConfigParser(stream, _Delegate()))
    for statement in statements:
      if not isinstance(statement, gin.config_parser.BindingStatement):
        continue
      if (statement.selector, statement.arg_name) in {("MIXTURE_OR_TASK_NAME", ""),
                                                       ("utils.DatasetConfig", "mixture_or_task_name")}:
        names.add(statement.value)
  return names


class _Delegate(gin.config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return scoped_configurable_name

  def macro(self, macro_name):
    return macro_name


@pytest.mark.parametrize("task_name", sorted(_task_names_in_configs()))
def test_task_names_are_registered(task_name):
  import seqio  # pylint: disable=g-import-not-at-top
  import cot_distill_tasks  # pylint: disable=g-import-not-at-top,unused-import
  registered = task_name in seqio.TaskRegistry.names() or task_name in seqio.MixtureRegistry.names()
  assert registered, f"{task_name} is not registered by cot_distill_tasks"


def test_model_vocabulary_is_the_tasks_vocabulary(monkeypatch):
  monkeypatch.delenv("COT_DISTILL_SPM_PATH", raising=False)
  """gin/t5x builds the model's vocabulary with the call our tasks use."""
  import seqio  # pylint: disable=g-import-not-at-top
  import cot_distill_tasks  # pylint: disable=g-import-not-at-top,unused-import
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  text = (T5X_GIN_DIR / "cot_distill_tasks.gin").read_text()
  assert "VOCABULARY = @vocabularies.get_vocabulary()" in text
  task = seqio.get_mixture_or_task("cot_distill.eval.gsm8k.test")
  assert task.output_features["targets"].vocabulary == vocabularies.get_vocabulary()
  assert vocabularies.get_vocabulary().sentencepiece_model_file == vocabularies.DEFAULT_SPM_PATH
