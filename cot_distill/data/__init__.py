"""Benchmark datasets: loaders, TFDS builders, symbolic generators, leakage checks.

Start at `registry` (`DATASETS`, `load(name, split, data_dir=None)`, `splits`).
Modules, one job each:
  example          the `Example` record every loader returns
  registry         names -> splits, counts, licence, files, loader; data-dir resolution
  sources          upstream repository, commit, path and SHA-256 of every file
  download         fetch those files (hash-checked, atomic, resumable)
  readers          JSON / JSONL / CSV / text readers that keep line numbers
  errors           DataFormatError (path:line: message), MissingDataError
  number_format    canonical spelling of numeric gold answers
  arithmetic, asdiv, mawps, multiple_choice, strategyqa, bigbench,
  kojima_symbolic  the per-family loaders of the original file formats
  symbolic         coin-flip / last-letter generators (any size, any length)
  leakage          question-overlap report between splits and datasets
  tfds_builders    TFDS builder `cot_distill_benchmarks` (imports TensorFlow)
"""

from cot_distill.data.example import AnswerType, Example, make_id

__all__ = ["AnswerType", "Example", "make_id"]
