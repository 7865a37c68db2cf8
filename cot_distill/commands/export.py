"""`cot-distill export --format t5x`: a trained student as a T5X checkpoint.

    cot-distill export --format t5x --checkpoint runs/gsm8k_cot --out runs/gsm8k_cot_t5x
    python -m t5x.infer --gin_file=runs/gsm8k_cot_t5x/model.gin \\
      --gin_file=gin/t5x/infer.gin \\
      --gin.MIXTURE_OR_TASK_NAME="'cot_distill.eval.gsm8k.test'" \\
      --gin.CHECKPOINT_PATH="'runs/gsm8k_cot_t5x/checkpoint_<step>'" \\
      --gin.INFER_OUTPUT_DIR="'runs/gsm8k_cot_t5x/infer'"

Writes into OUT (T5X's MODEL_DIR role):
  checkpoint_<step>/   the parameters and step in T5X's checkpoint layout
                       (msgpack + zarr; no optimizer state, which t5x.eval and
                       t5x.infer never restore);
  model.gin            T5X's t5_1_1/base.gin with network.T5Config set to the
                       student's dimensions: pass it to t5x.eval / t5x.infer in
                       place of a T5X model file, before gin/t5x/eval.gin or
                       infer.gin;
  model_config.json    the same T5Config and the vocabulary, so
                       `cot-distill evaluate --checkpoint OUT/checkpoint_<step>`
                       reads the export too;
  sentencepiece.model  the student's vocabulary. gin/t5x's tasks and model use
                       T5's packaged vocabulary; a student trained with another
                       one needs COT_DISTILL_SPM_PATH=OUT/sentencepiece.model
                       when T5X runs (the command prints this when it applies).

Checkpoint: a `cot-distill train` MODEL_DIR (newest step) or one of its
checkpoint_<step> directories.

Layers: T5X's T5 network reads one module per layer (`layers_0` ...), so a
student trained with scanned layers (`scan_layers = True`) is exported
unscanned by default (`--layout unscanned`). `--layout scanned` keeps the
stacked `encoder/layers/...` tree (for cot-distill or a scanned network;
no model.gin is written, since T5X's T5 network cannot read it).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os

from cot_distill import errors

FORMATS = ("t5x",)
LAYOUTS = ("unscanned", "scanned")
MODEL_GIN_FILE = "model.gin"
# Constants in T5X's network (t5x/examples/t5/network.py and layers.py) that
# are fields of our T5Config: a student that changed them has no T5X twin.
T5X_CONSTANTS = {"num_buckets": 32, "max_distance": 128, "layer_norm_epsilon": 1e-6,
                 "param_dtype": "float32"}
# Our T5Config fields that T5X's network.T5Config has (same names).
T5X_FIELDS = ("vocab_size", "dtype", "emb_dim", "num_heads", "num_encoder_layers",
              "num_decoder_layers", "head_dim", "mlp_dim", "mlp_activations",
              "logits_via_embedding", "float32_attention_logits")


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "export", help="write a trained student as a T5X checkpoint (+ model gin)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--format", required=True, choices=FORMATS,
                      help="checkpoint format to write")
  parser.add_argument("--checkpoint", required=True,
                      help="MODEL_DIR of `cot-distill train` or one of its "
                           "checkpoint_<step> directories")
  parser.add_argument("--out", required=True, help="output directory (local)")
  parser.add_argument("--layout", choices=LAYOUTS, default="unscanned",
                      help="layer layout of the written tree: unscanned (T5X's "
                           "layers_N, default) or scanned (stacked layers/)")
  parser.set_defaults(func=run)


def model_gin(config, source: str) -> str:
  """T5X model gin text building `config`'s network (T5X's base.gin + overrides)."""
  lines = [
      f"# T5X model file for the student exported from {source}",
      "# by `cot-distill export --format t5x`: T5X's T5 1.1 base model file with",
      "# the network set to the student's dimensions. Pass it first, in place of",
      "# a T5X model file; DROPOUT_RATE comes from the run file (eval/infer: 0.0).",
      "from __gin__ import dynamic_registration",
      "",
      "from t5x.examples.t5 import network",
      "",
      "include 't5x/examples/t5/t5_1_1/base.gin'",
      "",
      "network.T5Config:",
  ]
  values = config.to_dict()
  for field in T5X_FIELDS:
    value = values[field]
    if isinstance(value, list):
      value = tuple(value)
    lines.append(f"  {field} = {value!r}")
  return "\n".join(lines) + "\n"


def check_t5x_compatible(config) -> None:
  """UserError when the student uses a value T5X's network hard-codes otherwise."""
  different = {field: getattr(config, field) for field, value in T5X_CONSTANTS.items()
               if getattr(config, field) != value}
  if different:
    raise errors.UserError(
        f"cannot export to T5X: the student's {different} differ from the "
        f"constants of T5X's T5 network ({ {k: T5X_CONSTANTS[k] for k in different} }), "
        "so T5X would compute a different model from these weights")


def export_t5x(checkpoint: str, out: str, layout: str = "unscanned") -> dict:
  """Writes the export (see module docstring); returns what was written."""
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  from cot_distill.evaluation import checkpoint_predictor  # pylint: disable=g-import-not-at-top
  from cot_distill.model import scanned  # pylint: disable=g-import-not-at-top
  from cot_distill.model import t5x_checkpoints  # pylint: disable=g-import-not-at-top
  if layout not in LAYOUTS:
    raise errors.UserError(f"export: --layout must be one of {LAYOUTS}, got {layout!r}")
  try:
    description = checkpoint_predictor.describe_checkpoint(checkpoint)
  except FileNotFoundError as error:
    raise errors.UserError(f"export: {error}") from None
  if description.kind != "trainer":
    raise errors.UserError(
        f"export: {checkpoint} is already a T5X checkpoint; T5X reads it as it is "
        "(and `cot-distill evaluate --checkpoint` with a model_config.json beside it)")
  vocabulary = checkpoint_predictor._vocabulary(description, None, None)  # pylint: disable=protected-access
  params, config, info = checkpoint_predictor.restore(description)
  check_t5x_compatible(config)
  # The written tree and its model_config.json agree on the layout.
  config = config.replace(scan_layers=layout == "scanned")
  params = scanned.to_layout(params, config)
  step = info.get("step")
  if step is None:
    step = description.resolved_step or 0
  os.makedirs(out, exist_ok=True)
  path = t5x_checkpoints.write_t5x_checkpoint(params, int(step), out)
  gin_path = None
  if not config.scan_layers:
    gin_path = os.path.join(out, MODEL_GIN_FILE)
    with open(gin_path, "w", encoding="utf-8") as file:
      file.write(model_gin(config, checkpoint))
  model_config = {"t5config": config.to_dict(),
                  "vocabulary": vocabularies.store_in_model_dir(vocabulary, out),
                  "exported_from": {"checkpoint": os.path.abspath(checkpoint),
                                    "step": int(step)}}
  for key in ("task", "task_feature_lengths"):
    if description.model_config.get(key) is not None:
      model_config[key] = description.model_config[key]
  lengths = description.task_feature_lengths
  if lengths:
    model_config["task_feature_lengths"] = lengths
  with open(os.path.join(out, checkpoint_predictor.MODEL_CONFIG_FILE), "w",
            encoding="utf-8") as file:
    json.dump(model_config, file, indent=1)
  spm = vocabulary.sentencepiece_model_file
  packaged = (spm and not vocabularies.is_remote(spm) and os.path.exists(spm)
              and filecmp.cmp(spm, vocabularies.DEFAULT_SPM_PATH, shallow=False))
  return {"checkpoint": path, "model_gin": gin_path, "step": int(step),
          "vocabulary": spm, "packaged_vocabulary": bool(packaged)}


def run(args: argparse.Namespace) -> int:
  written = export_t5x(args.checkpoint, args.out, getattr(args, "layout", "unscanned"))
  print(f"T5X checkpoint: {written['checkpoint']} (step {written['step']})")
  if written["model_gin"]:
    print(f"T5X model gin:  {written['model_gin']}")
  else:
    print("Scanned layers (stacked encoder/layers/...): no T5X model gin, since "
          "T5X's T5 network reads only the unscanned layers_N tree")
  if not written["packaged_vocabulary"]:
    # gin/t5x's tasks and model vocabulary follow COT_DISTILL_SPM_PATH.
    print("The student's vocabulary is not T5's packaged one: run T5X with "
          "COT_DISTILL_SPM_PATH="
          f"{os.path.join(os.path.abspath(args.out), 'sentencepiece.model')}")
  return 0
