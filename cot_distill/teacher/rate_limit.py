"""Client-side rate limiting: token buckets for requests/min and tokens/min.

Hosted APIs enforce both limits and answer 429 when either is exceeded;
staying under them ourselves wastes no attempts. Each bucket holds at most
one second's worth of its per-minute budget, so bursts stay short and a
limit is honoured over any window of a second or more (a bucket that held a
whole minute's budget would let a restarted run fire 60 s of requests at
once). A 429 with Retry-After pauses every caller, not just the one that saw it.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
  """A leaky token bucket; `acquire` waits until `amount` can be taken.

  Callers are served in arrival order (one lock), so a large request cannot
  be starved by a stream of small ones. A request larger than the capacity
  waits for a full bucket and drives the level negative (debt), which later
  callers repay by waiting.
  """

  def __init__(self, per_minute: float, *, clock=time.monotonic):
    if per_minute <= 0:
      raise ValueError(f"rate must be positive, got {per_minute}/min")
    self.rate_per_second = per_minute / 60.0
    self.capacity = max(1.0, self.rate_per_second)
    self._clock = clock
    self._level = self.capacity
    self._updated = clock()
    self._lock = asyncio.Lock()

  def _refill(self) -> None:
    now = self._clock()
    self._level = min(self.capacity,
                      self._level + (now - self._updated) * self.rate_per_second)
    self._updated = now

  async def acquire(self, amount: float = 1.0) -> None:
    async with self._lock:
      needed = min(amount, self.capacity)
      while True:
        self._refill()
        if self._level >= needed - 1e-9:  # Float residue must not cost a sleep.
          self._level -= amount
          return
        await asyncio.sleep((needed - self._level) / self.rate_per_second)

  def refund(self, amount: float) -> None:
    """Gives back an over-estimate (negative `amount` charges extra)."""
    self._refill()
    self._level = min(self.capacity, self._level + amount)


class RateLimiter:
  """Requests/min and tokens/min limits plus a shared pause after a 429.

  Either limit may be None (unlimited). Token costs are estimated before a
  request (prompt characters / 4 + max_tokens x n, as providers count
  max_tokens against the budget) and corrected with the reported usage.
  """

  def __init__(self, requests_per_minute: float | None = None,
               tokens_per_minute: float | None = None, *, clock=time.monotonic):
    self._clock = clock
    self.requests = TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
    self.tokens = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None
    self._paused_until = 0.0

  async def acquire(self, estimated_tokens: float) -> None:
    while True:
      pause = self._paused_until - self._clock()
      if pause <= 0:
        break
      await asyncio.sleep(pause)
    if self.requests is not None:
      await self.requests.acquire(1.0)
    if self.tokens is not None:
      await self.tokens.acquire(estimated_tokens)

  def settle(self, estimated_tokens: float, actual_tokens: float) -> None:
    """Corrects the token bucket once the response reports real usage."""
    if self.tokens is not None:
      self.tokens.refund(estimated_tokens - actual_tokens)

  def pause(self, seconds: float) -> None:
    """Holds every caller for `seconds` (the server asked us to back off)."""
    self._paused_until = max(self._paused_until, self._clock() + seconds)
