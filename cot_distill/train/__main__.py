"""`python -m cot_distill.train --gin_file=... --gin.MACRO=...` (T5X-style)."""

import sys

from cot_distill.commands import train as train_command

if __name__ == "__main__":
  sys.exit(train_command.main())
