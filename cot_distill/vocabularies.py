"""The student's SentencePiece vocabulary, resolved without touching disk or network.

Every SeqIO task, the trainer and the evaluator must tokenise with the SAME
vocabulary as the T5 checkpoint they start from, so there is one function,
`get_vocabulary`, and one precedence order for where the model file lives:

  1. the `spm_path` argument (a gin binding
     `get_vocabulary.spm_path = "..."` supplies this argument too);
  2. the environment variable `COT_DISTILL_SPM_PATH`;
  3. T5's public vocabulary (what T5 1.0/1.1 and Flan-T5 were trained with),
     shipped inside this package (`cot_distill/vocab/t5_spiece.model`, the
     bytes of `gs://t5-data/vocabs/cc_all.32000/sentencepiece.model`; licence
     note beside it), so nothing is fetched at run time unless a user names
     a remote path.

A trained student carries its vocabulary: `store_in_model_dir` copies the
model file into MODEL_DIR and describes it relative to MODEL_DIR (as a
Hugging Face checkpoint carries its tokenizer), and `from_description`
resolves such a description against the directory that holds it. These two
are the only writer and reader of the `vocabulary` entry of
model_config.json.

`extra_ids=100` matches T5 (sentinels `<extra_id_0>`..`<extra_id_99>` at ids
32099..32000); our formats never emit sentinels, so the token ids of ordinary
text are identical for any `extra_ids`, only `vocab_size` differs
(32,000 + extra_ids; the model's embedding table is padded to 32,128 anyway).

Importing this module reads nothing: `seqio.SentencePieceVocabulary` loads the
model file on first encode/decode.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Mapping

import gin
import seqio

from cot_distill import errors

class MissingVocabularyError(errors.UserError, FileNotFoundError):
  """A SentencePiece model file that a run or checkpoint names is not there."""


# T5's public vocabulary, as packaged (see cot_distill/vocab/NOTICE.md).
DEFAULT_SPM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "vocab", "t5_spiece.model")
# Where T5 publishes the same file; the T5X gin configs name it.
PUBLIC_SPM_URL = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
# The copy of the vocabulary inside a trained MODEL_DIR.
MODEL_DIR_SPM_FILE = "sentencepiece.model"
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


def is_remote(path: str) -> bool:
  """True for URLs (gs://, s3://, ...), which stay as given everywhere."""
  return "://" in str(path)


def _join(directory: str, name: str) -> str:
  if is_remote(directory):
    return directory.rstrip("/") + "/" + name
  return os.path.join(directory, name)


def store_in_model_dir(vocabulary: Any, model_dir: str) -> dict[str, Any]:
  """Copies a SentencePiece vocabulary into MODEL_DIR and describes it.

  Returns the `vocabulary` entry of model_config.json:
  `{"spm_path": "sentencepiece.model", "extra_ids": N}` (relative to
  MODEL_DIR), so the directory can be moved, synced to a bucket or evaluated
  from any working directory. A vocabulary that lives at a remote URL is
  recorded as given and not copied (it is already reachable from anywhere).
  A vocabulary without a model file (not SentencePiece) is recorded as
  `{"spm_path": None, ...}`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  source = getattr(vocabulary, "sentencepiece_model_file", None)
  extra_ids = int(getattr(vocabulary, "extra_ids", 0) or 0)
  if not source or is_remote(source):
    return {"spm_path": source, "extra_ids": extra_ids}
  source = os.path.abspath(source)
  target = _join(model_dir, MODEL_DIR_SPM_FILE)
  if not tf.io.gfile.exists(source):
    raise MissingVocabularyError(f"vocabulary {source}: no such SentencePiece model file")
  tf.io.gfile.makedirs(model_dir)
  with tf.io.gfile.GFile(source, "rb") as file:
    content = file.read()
  if tf.io.gfile.exists(target):
    with tf.io.gfile.GFile(target, "rb") as file:
      if file.read() == content:
        return {"spm_path": MODEL_DIR_SPM_FILE, "extra_ids": extra_ids}
  # Atomic: a reader never sees half a vocabulary.
  temporary = f"{target}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "wb") as file:
    file.write(content)
  tf.io.gfile.rename(temporary, target, overwrite=True)
  return {"spm_path": MODEL_DIR_SPM_FILE, "extra_ids": extra_ids}


def resolve_described_path(spm_path: str | None, model_dir: str | None) -> str | None:
  """The file a model_config.json `spm_path` names, read relative to MODEL_DIR.

  Remote and absolute paths stay as given. A relative path is relative to
  MODEL_DIR; checkpoints written before vocabularies were copied recorded
  the path relative to the training job's working directory instead, so
  when nothing exists under MODEL_DIR but the path exists from here, that
  is used (with a log line).
  """
  if not spm_path or is_remote(spm_path) or os.path.isabs(spm_path):
    return spm_path
  if model_dir is None:
    return os.path.abspath(spm_path)
  candidate = _join(model_dir, spm_path)
  if is_remote(candidate):
    return candidate
  if not os.path.exists(candidate) and os.path.exists(spm_path):
    logging.info("vocabulary %s is not under %s; using it relative to the "
                 "working directory (a model_config.json from before "
                 "vocabularies were copied into MODEL_DIR)", spm_path, model_dir)
    return os.path.abspath(spm_path)
  return candidate


def from_description(description: Mapping[str, Any] | None, model_dir: str | None, *,
                     spm_path: str | None = None,
                     extra_ids: int | None = None) -> seqio.SentencePieceVocabulary:
  """The vocabulary a model_config.json describes (explicit arguments win).

  Raises MissingVocabularyError (a FileNotFoundError) naming both the description and the file when a
  local vocabulary file is missing, so evaluation fails before decoding.
  """
  description = dict(description or {})
  described = description.get("spm_path") or description.get("sentencepiece_model")
  path = spm_path or resolve_described_path(described, model_dir)
  if extra_ids is None:
    extra_ids = description.get("extra_ids")
  resolved = resolve_spm_path(path)
  if not is_remote(resolved) and not os.path.exists(resolved):
    where = f" (model_config.json in {model_dir} names {described!r})" if described and not spm_path else ""
    raise MissingVocabularyError(
        f"vocabulary {resolved}: no such SentencePiece model file{where}; pass "
        "--spm-path with the vocabulary the student was trained with")
  return get_vocabulary(resolved, DEFAULT_EXTRA_IDS if extra_ids is None else extra_ids)
