"""A content-addressed disk cache of teacher responses.

The key is the SHA-256 of the canonical JSON of everything that determines a
response: endpoint kind, model, prompt (or chat messages) and sampling
parameters (temperature, top_p, max_tokens, stop, seed, n). The base URL and
the API key are deliberately NOT part of the key: the same model served from
another host gives the same answers, and secrets never reach the disk.

Re-running an annotation (a resumed run, a rerun into a new directory, a
changed filter) therefore costs zero requests for every prompt already
answered. Entries are written to a temporary file and renamed into place, so
a reader sees a whole entry or none; an unreadable entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any, Mapping


def default_cache_dir() -> pathlib.Path:
  """$COT_DISTILL_CACHE_DIR/teacher, else ~/.cache/cot-distill/teacher."""
  root = os.environ.get("COT_DISTILL_CACHE_DIR")
  if root:
    return pathlib.Path(root) / "teacher"
  return pathlib.Path.home() / ".cache" / "cot-distill" / "teacher"


def cache_key(material: Mapping[str, Any]) -> str:
  """SHA-256 hex digest of the canonical JSON of `material`."""
  canonical = json.dumps(material, sort_keys=True, ensure_ascii=False,
                         separators=(",", ":"))
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
  """Maps cache keys to JSON-serialisable responses, one file per entry.

  Layout: `root/ab/abcdef....json` (256 shard folders keep directories small).
  """

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)
    self.hits = 0
    self.misses = 0
    self._made_dirs: set[str] = set()

  def _path(self, key: str) -> pathlib.Path:
    return self.root / key[:2] / f"{key}.json"

  def get(self, key: str) -> dict[str, Any] | None:
    try:
      with open(self._path(key), "rb") as f:
        entry = json.loads(f.read())
    except (FileNotFoundError, ValueError, OSError):
      self.misses += 1
      return None
    if not isinstance(entry, dict) or entry.get("key") != key:
      self.misses += 1
      return None
    self.hits += 1
    return entry["response"]

  def put(self, key: str, response: Mapping[str, Any]) -> None:
    shard = key[:2]
    directory = self.root / shard
    if shard not in self._made_dirs:
      directory.mkdir(parents=True, exist_ok=True)
      self._made_dirs.add(shard)
    data = json.dumps({"key": key, "response": response},
                      ensure_ascii=False).encode("utf-8")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
      with os.fdopen(handle, "wb") as f:
        f.write(data)
      os.replace(temporary, self._path(key))
    except BaseException:
      try:
        os.unlink(temporary)
      except OSError:
        pass
      raise
