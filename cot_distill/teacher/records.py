"""CoT records on disk: an append-only, kill-safe annotation run directory.

A run directory holds:
  records.jsonl   kept chains of thought, one JSON object per line;
  dropped.jsonl   the rest, each with a `drop_reason`;
  manifest.json   run config, teacher (no secrets), prompt ids, dataset,
                  counts by outcome, token totals, status.

Every question contributes exactly `samples` lines (sample_index 0..n-1)
across the two files, written with one `os.write` per file from the single
event-loop thread, so at any instant at most one question is partly on disk
and only the last line of a file can be torn. Resuming (`RunDirectory.open`)
therefore:
  1. cuts a torn last line (no trailing newline, or not JSON);
  2. finds questions whose lines are incomplete (fewer than `samples`
     distinct sample indices) or repeated, and rewrites both files without
     them (write to a temporary file, fsync, rename: a kill mid-repair leaves
     the old file, which the next resume repairs again);
  3. reports the ids that are complete, which the runner skips.
So a run killed at any instant (SIGKILL included) and started again ends
with every question exactly once: no duplicates, no losses.

Durability: a line handed to `os.write` survives the death of the process
(the kernel has it); `flush()` fsyncs both files, which the runner calls with
every manifest update (about once a second) and at the end, bounding what an
OS crash could lose. The manifest is replaced atomically (temporary file +
fsync + rename).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, Mapping

RECORDS_FILE = "records.jsonl"
DROPPED_FILE = "dropped.jsonl"
MANIFEST_FILE = "manifest.json"

# Why a sampled chain of thought was not kept.
DROP_REASONS = ("wrong_answer", "arithmetic_error", "step_inconsistent", "hint_parroting",
                "no_answer", "truncated", "oversized_response", "empty", "duplicate", "failed")


class RunDirectoryError(ValueError):
  """A run directory that cannot be used; the message names the file/line."""


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _replace_atomically(path: pathlib.Path, payload: bytes) -> None:
  """Writes `payload` to a temporary file in the same folder, fsyncs, renames
  it over `path`: readers see the old file or the new one, never a mix."""
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    try:
      os.unlink(temporary)
    except OSError:
      pass
    raise
  _fsync_directory(path.parent)


def write_json_atomically(path: pathlib.Path, data: Any) -> None:
  """Replaces `path` with `data` as indented JSON (see `_replace_atomically`)."""
  text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
  _replace_atomically(path, text.encode("utf-8"))


def _fsync_directory(directory: pathlib.Path) -> None:
  try:
    handle = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(handle)
  except OSError:
    pass
  finally:
    os.close(handle)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
  path = pathlib.Path(directory) / MANIFEST_FILE
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except json.JSONDecodeError as error:
    raise RunDirectoryError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
  """All complete JSON lines of a records/dropped file (a torn last line is
  ignored; a bad line elsewhere is an error naming file and line)."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records, _ = _read_lines(path)
  return records


def _read_lines(path: pathlib.Path) -> tuple[list[dict[str, Any]], int]:
  """(parsed lines, byte length of the valid prefix)."""
  data = path.read_bytes()
  records = []
  valid_length = 0
  position = 0
  line_number = 0
  while position < len(data):
    end = data.find(b"\n", position)
    line_number += 1
    if end < 0:  # Torn last line: no newline.
      break
    line = data[position:end]
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError("not an object")
    except ValueError as error:
      if data.find(b"\n", end + 1) < 0 and not data[end + 1:].strip():
        break  # The last line is bad: treat as torn.
      raise RunDirectoryError(f"{path}:{line_number}: not a JSON object: {error}") from None
    problem = _record_problem(record)
    if problem:
      raise RunDirectoryError(f"{path}:{line_number}: {problem}")
    records.append(record)
    position = end + 1
    valid_length = position
  return records, valid_length


def _record_problem(record: Mapping[str, Any]) -> str | None:
  """What makes a complete line unusable as a record (None when fine): the
  fields resuming and counting rely on."""
  if "id" not in record:
    return "field 'id' is missing"
  if not isinstance(record["id"], str) or not record["id"]:
    return f"field 'id' must be a non-empty string, got {record['id']!r:.60}"
  index = record.get("sample_index", 0)
  if isinstance(index, bool) or not isinstance(index, int) or index < 0:
    return f"field 'sample_index' must be an integer >= 0, got {index!r:.60}"
  if "drop_reason" in record and not isinstance(record["drop_reason"], str):
    return f"field 'drop_reason' must be a string, got {record['drop_reason']!r:.60}"
  return None


def failure_class(record: Mapping[str, Any]) -> str:
  """The failure class of a "failed" record: its `failure_class` field, or
  for records written before that field, the start of its `error`."""
  found = record.get("failure_class")
  if found:
    return str(found)
  error = str(record.get("error") or "unknown")
  return error.split(":", 1)[0].strip() or "unknown"


class RunDirectory:
  """Append-only writer over a run directory (see the module docstring)."""

  def __init__(self, directory: pathlib.Path, samples: int):
    self.directory = directory
    self.samples = samples
    self.counts: collections.Counter = collections.Counter()
    self.failure_classes: collections.Counter = collections.Counter()
    # Kept records the rationale verifier flags (verify="report"), by reason.
    self.flagged: collections.Counter = collections.Counter()
    self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    self.done_ids: set[str] = set()
    self.repaired: dict[str, int] = {}
    self._handles: dict[str, int] = {}
    self._dirty = False

  @classmethod
  def open(cls, directory: str | os.PathLike, samples: int,
           retry_failed: bool = False) -> "RunDirectory":
    """Opens (creating or repairing) a run directory for appending.

    With `retry_failed`, questions with a "failed" sample (the teacher was
    unreachable) are removed like incomplete ones, so the run redoes them.
    """
    run = cls(pathlib.Path(directory), samples)
    run.directory.mkdir(parents=True, exist_ok=True)
    run._recover(retry_failed)
    for name in (RECORDS_FILE, DROPPED_FILE):
      run._handles[name] = os.open(run.directory / name,
                                   os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return run

  def _recover(self, retry_failed: bool) -> None:
    lines_by_file = {}
    torn = 0
    for name in (RECORDS_FILE, DROPPED_FILE):
      path = self.directory / name
      if not path.exists():
        lines_by_file[name] = []
        continue
      records, valid_length = _read_lines(path)
      if valid_length != path.stat().st_size:
        torn += 1
        with open(path, "r+b") as f:
          f.truncate(valid_length)
          f.flush()
          os.fsync(f.fileno())
      lines_by_file[name] = records
    seen: dict[str, set[int]] = collections.defaultdict(set)
    lines_per_id: collections.Counter = collections.Counter()
    for records in lines_by_file.values():
      for record in records:
        seen[record["id"]].add(int(record.get("sample_index", 0)))
        lines_per_id[record["id"]] += 1
    complete = {id_ for id_, indices in seen.items()
                if indices == set(range(self.samples)) and lines_per_id[id_] == self.samples}
    broken = set(seen) - complete
    failed = set()
    if retry_failed:
      failed = {r["id"] for r in lines_by_file[DROPPED_FILE] if r.get("drop_reason") == "failed"}
      complete -= failed
    broken |= failed
    if broken:
      for name, records in lines_by_file.items():
        kept = [r for r in records if r["id"] not in broken]
        if len(kept) != len(records):
          write_records_atomically(self.directory / name, kept)
        lines_by_file[name] = kept
    self.repaired = {"torn_lines": torn, "incomplete_questions": len(broken - failed),
                     "failed_questions_to_retry": len(failed)}
    self.done_ids = complete
    for record in lines_by_file[RECORDS_FILE]:
      self._tally(record, kept=True)
    for record in lines_by_file[DROPPED_FILE]:
      self._tally(record, kept=False)

  def _tally(self, record: Mapping[str, Any], kept: bool) -> None:
    reason = "kept" if kept else record.get("drop_reason", "unknown")
    self.counts[reason] += 1
    verification = record.get("verification") or {}
    if kept and verification.get("passed") is False:
      self.flagged[str(verification.get("reason"))] += 1
    if reason == "failed":
      self.failure_classes[failure_class(record)] += 1
    usage = record.get("usage") or {}
    for key in self.tokens:
      self.tokens[key] += int(usage.get(key) or 0)

  def write_question(self, kept: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> None:
    """Appends all lines of one question: one write per file."""
    if len(kept) + len(dropped) != self.samples:
      raise ValueError(f"a question needs {self.samples} lines, got "
                       f"{len(kept)} kept + {len(dropped)} dropped")
    for name, records in ((DROPPED_FILE, dropped), (RECORDS_FILE, kept)):
      if records:
        _write_all(self._handles[name], b"".join(_encode(r) for r in records))
    for record in kept:
      self._tally(record, kept=True)
    for record in dropped:
      self._tally(record, kept=False)
    self.done_ids.add((kept or dropped)[0]["id"])
    self._dirty = True

  def flush(self) -> None:
    """fsyncs both files if anything was written since the last flush.

    Safe to call from a helper thread while the event loop keeps appending:
    the flag is cleared first, so a write racing with the fsync marks the
    files dirty again for the next flush.
    """
    if self._dirty:
      self._dirty = False
      for handle in list(self._handles.values()):
        os.fsync(handle)

  def write_manifest(self, manifest: Mapping[str, Any]) -> None:
    self.flush()
    write_json_atomically(self.directory / MANIFEST_FILE, dict(manifest))

  def close(self) -> None:
    self.flush()
    for handle in self._handles.values():
      os.close(handle)
    self._handles.clear()


def write_records_atomically(path: pathlib.Path,
                             records: Iterable[Mapping[str, Any]]) -> None:
  """Replaces a JSONL file with `records` (see `_replace_atomically`)."""
  _replace_atomically(path, b"".join(_encode(record) for record in records))


def _encode(record: Mapping[str, Any]) -> bytes:
  return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _write_all(handle: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    written = os.write(handle, view)
    view = view[written:]
