"""A content-addressed disk cache of teacher responses.

The key is the SHA-256 of the endpoint (the normalised base URL), the
endpoint kind and the canonical JSON request body: model, prompt (or chat
messages) and sampling parameters (temperature, top_p, max_tokens, stop,
seed, n). The endpoint is part of it because many servers answer under any
model name: two servers given the same name are not the same model. The API
key is not part of it, and secrets never reach the disk. Responses are
stored after the client's checks (oversized choices already cut).

Re-running an annotation (a resumed run, a rerun into a new directory, a
changed filter) therefore costs zero requests for every prompt already
answered.

Storage: append-only "pack" files, `root/pack-<time>-<pid>.jsonl`, one line
per entry, `<key>\\t<response JSON>\\n`, written with a single `os.write`.
Each process appends only to its own pack, so concurrent runs sharing a
cache never interleave; at start-up the cache indexes every pack's complete
lines (key -> file offset) and reads an entry with one `pread` when asked.
A torn last line (a process killed mid-write) or an unreadable entry is a
miss. One file per entry was the first design; creating a file per response
cost more CPU than the HTTP request itself at hundreds of requests/s.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from typing import Any, Mapping


def default_cache_dir() -> pathlib.Path:
  """$COT_DISTILL_CACHE_DIR/teacher, else ~/.cache/cot-distill/teacher."""
  root = os.environ.get("COT_DISTILL_CACHE_DIR")
  if root:
    return pathlib.Path(root) / "teacher"
  return pathlib.Path.home() / ".cache" / "cot-distill" / "teacher"


def cache_key(kind: str, canonical_body: bytes, endpoint: str = "") -> str:
  """SHA-256 hex digest of the endpoint (base URL), the endpoint kind and a
  canonical JSON body."""
  digest = hashlib.sha256(endpoint.encode("utf-8"))
  digest.update(b"\n")
  digest.update(kind.encode("utf-8"))
  digest.update(b"\n")
  digest.update(canonical_body)
  return digest.hexdigest()


class ResponseCache:
  """Maps cache keys to JSON-serialisable responses (see module docstring)."""

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)
    self.root.mkdir(parents=True, exist_ok=True)
    self.hits = 0
    self.misses = 0
    self._index: dict[str, tuple[int, int, int]] = {}  # key -> (pack, offset, length)
    self._packs: list[pathlib.Path] = []
    self._handles: dict[int, int] = {}
    self._writer: int | None = None
    self._writer_pack = -1
    self._writer_offset = 0
    for path in sorted(self.root.glob("pack-*.jsonl")):
      self._index_pack(path)

  def __len__(self) -> int:
    return len(self._index)

  def _index_pack(self, path: pathlib.Path) -> None:
    pack = len(self._packs)
    self._packs.append(path)
    offset = 0
    with open(path, "rb") as f:
      for line in f:
        if not line.endswith(b"\n"):
          break  # Torn last line.
        tab = line.find(b"\t")
        if tab == 64:
          self._index[line[:tab].decode("ascii")] = (pack, offset + tab + 1, len(line) - tab - 2)
        offset += len(line)

  def _handle(self, pack: int) -> int:
    if pack not in self._handles:
      self._handles[pack] = os.open(self._packs[pack], os.O_RDONLY)
    return self._handles[pack]

  def get(self, key: str) -> dict[str, Any] | None:
    location = self._index.get(key)
    if location is None:
      self.misses += 1
      return None
    pack, offset, length = location
    try:
      response = json.loads(os.pread(self._handle(pack), length, offset))
    except (OSError, ValueError):
      self.misses += 1
      return None
    self.hits += 1
    return response

  def put(self, key: str, response: Mapping[str, Any]) -> None:
    if len(key) != 64:
      raise ValueError(f"cache keys are SHA-256 hex digests, got {key!r}")
    if self._writer is None:
      path = self.root / f"pack-{time.time_ns()}-{os.getpid()}.jsonl"
      self._writer = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
      self._writer_pack = len(self._packs)
      self._packs.append(path)
    body = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    line = key.encode("ascii") + b"\t" + body + b"\n"
    view = memoryview(line)
    while view:
      view = view[os.write(self._writer, view):]
    self._index[key] = (self._writer_pack, self._writer_offset + 65, len(body))
    self._writer_offset += len(line)

  def close(self) -> None:
    for handle in self._handles.values():
      os.close(handle)
    self._handles.clear()
    if self._writer is not None:
      os.close(self._writer)
      self._writer = None
