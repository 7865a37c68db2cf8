"""The one exception type for mistakes a user can fix.

Command-line entry points (`cot-distill ...`, `python -m cot_distill.train`)
turn a `UserError` into one paragraph on stderr and exit status 2, without a
traceback (`--debug` shows it). Library code raises it, or a subclass, when
the cause is the user's input (a name that does not exist, a file in the
wrong format, a configuration that contradicts a run already on disk), and
lets genuine bugs surface as ordinary exceptions.
"""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
  """A mistake in the user's input, explained well enough to fix it.

  The message is the whole explanation: what is wrong, where (file, line,
  field, flag) and what to do instead.
  """


class ConfigurationError(UserError, ValueError):
  """A configuration that cannot work (batch size vs mesh, lengths vs data).

  Also a ValueError, so library callers that catch ValueError keep working.
  """
