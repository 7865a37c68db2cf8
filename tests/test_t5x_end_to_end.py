"""Real T5X on our tasks, gin files and checkpoints, both ways (issue 15).

1. The CPU commands of gin/t5x/README.md ("Try it on CPU"), read from the
   README and run as written: t5x.train (tiny model, finetune.gin, a
   cot_distill task) -> t5x.eval (eval.gin, our metrics) -> t5x.infer
   (infer.gin, gold fields in every output line).
2. T5X -> ours: `cot-distill evaluate` on the T5X-trained checkpoint gives
   t5x.infer's greedy predictions, token for token.
3. Ours -> T5X: `cot-distill export --format t5x` of a `cot-distill train`
   checkpoint; t5x.infer on it gives our evaluator's predictions.
The prediction checks run both sides in float32: in bfloat16 the two
implementations round differently and a 4-step random-init model, whose
logits are nearly flat, flips near-ties (gin/t5x/README.md).
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest

from t5x_testing import REPO, check, readme_commands, require_t5x, run_t5x, substitute, t5x_env

pytestmark = pytest.mark.slow
TRAIN_TASK = "cot_distill.coin_flip_gen.gold.cot"
EVAL_TASK = "cot_distill.eval.coin_flip_gen.test"
COMPARED = 32  # examples decoded by both sides
FLOAT32 = ["--gin.network.T5Config.dtype='float32'",
           "--gin.utils.RestoreCheckpointConfig.dtype='float32'"]


@pytest.fixture(scope="module")
def t5x_run(tmp_path_factory):
  """MODEL_DIR after the README's train, eval and infer commands ran."""
  require_t5x()
  model_dir = tmp_path_factory.mktemp("t5x") / "model"
  variables, commands = readme_commands("Try it on CPU")
  assert set(variables) == {"MODEL_DIR"}, variables
  modules = [command.split()[0] for command in commands]
  assert modules == ["t5x.train", "t5x.eval", "t5x.infer"], modules
  for command in commands:
    check(run_t5x(substitute(command, {"MODEL_DIR": str(model_dir)})))
  return model_dir, commands


def _infer_lines(directory) -> list[dict]:
  [path] = glob.glob(f"{directory}/{EVAL_TASK}-predict.jsonl-00000-of-00001")
  with open(path) as file:
    return [json.loads(line) for line in file]


def test_train_writes_t5x_checkpoints_and_our_metrics(t5x_run):
  model_dir, _ = t5x_run
  assert (model_dir / "checkpoint_4" / "state" / "_METADATA").is_file() or \
      (model_dir / "checkpoint_4" / "checkpoint").is_file()
  config = (model_dir / "config.gin").read_text()
  assert "VOCABULARY = @vocabularies.get_vocabulary()" in config
  assert f"MIXTURE_OR_TASK_NAME = '{TRAIN_TASK}'" in config


def test_eval_reports_our_metrics(t5x_run):
  model_dir, _ = t5x_run
  [metrics_path] = glob.glob(f"{model_dir}/eval/inference_eval/{EVAL_TASK}-metrics.jsonl")
  with open(metrics_path) as file:
    metrics = [json.loads(line) for line in file]
  assert metrics[-1]["step"] == 4
  assert {"accuracy", "answer_found_rate", "num_examples"} <= set(metrics[-1])
  assert metrics[-1]["num_examples"] == 8


def test_infer_writes_gold_fields(t5x_run):
  model_dir, _ = t5x_run
  lines = _infer_lines(model_dir / "infer")
  assert len(lines) == 500  # the whole generated test split
  first = lines[0]
  assert set(first["inputs"]) == {"inputs_pretokenized", "targets_pretokenized", "id",
                                  "answer", "answer_type", "choices"}
  assert first["inputs"]["id"] == "coin_flip_gen/test/0"
  assert first["inputs"]["answer"] in ("yes", "no")
  assert isinstance(first["prediction"], str) and first["prediction_tokens"]


def _examples_file(lines: list[dict], path) -> str:
  """Our evaluator's Example records for the first COMPARED T5X inputs."""
  with open(path, "w") as file:
    for line in lines[:COMPARED]:
      fields = line["inputs"]
      dataset, split, _ = fields["id"].split("/")
      file.write(json.dumps({"id": fields["id"], "dataset": dataset, "split": split,
                             "question": fields["inputs_pretokenized"],
                             "answer": fields["answer"],
                             "answer_type": fields["answer_type"]}) + "\n")
  return f"coin={path}"


def _cot_distill(*args: str) -> None:
  result = subprocess.run([sys.executable, "-m", "cot_distill.cli", *args], cwd=REPO,
                          env=t5x_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]


def _our_predictions(checkpoint, examples: str, out) -> dict[str, str]:
  _cot_distill("evaluate", "--checkpoint", str(checkpoint), "--examples", examples,
               "--max-input-length", "128", "--max-decode-length", "16", "--out", str(out))
  with open(out / "coin" / "predictions.jsonl") as file:
    return {row["id"]: row["generated"] for row in map(json.loads, file)}


def _t5x_infer(commands, model_gin: str | None, checkpoint, out) -> dict[str, str]:
  """The README's infer command on another checkpoint (and model file), in float32."""
  argv = substitute(commands[2], {"MODEL_DIR": "unused"})
  argv = [arg for arg in argv
          if not arg.startswith(("--gin.CHECKPOINT_PATH=", "--gin.INFER_OUTPUT_DIR="))]
  if model_gin:
    argv = [f"--gin_file={model_gin}" if arg.endswith("t5_1_1/tiny.gin") else arg
            for arg in argv]
  argv += [f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.INFER_OUTPUT_DIR='{out}'",
           *FLOAT32]
  check(run_t5x(argv))
  return {line["inputs"]["id"]: line["prediction"] for line in _infer_lines(out)}


def _assert_same(ours: dict[str, str], theirs: dict[str, str]) -> None:
  assert len(ours) == COMPARED
  different = {key: (ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]}
  assert not different, different


def test_t5x_checkpoint_in_our_evaluator_gives_t5x_predictions(t5x_run, tmp_path):
  from cot_distill.model.config import get_config  # pylint: disable=g-import-not-at-top
  model_dir, commands = t5x_run
  theirs = _t5x_infer(commands, None, model_dir / "checkpoint_4", tmp_path / "infer")
  # What a T5X user writes beside the checkpoint (gin/t5x/README.md).
  (model_dir / "model_config.json").write_text(json.dumps({
      "t5config": get_config("t5_1_1_tiny", dtype="float32", dropout_rate=0.0).to_dict(),
      "task": TRAIN_TASK}))
  examples = _examples_file(_infer_lines(tmp_path / "infer"), tmp_path / "examples.jsonl")
  ours = _our_predictions(model_dir / "checkpoint_4", examples, tmp_path / "ours")
  _assert_same(ours, theirs)


def test_our_checkpoint_exported_to_t5x_gives_our_predictions(t5x_run, tmp_path):
  _, commands = t5x_run
  run_dir, export_dir = tmp_path / "ours", tmp_path / "export"
  _cot_distill("train", "--gin_file=gin/models/t5_1_1_tiny.gin",
               "--gin_file=gin/runs/finetune_cot.gin",
               f"--gin.MIXTURE_OR_TASK_NAME='{TRAIN_TASK}'", f"--gin.MODEL_DIR='{run_dir}'",
               "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 128}",
               "--gin_bindings=config.get_config.dtype = 'float32'")
  _cot_distill("export", "--format", "t5x", "--checkpoint", str(run_dir),
               "--out", str(export_dir))
  assert "dtype = 'float32'" in (export_dir / "model.gin").read_text()
  theirs = _t5x_infer(commands, str(export_dir / "model.gin"), export_dir / "checkpoint_4",
                      tmp_path / "infer")
  examples = _examples_file(_infer_lines(tmp_path / "infer"), tmp_path / "examples.jsonl")
  ours = _our_predictions(run_dir, examples, tmp_path / "eval")
  _assert_same(ours, theirs)
  # The export reads back in our evaluator too, with the same predictions.
  again = _our_predictions(export_dir / "checkpoint_4", examples, tmp_path / "eval_export")
  _assert_same(again, theirs)


def test_a_real_vocabulary_mismatch_shows_t5xs_own_message(tmp_path, t5x_tiny_dir):
  """gin/t5x shares one vocabulary; a different model vocabulary is T5X's error.

  The model is given the T5X fixture's 256-piece vocabulary while the task
  keeps T5's: T5X's `verify_matching_vocabs` must refuse with its own
  message, offline (no gs:// read in building it).
  """
  require_t5x()
  variables, commands = readme_commands("Try it on CPU")
  train = substitute(commands[0], {"MODEL_DIR": str(tmp_path / "model")})
  other = t5x_tiny_dir / "spm256.model"
  result = run_t5x(train + [
      "--gin.VOCABULARY=@seqio.SentencePieceVocabulary()",
      f"--gin.seqio.SentencePieceVocabulary.sentencepiece_model_file='{other}'"])
  assert result.returncode != 0
  output = result.stdout + result.stderr
  assert "Model and Task vocabularies do not match" in output, output[-4000:]
  message = output.split("Model and Task vocabularies do not match")[-1][:3000]
  assert "spm256.model" in message and "t5_spiece.model" in message, message
