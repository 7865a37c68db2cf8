"""Adaptive request concurrency (AIMD) and the circuit breaker.

Why adaptive: a fixed number of requests in flight fits neither kind of
teacher. A hosted API or vLLM batches requests, so 16-64 in flight is what
makes it fast; llama.cpp-style servers compute one request at a time, so 16
in flight means 15 wait in the server's queue, their time-out clock runs
while they wait, and they are retried to the back of the queue while the
server computes answers nobody collects. `AdaptiveLimit` finds the level the
server sustains, as TCP finds a link's capacity:

  * slow start: the limit starts small and grows by one per on-time answer
    (doubling each round trip) until the first sign of congestion;
  * additive increase: afterwards it grows by 1/limit per on-time answer
    (one per round trip);
  * multiplicative decrease: a time-out, a 429 or a 503 halves it; latency
    that has grown past `tolerance` x the fastest recent latency (+ `slack_s`,
    so scheduler jitter on fast local servers does not count) means requests
    are queueing at the server, and takes it down by 10%;
  * at most one decrease per round trip: requests sent before the last
    decrease report old news and do not decrease it again.

`CircuitBreaker` stops a run that cannot succeed: an authentication or
permission error opens it at once (every further request would fail the
same way), and `threshold` consecutive failed attempts of one class with no
success in between (a dead port, a server that answers HTML, 500s, a hung
server) open it too, instead of spending every question's attempts on them.
"""

from __future__ import annotations

import asyncio
import collections
import time

# Failure classes that stop a run at their first occurrence.
STOP_AT_ONCE = frozenset({"auth"})
# Rate limiting is the server asking us to slow down (AIMD and Retry-After
# handle it), not evidence that the run cannot succeed.
NOT_COUNTED = frozenset({"rate_limited"})


class AdaptiveLimit:
  """How many requests may be in flight now; `acquire`/`release` around each.

  Attributes:
    limit: the current (fractional) limit; `int(limit)` requests may be in
      flight, always at least `minimum`.
    maximum: the user's --concurrency.
    decreases: how many times congestion lowered the limit (for the log).
  """

  def __init__(self, maximum: int, *, initial: int = 4, minimum: int = 1,
               tolerance: float = 2.0, slack_s: float = 0.05, adaptive: bool = True,
               clock=time.monotonic):
    if maximum < 1:
      raise ValueError(f"concurrency must be at least 1, got {maximum}")
    self.maximum = maximum
    self.minimum = min(minimum, maximum)
    self.adaptive = adaptive
    self.limit = float(min(maximum, initial) if adaptive else maximum)
    self.tolerance = tolerance
    self.slack_s = slack_s
    self.in_flight = 0
    self.decreases = 0
    self._clock = clock
    self._slow_start = True
    self._epoch = 0  # Bumped by every decrease.
    self._fastest: float | None = None
    self._waiters: collections.deque[asyncio.Future] = collections.deque()

  @property
  def allowed(self) -> int:
    return max(self.minimum, int(self.limit))

  async def acquire(self) -> int:
    """Waits for a free slot (first come, first served); returns a ticket
    to pass to `on_success` / `on_congestion`."""
    if self.in_flight < self.allowed and not self._waiters:
      self.in_flight += 1
      return self._epoch
    future = asyncio.get_running_loop().create_future()
    self._waiters.append(future)
    try:
      await future
    except BaseException:
      if future.done() and not future.cancelled():
        self.release()  # Handed a slot we will not use: pass it on.
      else:
        self._waiters.remove(future)
      raise
    return self._epoch

  def release(self) -> None:
    self.in_flight -= 1
    self._wake()

  def _wake(self) -> None:
    # The slot is taken on the waiter's behalf when it is handed over, so a
    # second wake before the waiter runs cannot hand out the same slot.
    while self._waiters and self.in_flight < self.allowed:
      future = self._waiters.popleft()
      if not future.done():
        self.in_flight += 1
        future.set_result(None)

  def on_success(self, ticket: int, latency_s: float) -> None:
    """An answer arrived after `latency_s`."""
    if not self.adaptive:
      return
    if self._fastest is None or latency_s < self._fastest:
      self._fastest = latency_s
    else:
      # Drift up slowly, so one lucky fast answer does not set the bar forever.
      self._fastest += (latency_s - self._fastest) * 0.01
    if latency_s <= self.tolerance * self._fastest + self.slack_s:
      step = 1.0 if self._slow_start else 1.0 / max(1.0, self.limit)
      self.limit = min(float(self.maximum), self.limit + step)
      self._wake()
    else:
      self._decrease(ticket, 0.9)

  def on_congestion(self, ticket: int) -> None:
    """A time-out, a 429 or a 503: the server is overloaded."""
    if self.adaptive:
      self._decrease(ticket, 0.5)

  def _decrease(self, ticket: int, factor: float) -> None:
    self._slow_start = False
    if ticket != self._epoch:
      return  # Sent before the last decrease: already accounted for.
    self._epoch += 1
    self.decreases += 1
    self.limit = max(float(self.minimum), self.limit * factor)


class CircuitOpenError(RuntimeError):
  """The run was stopped: further requests cannot succeed.

  Attributes:
    failure_class: e.g. "auth", "connection", "timeout", "server_error".
    message: the last server message (API key scrubbed).
    count: consecutive failures of that class when it opened.
  """

  def __init__(self, failure_class: str, message: str, count: int):
    self.failure_class = failure_class
    self.message = message
    self.count = count
    if failure_class in STOP_AT_ONCE:
      text = f"stopped at the first {failure_class} error: {message}"
    else:
      text = (f"stopped after {count} consecutive {failure_class} failures; "
              f"last: {message}")
    super().__init__(text)


class CircuitBreaker:
  """Counts consecutive failed attempts per class; see the module docstring."""

  def __init__(self, threshold: int = 5):
    if threshold < 1:
      raise ValueError(f"the failure threshold must be at least 1, got {threshold}")
    self.threshold = threshold
    self.open: CircuitOpenError | None = None
    self._class: str | None = None
    self._count = 0

  def check(self) -> None:
    """Raises the stored `CircuitOpenError` once the breaker is open."""
    if self.open is not None:
      raise self.open

  def success(self) -> None:
    self._class, self._count = None, 0

  def failure(self, failure_class: str, message: str) -> None:
    """Records a failed attempt; raises `CircuitOpenError` when it opens."""
    if self.open is not None:
      raise self.open
    if failure_class in NOT_COUNTED:
      return
    if failure_class == self._class:
      self._count += 1
    else:
      self._class, self._count = failure_class, 1
    if failure_class in STOP_AT_ONCE or self._count >= self.threshold:
      self.open = CircuitOpenError(failure_class, message, self._count)
      raise self.open
