"""The annotation runs the registry turns into training tasks: a declarative list.

Each run becomes `cot_distill.{dataset}.{teacher}.{format}` for every target
format (cot, answer_only, multitask). A run's records live in
`$COT_DISTILL_RUNS_DIR/{path}/records.jsonl` (default runs dir: `./runs`), or
at `path` itself when it is absolute or a URL (gs://...). The path is resolved
when the task is first READ, not when the registry is imported, so the
variable may be set any time before training starts, and registering costs no
I/O.

To add a run: annotate (or import) into `$COT_DISTILL_RUNS_DIR/<dataset>/<teacher>`
and append an `AnnotationRun` below; for a one-off run, call
`cot_distill.seqio_tasks.register_cot_task` instead.
"""

from __future__ import annotations

import dataclasses
import os

RUNS_DIR_ENV = "COT_DISTILL_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"


@dataclasses.dataclass(frozen=True)
class AnnotationRun:
  """One teacher's CoT records for one dataset.

  Attributes:
    dataset: registry name of the dataset the records are about.
    teacher: short teacher name used in task names ("gpt3", "llama70b").
    path: run directory, relative to the runs dir unless absolute or a URL.
    note: caveats a user must read before training on it (leakage, licence).
  """

  dataset: str
  teacher: str
  path: str
  note: str = ""

  def resolve(self) -> str:
    """The run directory, reading the environment now."""
    if "://" in self.path or os.path.isabs(self.path):
      return self.path
    return os.path.join(os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR, self.path)


_KOJIMA = ("Kojima et al.'s text-davinci-002 zero-shot-CoT log imported with "
           "`cot-distill annotate --from-log`; the log covers an EVALUATION set")

RUNS: tuple[AnnotationRun, ...] = (
    # Your own teacher run over GSM8K train (`cot-distill annotate --dataset
    # gsm8k --split train --out $COT_DISTILL_RUNS_DIR/gsm8k/teacher`): the
    # paper's recipe (gin/recipes, gin/t5x) trains on it.
    AnnotationRun("gsm8k", "teacher", "gsm8k/teacher",
                  note="hinted 8-shot teacher run over GSM8K train (paper recipe)."),
    AnnotationRun("gsm8k", "gpt3", "gsm8k/gpt3",
                  note=f"{_KOJIMA} (GSM8K test): a plumbing check, never a "
                  "training set; do not evaluate its students on GSM8K test."),
    AnnotationRun("svamp", "gpt3", "svamp/gpt3",
                  note=f"{_KOJIMA} (all of SVAMP): plumbing check only."),
    AnnotationRun("strategyqa_bigbench", "gpt3", "strategyqa_bigbench/gpt3",
                  note=f"{_KOJIMA} (StrategyQA official train = our strategyqa "
                  "train+dev): do not evaluate its students on strategyqa dev."),
    AnnotationRun("coin_flip", "gpt3", "coin_flip/gpt3",
                  note=f"{_KOJIMA} (Kojima's coin flip set): plumbing check only."),
    AnnotationRun("last_letters", "gpt3", "last_letters/gpt3",
                  note=f"{_KOJIMA} (Kojima's last letters set): plumbing check only."),
)
