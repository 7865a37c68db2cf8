"""What a check reports: one failing step, where it is and why it fails."""

from __future__ import annotations

import dataclasses

# Drop reasons the verifier gives (the annotation filter stores them).
ARITHMETIC_ERROR = "arithmetic_error"
STEP_INCONSISTENT = "step_inconsistent"
HINT_PARROTING = "hint_parroting"
REASONS = (ARITHMETIC_ERROR, STEP_INCONSISTENT, HINT_PARROTING)


@dataclasses.dataclass(frozen=True)
class Finding:
  """One failing step.

  Attributes:
    position: character offset of the step in the chain (the verdict names
      the earliest finding: the first step that goes wrong).
    reason: one of REASONS.
    step: the step as written (one line, cut short).
    detail: what the check recomputed ("900 + 135 is 1035, not 990").
  """

  position: int
  reason: str
  step: str
  detail: str
