"""Errors raised while reading benchmark files.

Every loader reports bad input with the file and, where it has one, the line
number, so a user can open the exact spot in an editor (`path:line: message`)
instead of guessing which of 10,000 records broke the run.
"""

from __future__ import annotations

import os


class DataFormatError(ValueError):
  """A benchmark file exists but its content is not what the loader expects.

  Attributes:
    path: the file, as given to the reader.
    line: 1-based line where the offending record starts, or None when the
      problem concerns the whole file.
    message: what is wrong, without the location prefix.
  """

  def __init__(self, path: str | os.PathLike[str], line: int | None,
               message: str):
    self.path = str(path)
    self.line = line
    self.message = message
    location = self.path if line is None else f"{self.path}:{line}"
    super().__init__(f"{location}: {message}")


class MissingDataError(FileNotFoundError):
  """A benchmark file is absent from the data directory.

  A subclass of FileNotFoundError so callers catching the builtin still work;
  the message says how to get the file (download command or env variable).
  """

  def __init__(self, path: str | os.PathLike[str], hint: str = ""):
    self.path = str(path)
    self.line = None
    message = f"{self.path}: file not found"
    if hint:
      message += f"; {hint}"
    super().__init__(message)
