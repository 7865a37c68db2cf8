"""The student's SentencePiece vocabulary, resolved without touching disk or network.

Every SeqIO task, the trainer and the evaluator must tokenise with the SAME
vocabulary as the T5 checkpoint they start from, so there is one function,
`get_vocabulary`, and one precedence order for where the model file lives:

  1. the `spm_path` argument (a gin binding
     `get_vocabulary.spm_path = "..."` supplies this argument too);
  2. the environment variable `COT_DISTILL_SPM_PATH`;
  3. T5's public vocabulary, `gs://t5-data/vocabs/cc_all.32000/sentencepiece.model`
     (what T5 1.0/1.1 and Flan-T5 were trained with).

The offline copy used by the tests is `../shared/data/vocab/spiece.model`: the
same 32,000 pieces (sha256 in shared/data/SOURCES.md).

`extra_ids=100` matches T5 (sentinels `<extra_id_0>`..`<extra_id_99>` at ids
32099..32000); our formats never emit sentinels, so the token ids of ordinary
text are identical for any `extra_ids`, only `vocab_size` differs
(32,000 + extra_ids; the model's embedding table is padded to 32,128 anyway).

Importing this module reads nothing: `seqio.SentencePieceVocabulary` loads the
model file on first encode/decode.
"""

from __future__ import annotations

import functools
import os

import gin
import seqio

DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
SPM_PATH_ENV = "COT_DISTILL_SPM_PATH"
# T5's sentinel count (see module docstring).
DEFAULT_EXTRA_IDS = 100


def resolve_spm_path(spm_path: str | os.PathLike | None = None) -> str:
  """The SentencePiece model path by the precedence in the module docstring."""
  if spm_path:
    return os.fspath(spm_path)
  return os.environ.get(SPM_PATH_ENV) or DEFAULT_SPM_PATH


@gin.configurable
def get_vocabulary(spm_path: str | os.PathLike | None = None,
                   extra_ids: int = DEFAULT_EXTRA_IDS,
                   ) -> seqio.SentencePieceVocabulary:
  """The T5 SentencePiece vocabulary (cached: one instance per path/extra_ids).

  Args:
    spm_path: path or URL (gs:// works through tf.io.gfile) of the
      SentencePiece model; None follows the precedence in the module docstring.
    extra_ids: number of sentinel ids appended after the 32,000 pieces.

  Returns:
    A `seqio.SentencePieceVocabulary`; the file is read on first use.
  """
  return _vocabulary(resolve_spm_path(spm_path), int(extra_ids))


@functools.lru_cache(maxsize=None)
def _vocabulary(spm_path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  # One shared instance per file, so the model proto is parsed once per process.
  return seqio.SentencePieceVocabulary(spm_path, extra_ids=extra_ids)


def vocabulary_config(vocabulary: seqio.Vocabulary) -> dict[str, object]:
  """`{"spm_path", "extra_ids"}` of a vocabulary, as model_config.json stores it."""
  if not isinstance(vocabulary, seqio.SentencePieceVocabulary):
    raise TypeError(f"expected a seqio.SentencePieceVocabulary, got {type(vocabulary).__name__}")
  return {"spm_path": vocabulary.sentencepiece_model_file,
          "extra_ids": vocabulary.extra_ids}
