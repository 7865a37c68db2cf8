"""The end-to-end demo: the whole method, offline, on CPU, in minutes.

Every stage is the code the full-scale path runs; only the sizes differ:

  1. `teacher serve` (a synthetic stand-in for an LLM) on a free loopback
     port, with injected reasoning errors so the filter has work (wrong
     answers, and right answers after a wrong step);
  2. coin-flip and last-letter data from the seeded generators: train, an
     in-distribution test split and a longer out-of-distribution split;
  3. hinted few-shot annotation of the train split through the real
     OpenAI-compatible client, filtered by the shared answer judge and the
     rationale verifier;
  4. two students trained from scratch by the real trainer on SeqIO tasks:
     answer-only (gold answers) and chain-of-thought (filtered teacher CoTs);
  5. both evaluated in and out of distribution by the real evaluator;
  6. a comparison table and a report with plots.

Stages are resumable: rerunning the same command reuses finished annotation
runs, checkpoints and predictions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Any, Mapping, Sequence

from cot_distill.data import symbolic
from cot_distill.data.example import Example

TASKS = ("coin_flip", "last_letters")
_GENERATORS = {
    "coin_flip": symbolic.generate_coin_flip,
    "last_letters": symbolic.generate_last_letters,
}
_DATASET_NAMES = {
    "coin_flip": symbolic.COIN_FLIP_DATASET,
    "last_letters": symbolic.LAST_LETTERS_DATASET,
}
FORMATS = ("answer_only", "cot")


@dataclasses.dataclass(frozen=True)
class DemoSize:
  """How big each stage is. `default` is the README's demo (about 10 minutes
  on 2 cores); `smoke` is the reduced size the slow test runs."""

  train_examples: int  # per task, before filtering
  test_examples: int  # per task and evaluation split
  steps_in_distribution: tuple[int, ...]  # people / words per question in train + test
  ood_steps: int  # people / words in the out-of-distribution split
  train_steps: int  # optimizer steps per student
  batch_size: int  # packed rows per step
  emb_dim: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  vocab_size: int
  eval_batch_size: int


SIZES = {
    "default": DemoSize(train_examples=1500, test_examples=200,
                        steps_in_distribution=(2, 3, 4), ood_steps=6,
                        train_steps=1600, batch_size=16, emb_dim=128,
                        num_layers=2, num_heads=4, mlp_dim=256,
                        vocab_size=640, eval_batch_size=100),
    "smoke": DemoSize(train_examples=120, test_examples=16,
                      steps_in_distribution=(2,), ood_steps=3,
                      train_steps=30, batch_size=8, emb_dim=32,
                      num_layers=1, num_heads=2, mlp_dim=64,
                      vocab_size=400, eval_batch_size=16),
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  out_dir: str
  size: str = "default"
  tasks: tuple[str, ...] = TASKS
  teacher_error_rate: float = 0.2
  # Right final answer after a wrong step (only the rationale verifier
  # catches these; the demo reports what each filter keeps).
  teacher_step_error_rate: float = 0.1
  teacher_latency_ms: float = 20.0
  seed: int = 0
  # Token lengths under the demo vocabulary (about 17 tokens per person in a
  # coin-flip question). Training packs to the first three: 4-person
  # questions and their teacher CoTs fit, and a short answer-only target
  # keeps that student's decoder cheap. Evaluation reads the longer
  # out-of-distribution questions and leaves room for their longer chains.
  input_length: int = 80
  cot_target_length: int = 112
  answer_target_length: int = 8
  eval_input_length: int = 128
  eval_cot_decode_length: int = 192

  @property
  def sizes(self) -> DemoSize:
    return SIZES[self.size]


@dataclasses.dataclass(frozen=True)
class DemoResult:
  out_dir: str
  table: str
  results: Mapping[str, Mapping[str, Mapping[str, Any]]]  # format -> task -> summary
  annotation: Mapping[str, Mapping[str, Any]]  # task -> manifest counts
  report_path: str
  seconds: float
  # task -> right-answer-wrong-step chains injected, and how many the answer
  # filter alone and the answer filter + verifier keep.
  step_errors: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------
# Stage 2: data.


def _write_examples(path: pathlib.Path, examples: Sequence[Example]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    for example in examples:
      f.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def _mixed_lengths(task: str, n: int, steps: Sequence[int], seed: int,
                   split: str, exclude: Sequence[Example] = ()) -> list[Example]:
  """`n` examples spread evenly over several lengths, ids renumbered in order.

  Training on mixed lengths teaches the student to take as many steps as the
  question has people or words, instead of a fixed count.
  """
  generate = _GENERATORS[task]
  examples: list[Example] = []
  for i, length in enumerate(steps):
    count = n // len(steps) + (1 if i < n % len(steps) else 0)
    examples += generate(count, length, seed, split, exclude=exclude)
  return [dataclasses.replace(e, id=f"{e.dataset}/{split}/{index}")
          for index, e in enumerate(examples)]


def generate_data(config: DemoConfig) -> dict[str, dict[str, pathlib.Path]]:
  """Writes train / test / ood JSONL files per task; returns their paths."""
  sizes = config.sizes
  paths: dict[str, dict[str, pathlib.Path]] = {}
  for task in config.tasks:
    train = _mixed_lengths(task, sizes.train_examples,
                           sizes.steps_in_distribution, config.seed, "train")
    test = _mixed_lengths(task, sizes.test_examples,
                          sizes.steps_in_distribution, config.seed, "test",
                          exclude=train)
    ood = _mixed_lengths(task, sizes.test_examples, (sizes.ood_steps,),
                         config.seed, "ood")
    paths[task] = {}
    for split, examples in (("train", train), ("test", test), ("ood", ood)):
      path = pathlib.Path(config.out_dir) / "data" / f"{task}_{split}.jsonl"
      _write_examples(path, examples)
      paths[task][split] = path
  return paths


# ----------------------------------------------------------------------------
# Stage 1 + 3: teacher and annotation.


def annotate(config: DemoConfig, data: Mapping[str, Mapping[str, pathlib.Path]]
             ) -> dict[str, pathlib.Path]:
  """Annotates each task's train split through a local teacher server."""
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import server  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(config.out_dir)
  run_dirs = {task: out / "annotations" / task for task in config.tasks}
  with server.start_local_teacher(
      error_rate=config.teacher_error_rate,
      step_error_rate=config.teacher_step_error_rate,
      latency_ms=config.teacher_latency_ms, seed=config.seed,
      in_process=False) as teacher:
    logging.info("local teacher listening at %s", teacher.url)
    for task in config.tasks:
      annotation = runner.AnnotationConfig(
          dataset=_DATASET_NAMES[task], split="train", teacher_url=teacher.url,
          model="synthetic-teacher", prompt_mode="hinted", style="completion",
          samples=1, temperature=0.7, max_tokens=256, seed=config.seed,
          examples_path=str(data[task]["train"]), verify="filter")
      options = runner.ExecutionOptions(concurrency=32,
                                        cache_dir=str(out / "teacher_cache"))
      runner.annotate(annotation, run_dirs[task], options)
  return run_dirs


def step_error_survival(config: DemoConfig, data: Mapping[str, Mapping[str, pathlib.Path]],
                        run_dirs: Mapping[str, pathlib.Path]) -> dict[str, dict[str, int]]:
  """Per task: right-answer-wrong-step chains the teacher injected, and how
  many of them the answer filter alone and answer filter + verifier keep.

  The local teacher's replies are a pure function of its settings and the
  request (`TeacherServer.solution`), so the demo rebuilds each prompt and
  knows which chains carry the injected error without asking the verifier.
  """
  from cot_distill.teacher import records  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import server  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import synthetic  # pylint: disable=g-import-not-at-top
  teacher = server.TeacherServer(error_rate=config.teacher_error_rate,
                                 step_error_rate=config.teacher_step_error_rate,
                                 seed=config.seed, keep_log=False)
  survival = {}
  for task, run_dir in run_dirs.items():
    manifest = json.loads((run_dir / "manifest.json").read_text())
    annotation = runner.AnnotationConfig.from_dict(manifest["config"])
    builder = runner.make_prompt_builder(annotation)
    injected = {
        example.id for example in runner.read_examples_file(data[task]["train"])
        if teacher.solution(builder.build(example).text, annotation.seed, 0,
                            annotation.temperature).error
        == synthetic.RIGHT_ANSWER_WRONG_STEP}
    kept = {r["id"] for r in records.read_records(run_dir / records.RECORDS_FILE)}
    verifier_dropped = {r["id"] for r in records.read_records(run_dir / records.DROPPED_FILE)
                        if r.get("drop_reason") in ("arithmetic_error", "step_inconsistent",
                                                    "hint_parroting")}
    survival[task] = {"injected": len(injected),
                      "answer_filter_keeps": len(injected & (kept | verifier_dropped)),
                      "verifier_keeps": len(injected & kept)}
  return survival


# ----------------------------------------------------------------------------
# Students: vocabulary, tasks, training.


def train_vocabulary(config: DemoConfig,
                     data: Mapping[str, Mapping[str, pathlib.Path]],
                     run_dirs: Mapping[str, pathlib.Path]) -> pathlib.Path:
  """A small SentencePiece model fitted on the demo's own text.

  T5's 32k vocabulary would work too, but its output projection would
  dominate a tiny student's step time on CPU; full-scale runs use T5's.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  vocab_dir = pathlib.Path(config.out_dir) / "vocab"
  model_path = vocab_dir / "demo_spm.model"
  if model_path.exists():
    return model_path
  vocab_dir.mkdir(parents=True, exist_ok=True)
  corpus = vocab_dir / "corpus.txt"
  with corpus.open("w", encoding="utf-8") as f:
    for task in config.tasks:
      for split in ("train", "test", "ood"):
        for line in data[task][split].read_text(encoding="utf-8").splitlines():
          example = json.loads(line)
          f.write(example["question"] + "\n")
          f.write(example["answer"] + "\n")
      records = run_dirs[task] / "records.jsonl"
      for line in records.read_text(encoding="utf-8").splitlines():
        f.write(json.loads(line)["rationale"] + "\n")
      f.write("The answer is yes. The answer is no.\n")
  prefix = vocab_dir / "demo_spm_partial"
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(prefix),
      vocab_size=config.sizes.vocab_size, model_type="unigram",
      character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      split_digits=True, byte_fallback=True, minloglevel=2,
      num_threads=2, seed_sentencepiece_size=200000)
  os.replace(prefix.with_suffix(".vocab"), vocab_dir / "demo_spm.vocab")
  os.replace(prefix.with_suffix(".model"), model_path)
  return model_path


def training_task_name(target_format: str) -> str:
  return f"cot_distill.demo.symbolic.{target_format}"


def register_training_tasks(config: DemoConfig,
                            data: Mapping[str, Mapping[str, pathlib.Path]],
                            run_dirs: Mapping[str, pathlib.Path],
                            spm_path: pathlib.Path) -> None:
  """The demo's SeqIO tasks and mixtures, one mixture per target format.

  The answer-only baseline trains on every generated question with its gold
  answer (the paper's baseline needs no teacher); the CoT student on the
  filtered teacher records.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  from cot_distill import seqio_tasks  # pylint: disable=g-import-not-at-top
  from cot_distill import vocabularies  # pylint: disable=g-import-not-at-top
  vocabulary = vocabularies.get_vocabulary(str(spm_path), extra_ids=0)
  for target_format in FORMATS:
    names = []
    for task in config.tasks:
      name = f"cot_distill.demo.{task}.{target_format}"
      seqio.TaskRegistry.remove(name)
      if target_format == "cot":
        seqio_tasks.register_cot_task(name, run_dirs[task], "cot", vocabulary)
      else:
        seqio_tasks.register_examples_task(name, str(data[task]["train"]),
                                           vocabulary,
                                           target_format="answer_only")
      names.append(name)
    seqio.MixtureRegistry.remove(training_task_name(target_format))
    seqio_tasks.register_mixture(training_task_name(target_format), names)


def student_model(config: DemoConfig):
  from cot_distill.model import config as config_lib  # pylint: disable=g-import-not-at-top
  from cot_distill.model import models  # pylint: disable=g-import-not-at-top
  sizes = config.sizes
  t5_config = config_lib.get_config(
      "t5_1_1_tiny", vocab_size=sizes.vocab_size, emb_dim=sizes.emb_dim,
      num_heads=sizes.num_heads, head_dim=sizes.emb_dim // sizes.num_heads,
      num_encoder_layers=sizes.num_layers, num_decoder_layers=sizes.num_layers,
      mlp_dim=sizes.mlp_dim, dropout_rate=0.0, dtype="float32")
  # T5X's default loss (summed over target tokens); AdamW's update does not
  # depend on the loss scale.
  return models.EncoderDecoderModel(t5_config)


def _target_length(config: DemoConfig, target_format: str) -> int:
  return (config.cot_target_length if target_format == "cot"
          else config.answer_target_length)


def train_student(config: DemoConfig, target_format: str) -> pathlib.Path:
  from cot_distill.train import checkpoints  # pylint: disable=g-import-not-at-top
  from cot_distill.train import optimizers  # pylint: disable=g-import-not-at-top
  from cot_distill.train import trainer  # pylint: disable=g-import-not-at-top
  sizes = config.sizes
  model_dir = pathlib.Path(config.out_dir) / "students" / target_format
  trainer.train(
      model=student_model(config),
      mixture_or_task_name=training_task_name(target_format),
      task_feature_lengths={"inputs": config.input_length,
                            "targets": _target_length(config, target_format)},
      train_steps=sizes.train_steps, batch_size=sizes.batch_size,
      model_dir=str(model_dir), pack=True, seed=config.seed,
      optimizer=optimizers.adamw,
      learning_rate=optimizers.warmup_cosine_schedule(
          peak_learning_rate=3e-3, warmup_steps=max(1, sizes.train_steps // 20),
          decay_steps=sizes.train_steps),
      checkpoint=checkpoints.CheckpointConfig(
          save_every_steps=sizes.train_steps, keep_last=1, async_save=False),
      log_every_steps=max(1, sizes.train_steps // 10))
  return model_dir


# ----------------------------------------------------------------------------
# Evaluation and report.


def evaluate_student(config: DemoConfig, target_format: str,
                     model_dir: pathlib.Path,
                     data: Mapping[str, Mapping[str, pathlib.Path]],
                     run_dirs: Mapping[str, pathlib.Path]) -> dict[str, Any]:
  from cot_distill.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  specs = [f"{task}_{split}={data[task][split]}"
           for task in config.tasks for split in ("test", "ood")]
  train_data = [str(run_dirs[task]) if target_format == "cot"
                else str(data[task]["train"]) for task in config.tasks]
  return evaluator.evaluate(
      checkpoint=str(model_dir), tasks=specs,
      out_dir=str(pathlib.Path(config.out_dir) / "evaluations" / target_format),
      batch_size=config.sizes.eval_batch_size, target_format=target_format,
      max_input_length=config.eval_input_length,
      max_decode_length=(config.eval_cot_decode_length if target_format == "cot"
                         else config.answer_target_length),
      train_data=train_data,
      label=f"demo {target_format} student")


def comparison_table(config: DemoConfig,
                     summaries: Mapping[str, Mapping[str, Any]]) -> str:
  sizes = config.sizes
  header = (f"{'task':<14}{'split':<28}{'answer-only':>14}{'CoT':>14}"
            f"{'CoT answer found':>18}")
  lines = [header, "-" * len(header)]
  for task in config.tasks:
    low, high = min(sizes.steps_in_distribution), max(sizes.steps_in_distribution)
    in_distribution = str(low) if low == high else f"{low}-{high}"
    for split, steps in (("test", in_distribution), ("ood", sizes.ood_steps)):
      name = f"{task}_{split}"
      cells = []
      for target_format in FORMATS:
        accuracy = summaries[target_format]["tasks"][name]["accuracy"]
        low, high = accuracy["interval"]
        cells.append(f"{100 * accuracy['accuracy']:5.1f} "
                     f"[{100 * low:.0f}-{100 * high:.0f}]")
      found = summaries["cot"]["tasks"][name]["answer_found_rate"]
      label = f"{split} ({steps} {'people' if task == 'coin_flip' else 'words'})"
      lines.append(f"{task:<14}{label:<28}{cells[0]:>14}{cells[1]:>14}"
                   f"{100 * found:>17.1f}%")
  return "\n".join(lines)


def run_demo(config: DemoConfig) -> DemoResult:
  """Runs (or resumes) every stage and returns the comparison."""
  from cot_distill.evaluation import report  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  out = pathlib.Path(config.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  logging.info("[1-2/6] generating data into %s", out / "data")
  data = generate_data(config)
  logging.info("[3/6] annotating with the local teacher (error rate %.0f%%)",
               100 * config.teacher_error_rate)
  run_dirs = annotate(config, data)
  step_errors = step_error_survival(config, data, run_dirs)
  spm_path = train_vocabulary(config, data, run_dirs)
  register_training_tasks(config, data, run_dirs, spm_path)
  summaries = {}
  model_dirs = {}
  for target_format in FORMATS:
    logging.info("[4/6] training the %s student", target_format)
    model_dirs[target_format] = train_student(config, target_format)
    logging.info("[5/6] evaluating the %s student", target_format)
    summaries[target_format] = evaluate_student(
        config, target_format, model_dirs[target_format], data, run_dirs)
  logging.info("[6/6] writing the report")
  report_dir = out / "report"
  report.build_report(
      [*run_dirs.values(), *model_dirs.values(), out / "evaluations"],
      report_dir)
  annotation = {}
  for task, run_dir in run_dirs.items():
    manifest = json.loads((run_dir / "manifest.json").read_text())
    annotation[task] = manifest.get("counts", {})
  table = comparison_table(config, summaries)
  return DemoResult(out_dir=str(out), table=table,
                    results={f: s for f, s in summaries.items()},
                    annotation=annotation, step_errors=step_errors,
                    report_path=str(report_dir / "report.md"),
                    seconds=time.perf_counter() - start)
