"""Readers for the file formats the benchmarks ship in, with line numbers.

Each reader returns `Record`s: the parsed value plus the file and the line
where it starts. Loaders pull fields through `Record.field`, so a missing or
mistyped field anywhere in a 4 MB JSON array is reported as `path:line:`.
The standard `json.load` cannot say where an array element starts, hence the
small position-tracking walker below (it still uses the C decoder for every
element, so it is as fast as `json.load`).
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
import json
import os
import pathlib
import re
from typing import Any, Sequence

from cot_distill.data.errors import DataFormatError, MissingDataError

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_MISSING_HINT = ("run `cot-distill datasets download NAME --data-dir DIR` or "
                 "point --data-dir / COT_DISTILL_DATA_DIR at a copy")


@dataclasses.dataclass(frozen=True)
class Record:
  """One parsed unit of a file (JSON value, CSV row, text line) and its place."""

  path: pathlib.Path
  line: int
  data: Any

  def error(self, message: str) -> DataFormatError:
    return DataFormatError(self.path, self.line, message)

  def field(self, key: str, kind: type | tuple[type, ...] = str) -> Any:
    """Returns `data[key]`, raising DataFormatError if absent or mistyped."""
    if not isinstance(self.data, dict):
      raise self.error(
          f"expected a JSON object, found {type(self.data).__name__}")
    if key not in self.data:
      raise self.error(f"missing field {key!r}")
    value = self.data[key]
    # bool is an int subclass; a JSON true is never a valid number here.
    if not isinstance(value, kind) or (isinstance(value, bool)
                                       and bool not in _as_tuple(kind)):
      raise self.error(
          f"field {key!r} has type {type(value).__name__}, expected "
          f"{' or '.join(k.__name__ for k in _as_tuple(kind))}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
  return kind if isinstance(kind, tuple) else (kind,)


def read_text(path: str | os.PathLike[str]) -> str:
  """The file's UTF-8 text (a BOM is dropped); missing file -> MissingDataError."""
  path = pathlib.Path(path)
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise MissingDataError(path, _MISSING_HINT) from None
  except IsADirectoryError:
    raise DataFormatError(path, None, "is a directory, expected a file") from None
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    line = raw.count(b"\n", 0, error.start) + 1
    raise DataFormatError(path, line, f"not valid UTF-8 ({error.reason})") from None


class _LineIndex:
  """Maps a character offset to its 1-based line in O(log lines)."""

  def __init__(self, text: str):
    self._newlines = [m.start() for m in re.finditer("\n", text)]

  def line(self, offset: int) -> int:
    return bisect.bisect_left(self._newlines, offset) + 1


def _skip_whitespace(text: str, position: int) -> int:
  return _WHITESPACE.match(text, position).end()


def _decode_value(text: str, position: int, path: pathlib.Path) -> tuple[Any, int]:
  try:
    return _DECODER.raw_decode(text, position)
  except json.JSONDecodeError as error:
    raise DataFormatError(path, error.lineno,
                          f"malformed JSON: {error.msg} (column {error.colno})") from None


def _expect(text: str, position: int, expected: str, path: pathlib.Path,
            lines: _LineIndex) -> None:
  if not text.startswith(expected, position):
    found = repr(text[position]) if position < len(text) else "end of file"
    raise DataFormatError(path, lines.line(position),
                          f"malformed JSON: expected {expected!r}, found {found}")


def _array_items(text: str, position: int, path: pathlib.Path,
                 lines: _LineIndex) -> tuple[list[Record], int]:
  """Parses the array starting at `position`; returns items and the end offset."""
  _expect(text, position, "[", path, lines)
  position = _skip_whitespace(text, position + 1)
  items: list[Record] = []
  if text.startswith("]", position):
    return items, position + 1
  while True:
    start = position
    value, position = _decode_value(text, position, path)
    items.append(Record(path, lines.line(start), value))
    position = _skip_whitespace(text, position)
    if text.startswith(",", position):
      position = _skip_whitespace(text, position + 1)
      continue
    _expect(text, position, "]", path, lines)
    return items, position + 1


def _object_member_array(text: str, position: int, key: str, path: pathlib.Path,
                         lines: _LineIndex) -> tuple[list[Record] | None, int]:
  """Walks the object at `position`; returns the items of member `key`."""
  _expect(text, position, "{", path, lines)
  position = _skip_whitespace(text, position + 1)
  found: list[Record] | None = None
  if text.startswith("}", position):
    return found, position + 1
  while True:
    member, position = _decode_value(text, position, path)
    if not isinstance(member, str):
      raise DataFormatError(path, lines.line(position), "malformed JSON: object key is not a string")
    position = _skip_whitespace(text, position)
    _expect(text, position, ":", path, lines)
    position = _skip_whitespace(text, position + 1)
    if member == key:
      found, position = _array_items(text, position, path, lines)
    else:
      _, position = _decode_value(text, position, path)
    position = _skip_whitespace(text, position)
    if text.startswith(",", position):
      position = _skip_whitespace(text, position + 1)
      continue
    _expect(text, position, "}", path, lines)
    return found, position + 1


def read_json_array(path: str | os.PathLike[str], key: str | None = None) -> list[Record]:
  """Elements of a JSON array file, or of member `key` of a top-level object.

  Args:
    path: the JSON file.
    key: None when the file is an array (SVAMP, MultiArith); the member
      holding the list when the file is an object (BIG-bench `examples`).
  """
  path = pathlib.Path(path)
  text = read_text(path)
  lines = _LineIndex(text)
  position = _skip_whitespace(text, 0)
  if key is None:
    items, position = _array_items(text, position, path, lines)
  else:
    items, position = _object_member_array(text, position, key, path, lines)
    if items is None:
      raise DataFormatError(path, None, f"top-level object has no {key!r} list")
  position = _skip_whitespace(text, position)
  if position != len(text):
    raise DataFormatError(path, lines.line(position),
                          "malformed JSON: extra data after the top-level value")
  return items


def read_jsonl(path: str | os.PathLike[str]) -> list[Record]:
  """One JSON value per non-blank line (GSM8K, AQuA, CommonsenseQA)."""
  path = pathlib.Path(path)
  records = []
  for number, line in enumerate(read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as error:
      raise DataFormatError(path, number,
                            f"malformed JSON line: {error.msg} (column {error.colno})") from None
    records.append(Record(path, number, value))
  return records


def read_csv(path: str | os.PathLike[str], header: Sequence[str]) -> list[Record]:
  """CSV rows as dicts; the header must equal `header` exactly.

  A row's line is where it starts (quoted fields may span lines). A row with
  the wrong number of fields is an error rather than a silently padded dict.
  """
  path = pathlib.Path(path)
  reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
  records: list[Record] = []
  columns: list[str] | None = None
  start = 1
  try:
    for row in reader:
      line, start = start, reader.line_num + 1
      if not row:
        continue
      if columns is None:
        columns = row
        if list(columns) != list(header):
          raise DataFormatError(path, line, f"header is {columns}, expected {list(header)}")
        continue
      if len(row) != len(columns):
        raise DataFormatError(path, line,
                              f"bad CSV row: expected {len(columns)} fields, found {len(row)}")
      records.append(Record(path, line, dict(zip(columns, row))))
  except csv.Error as error:
    raise DataFormatError(path, reader.line_num, f"bad CSV row: {error}") from None
  if columns is None:
    raise DataFormatError(path, None, "empty CSV file (no header)")
  return records


def read_lines(path: str | os.PathLike[str]) -> list[Record]:
  """Non-blank lines, stripped (fold files listing one id per line)."""
  path = pathlib.Path(path)
  return [Record(path, number, line.strip())
          for number, line in enumerate(read_text(path).splitlines(), start=1)
          if line.strip()]
