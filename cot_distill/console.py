"""What a person sees on the terminal: quiet libraries, one-paragraph errors.

TensorFlow, XLA and absl print start-up notices that say nothing about the
user's run (oneDNN notices, "Could not find cuda drivers", `cuInit` errors,
"Unable to initialize backend 'tpu'", SeqIO's cache-rate warnings, Orbax's
read-only notice when evaluating). Command-line entry points call
`configure_logging` first; unless `--verbose`, it hides that chatter and
keeps everything else. Library code never calls this module: it is for
entry points only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from typing import Callable, Iterator

from cot_distill import errors

# Log messages (substrings) that are noise for a CLI user.
_CHATTER = (
    "not cached so using number of input examples",   # seqio mixture rates
    "Given directory is read only",                    # orbax, evaluation
    "CheckpointManagerOptions.read_only=True",         # orbax, evaluation
    "Unable to initialize backend",                    # jax, per platform
    "oneDNN custom operations",
    "Could not find cuda drivers",
)
_QUIET_LOGGERS = {"jax._src.xla_bridge": logging.WARNING,
                  "absl": logging.WARNING}


class _ChatterFilter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    message = record.getMessage()
    return not any(text in message for text in _CHATTER)


def configure_logging(verbose: bool = False) -> None:
  """Root logging for a command; quiets library chatter unless verbose."""
  # Like basicConfig: a host program's (or test runner's) handlers are kept.
  logging.basicConfig(
      format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
  logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
  if verbose:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  for name, level in _QUIET_LOGGERS.items():
    logging.getLogger(name).setLevel(level)
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, _ChatterFilter) for f in handler.filters):
      handler.addFilter(_ChatterFilter())


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
  """Sends file descriptor 2 to /dev/null (C++ libraries write there directly)."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def load_native_libraries_quietly(verbose: bool = False) -> None:
  """Imports TensorFlow and JAX with their C++ start-up notices hidden.

  absl's C++ logger prints TensorFlow's and XLA's start-up lines straight to
  file descriptor 2 before any log level applies, so the only way to keep a
  terminal clean is to import them once, early, with that descriptor closed
  (an import error is raised after it is restored). JAX's backends are not
  started here: a multi-host run must call jax.distributed.initialize, and
  the CPU runtime must choose its dispatch mode, before they start.
  """
  if verbose:
    return
  with _native_stderr_silenced():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    import jax  # pylint: disable=g-import-not-at-top,unused-import


def report_backends() -> None:
  """Starts JAX's backends if needed and says once what they are."""
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX: %s backend, %d device(s) in %d process(es)",
               jax.default_backend(), jax.device_count(), jax.process_count())


def user_error_message(error: BaseException) -> str | None:
  """The one-paragraph message for a user mistake, else None (a bug)."""
  from cot_distill.data import errors as data_errors  # pylint: disable=g-import-not-at-top
  if isinstance(error, (errors.UserError, data_errors.DataFormatError,
                        data_errors.MissingDataError)):
    return str(error)
  gin_error = _gin_error_message(error)
  if gin_error:
    return gin_error
  return None


def _gin_error_message(error: BaseException) -> str | None:
  """gin's parse and binding errors already name the file and line."""
  if "gin" not in sys.modules:
    return None
  message = str(error).strip()
  if isinstance(error, SyntaxError) and ".gin" in message:
    return f"gin syntax error: {message}"
  if isinstance(error, OSError) and "Searched config paths" in message:
    return f"gin file not found: {message}"
  if isinstance(error, (ValueError, KeyError, TypeError)) and (
      'In file "' in message or "Required bindings" in message
      or "No configurable matching" in message
      or "%gin.REQUIRED" in message or "macro.value" in message):
    return f"gin configuration: {message}"
  return None


def run_reporting_user_errors(function: Callable[[], int], *, debug: bool = False) -> int:
  """Runs an entry point; user mistakes print one paragraph and return 2."""
  try:
    return int(function() or 0)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except Exception as error:  # pylint: disable=broad-except
    message = user_error_message(error)
    if message is None:
      raise
    if debug:
      traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    if not debug:
      print("(run with --debug for the traceback)", file=sys.stderr)
    return errors.USER_ERROR_EXIT_CODE
