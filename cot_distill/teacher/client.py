"""An asynchronous client for any OpenAI-compatible completion endpoint.

Works with vLLM, SGLang, TGI, llama.cpp's server, hosted APIs and the local
`teacher serve`: it only uses `POST {base}/completions` and
`POST {base}/chat/completions` with the standard fields. Built on
httpx (connection pooling, HTTP/1.1 keep-alive; see `_connection_pools`).

Reliability policy, per request:
  * at most `max_attempts` attempts, each bounded by `request_timeout_s`
    (the whole attempt, not just one socket read);
  * retried: 429 (waiting at least its Retry-After / retry-after-ms, and
    pausing all callers), 408, 409, 5xx, timeouts, connection errors, and a
    200 whose body is not a valid completion (not JSON, no choices);
  * not retried: other 4xx (bad request, bad key, unknown model): retrying
    cannot fix them;
  * between attempts, exponential backoff with full jitter
    (uniform(0, min(backoff_cap_s, backoff_base_s * 2**k))), so many workers
    hitting one failure do not come back in lockstep;
  * when attempts run out, `TeacherRequestError` carries the last reason and
    its failure class (`FAILURE_CLASSES`), which the runner records as a
    "failed" CoT.

Across requests (`concurrency.py`): the number in flight adapts to the
server (AIMD: grows while latency stays flat, halves on time-outs, 429s and
503s), and a circuit breaker stops the run at the first refused key or after
a few consecutive failures of one class. A server that answers n > 1 with
one choice is noticed on its first such response (`NIgnoredError`,
`ignores_n`), and a choice longer than `response_char_cap(max_tokens)` is cut
and flagged `oversized` before anything stores it.

The API key is read from an environment variable by the caller and only ever
placed in the Authorization header; error messages are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import math
import random
import ssl
import sys
import time
from typing import Any, Sequence

import httpx

from cot_distill.teacher import cache as cache_lib
from cot_distill.teacher import concurrency as concurrency_lib
from cot_distill.teacher import rate_limit

logger = logging.getLogger(__name__)

COMPLETION = "completion"
CHAT = "chat"
_CONNECTIONS_PER_POOL = 4
_MAX_BODY_BYTES = 64 << 20


def _skip_missing_sniffio() -> None:
  """Makes a failed `import sniffio` instant when sniffio is not installed.

  httpcore runs `import sniffio` on every request to detect trio; without the
  package each attempt searches sys.path on disk again (about a third of the
  client's CPU time). A None entry in sys.modules makes the import fail at
  once, which httpcore already treats as "asyncio". Nothing changes when
  sniffio is installed.
  """
  if "sniffio" in sys.modules:
    return
  try:
    import sniffio  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    sys.modules["sniffio"] = None


class TeacherRequestError(RuntimeError):
  """A request that failed for good (non-retryable or out of attempts).

  Attributes:
    reason: the last failure, API key scrubbed ("http 500: ...").
    attempts: attempts made.
    failure_class: the kind of failure (see `FAILURE_CLASSES`).
  """

  def __init__(self, reason: str, attempts: int, failure_class: str = "bad_request"):
    super().__init__(reason)
    self.reason = reason
    self.attempts = attempts
    self.failure_class = failure_class


class NIgnoredError(RuntimeError):
  """The server answered a request for n > 1 choices with one choice: it
  ignores `n`. The client remembers it (`TeacherClient.ignores_n`); callers
  send n separate requests instead."""


class ModelNotServedError(ValueError):
  """GET /v1/models lists models and the configured one is not among them."""


class _Retryable(Exception):
  def __init__(self, reason: str, failure_class: str, retry_after: float | None = None,
               congestion: bool = False):
    super().__init__(reason)
    self.reason = reason
    self.failure_class = failure_class
    self.retry_after = retry_after
    self.congestion = congestion


class _NIgnored(Exception):
  def __init__(self, response: "TeacherResponse"):
    super().__init__("n ignored")
    self.response = response


# What went wrong, as the runner's summary and circuit breaker name it.
FAILURE_CLASSES = {
    "auth": "the server refused the API key (401/403)",
    "bad_request": "the server rejected the request (4xx): unknown model, prompt too long, ...",
    "rate_limited": "429 Too Many Requests until attempts ran out",
    "server_error": "5xx responses",
    "timeout": "no complete response within --timeout",
    "connection": "could not connect (nothing listening, DNS, TLS, reset)",
    "not_json": "a response body that is not JSON (an HTML page, a proxy error, cut-off JSON)",
    "empty_choices": "a JSON response without choices",
    "malformed_response": "a JSON response of the wrong shape",
    "oversized_response": "a response body larger than the cap derived from max_tokens",
}


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Decoding settings sent with every request (and part of the cache key)."""

  temperature: float = 0.7
  top_p: float = 1.0
  max_tokens: int = 256
  stop: tuple[str, ...] | None = None
  seed: int | None = None
  n: int = 1

  def to_request(self) -> dict[str, Any]:
    fields = {"temperature": self.temperature, "top_p": self.top_p,
              "max_tokens": self.max_tokens, "n": self.n}
    if self.stop:
      fields["stop"] = list(self.stop)
    if self.seed is not None:
      fields["seed"] = self.seed
    return fields


@dataclasses.dataclass(frozen=True)
class Choice:
  text: str
  finish_reason: str | None
  index: int
  oversized: bool = False  # Cut to the client's cap (see `response_char_cap`).


@dataclasses.dataclass(frozen=True)
class TeacherResponse:
  """A parsed response: choices in index order and the reported usage."""

  choices: tuple[Choice, ...]
  prompt_tokens: int
  completion_tokens: int
  cached: bool = False
  attempts: int = 0

  def to_json(self) -> dict[str, Any]:
    choices = []
    for c in self.choices:
      choice = {"text": c.text, "finish_reason": c.finish_reason, "index": c.index}
      if c.oversized:
        choice["oversized"] = True
      choices.append(choice)
    return {"choices": choices,
            "usage": {"prompt_tokens": self.prompt_tokens,
                      "completion_tokens": self.completion_tokens}}

  @classmethod
  def from_json(cls, data: dict[str, Any], **kwargs) -> "TeacherResponse":
    return cls(tuple(Choice(**c) for c in data["choices"]),
               data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"],
               **kwargs)


@dataclasses.dataclass
class ClientStats:
  """Counters for the manifest and the progress bar."""

  requests_sent: int = 0
  cache_hits: int = 0
  retries: int = 0
  failures: int = 0
  prompt_tokens: int = 0  # Billed in this session (cache hits excluded).
  completion_tokens: int = 0
  reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # Failed attempts by class.
  oversized: int = 0  # Choices cut to the response cap.


def normalize_base_url(url: str) -> str:
  """'http://h:8000', 'http://h:8000/' and 'http://h:8000/v1' -> '.../v1'."""
  url = url.rstrip("/")
  return url if url.endswith("/v1") else url + "/v1"


def parse_retry_after(headers: httpx.Headers) -> float | None:
  """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or date)."""
  value = headers.get("retry-after-ms")
  if value:
    try:
      return max(0.0, float(value) / 1000.0)
    except ValueError:
      pass
  value = headers.get("retry-after")
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  return max(0.0, when.timestamp() - time.time())


def estimate_tokens(prompt: str | Sequence[dict[str, str]], params: SamplingParams) -> int:
  """Pre-request token estimate for the tokens/min bucket (chars/4 + budget)."""
  if isinstance(prompt, str):
    characters = len(prompt)
  else:
    characters = sum(len(m.get("content", "")) for m in prompt)
  return math.ceil(characters / 4) + params.max_tokens * params.n


def _connection_pools(count: int, https: bool) -> list[httpx.AsyncHTTPTransport]:
  """`count` httpx transports of `_CONNECTIONS_PER_POOL` keep-alive connections.

  Why transports and not `httpx.AsyncClient`: the client layer (URL merging,
  cookies, auth flow, redirects, event hooks) cost a quarter of the CPU per
  request and we use none of it; `AsyncHTTPTransport.handle_async_request`
  is httpx's public API for exactly this. Why several small pools: httpcore
  scans its whole pool for every queued request, which costs O(pool size**2)
  CPU per request (12 ms of CPU per request with one pool of 64 connections,
  under 1 ms with pools of 4).
  """
  # One verifying TLS context shared by all pools (each would load the CA
  # bundle, ~25 ms). A plain-http endpoint never uses TLS, so it gets none
  # of that cost: `verify=False` there only skips building the CA store.
  tls = ssl.create_default_context() if https else False
  limits = httpx.Limits(max_connections=_CONNECTIONS_PER_POOL,
                        max_keepalive_connections=_CONNECTIONS_PER_POOL)
  return [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(count)]


def response_char_cap(max_tokens: int, chars_per_token: float) -> int:
  """The most characters one choice may have for a `max_tokens` budget.

  A token is about 4 characters of English; `chars_per_token` (16 by
  default) leaves room for long tokens, yet a runaway or misbehaving server
  (a 20 MB completion for max_tokens 256) is cut long before it fills the
  records and the cache.
  """
  return int(max(1, max_tokens) * chars_per_token) + 256


class TeacherClient:
  """Sends completion requests with caching, rate limiting, retries,
  adaptive concurrency and a circuit breaker.

  Use inside `async with TeacherClient(...) as client:`.

  Attributes:
    stats: counters for the manifest and the progress line.
    concurrency: the `AdaptiveLimit` (its `allowed` is the current limit).
    breaker: the `CircuitBreaker`; once open, every call raises
      `concurrency.CircuitOpenError`.
    ignores_n: True once the server answered n > 1 with one choice.
  """

  def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
               concurrency: int = 16, requests_per_minute: float | None = None,
               tokens_per_minute: float | None = None,
               request_timeout_s: float = 60.0, max_attempts: int = 6,
               backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0,
               cache: cache_lib.ResponseCache | None = None,
               rng: random.Random | None = None, adaptive_concurrency: bool = True,
               initial_concurrency: int = 4, max_consecutive_failures: int = 5,
               chars_per_token_cap: float = 16.0):
    self.base_url = normalize_base_url(base_url)
    self.model = model
    self.request_timeout_s = request_timeout_s
    self.max_attempts = max_attempts
    self.backoff_base_s = backoff_base_s
    self.backoff_cap_s = backoff_cap_s
    self.chars_per_token_cap = chars_per_token_cap
    self.cache = cache
    self.stats = ClientStats()
    self.limiter = rate_limit.RateLimiter(requests_per_minute, tokens_per_minute)
    self.concurrency = concurrency_lib.AdaptiveLimit(
        concurrency, initial=initial_concurrency, adaptive=adaptive_concurrency)
    self.breaker = concurrency_lib.CircuitBreaker(max_consecutive_failures)
    self.ignores_n = False
    self._api_key = api_key or None
    self._rng = rng or random.Random()
    _skip_missing_sniffio()
    # httpx logs every request at INFO; one line per request drowns the
    # progress bar. Only quieted when nobody chose a level for it.
    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
      httpx_logger.setLevel(logging.WARNING)
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": "cot-distill-teacher-client"}
    if self._api_key:
      headers["Authorization"] = f"Bearer {self._api_key}"
    self._headers = httpx.Headers(headers)
    shard_count = max(1, math.ceil(concurrency / _CONNECTIONS_PER_POOL))
    self._pools = _connection_pools(shard_count, self.base_url.startswith("https://"))
    self._pool_load = [0] * shard_count
    # Absolute URLs, parsed once.
    self._urls = {COMPLETION: httpx.URL(self.base_url + "/completions"),
                  CHAT: httpx.URL(self.base_url + "/chat/completions")}

  async def __aenter__(self) -> "TeacherClient":
    return self

  async def __aexit__(self, *exc_info) -> None:
    await self.aclose()

  async def aclose(self) -> None:
    for pool in self._pools:
      await pool.aclose()

  def _scrub(self, text: str) -> str:
    if self._api_key:
      text = text.replace(self._api_key, "***")
    return text

  async def check_model(self) -> list[str] | None:
    """Asks `GET {base}/models` which models the server offers.

    Returns the served ids, or None when the server does not offer the list
    (404, not JSON, no answer). Raises `ModelNotServedError` naming the
    served models when ours is not among them (many servers echo any model
    name back, so a typo would otherwise go unnoticed), and
    `CircuitOpenError` for a refused key, before any question is sent.
    """
    request = httpx.Request("GET", httpx.URL(self.base_url + "/models"), headers=self._headers)
    try:
      async with asyncio.timeout(min(self.request_timeout_s, 30.0)):
        response = await self._pools[0].handle_async_request(request)
        try:
          body = await response.aread()
        finally:
          await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
      logger.debug("GET %s/models: no answer within the timeout", self.base_url)
      return None
    except httpx.TransportError as error:
      logger.debug("GET %s/models: %s", self.base_url, error)
      return None
    if response.status_code in (401, 403):
      message = self._scrub(f"http {response.status_code}: "
                            f"{body[:300].decode('utf-8', 'replace')}".replace("\n", " "))
      self.breaker.failure("auth", message)  # Raises: auth stops at once.
    if response.status_code != 200:
      return None
    try:
      served = [str(entry["id"]) for entry in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
      return None
    if served and self.model not in served:
      shown = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
      raise ModelNotServedError(
          f"model {self.model!r} is not served at {self.base_url} (GET /models lists: "
          f"{shown}); pass one of those to --model")
    return served

  async def generate(self, kind: str, prompt: str | Sequence[dict[str, str]],
                     params: SamplingParams) -> TeacherResponse:
    """One request (`kind` COMPLETION with a prompt string, or CHAT with
    messages); served from the cache when the same request was answered.

    Raises:
      TeacherRequestError: the request failed for good.
      NIgnoredError: asked for n > 1 choices, the server gave one.
      CircuitOpenError: the run must stop (see `concurrency.CircuitBreaker`).
    """
    if kind not in (COMPLETION, CHAT):
      raise ValueError(f"unknown endpoint kind {kind!r}")
    self.breaker.check()
    prompt_field = "prompt" if kind == COMPLETION else "messages"
    body = {"model": self.model, prompt_field: prompt, **params.to_request()}
    # The canonical JSON is both what is sent and what the cache key hashes.
    payload = json.dumps(body, sort_keys=True, ensure_ascii=False,
                         separators=(",", ":")).encode("utf-8")
    key = None
    if self.cache is not None:
      key = cache_lib.cache_key(kind, payload, endpoint=self.base_url)
      hit = self.cache.get(key)
      if hit is not None:
        self.stats.cache_hits += 1
        return TeacherResponse.from_json(hit, cached=True)
    response = await self._send_with_retries(kind, payload, prompt, params)
    if self.cache is not None:
      self.cache.put(key, response.to_json())
    return response

  def _take_pool(self) -> int:
    pool = min(range(len(self._pools)), key=self._pool_load.__getitem__)
    self._pool_load[pool] += 1
    return pool

  async def _send_with_retries(self, kind, payload, prompt, params) -> TeacherResponse:
    url = self._urls[kind]
    estimate = estimate_tokens(prompt, params)
    cap = response_char_cap(params.max_tokens, self.chars_per_token_cap)
    reason = "no attempt made"
    for attempt in range(1, self.max_attempts + 1):
      self.breaker.check()
      # The slot first, then the rate limits: a caller woken for a slot
      # still honours a pause another caller's 429 set meanwhile.
      ticket = await self.concurrency.acquire()
      try:
        if params.n > 1 and self.ignores_n:
          # Learnt while this request waited for its slot: do not pay for it.
          raise NIgnoredError(f"asked for n={params.n} choices; the server ignores n")
        await self.limiter.acquire(estimate)
      except BaseException:
        self.concurrency.release()
        raise
      pool = self._take_pool()
      self.stats.requests_sent += 1
      started = time.monotonic()
      try:
        response = await self._attempt(pool, url, payload, kind, params.n, cap)
      except _Retryable as error:
        reason = self._scrub(error.reason)
        self._count_failure(error.failure_class)
        self.limiter.settle(estimate, 0)
        if error.congestion:
          self.concurrency.on_congestion(ticket)
        self.breaker.failure(error.failure_class, reason)
        if attempt == self.max_attempts:
          self.stats.failures += 1
          raise TeacherRequestError(f"{reason} (gave up after {self.max_attempts} attempts)",
                                    self.max_attempts, error.failure_class) from None
        self.stats.retries += 1
        delay = self._rng.uniform(0, min(self.backoff_cap_s,
                                         self.backoff_base_s * 2 ** (attempt - 1)))
        if error.retry_after is not None:
          self.limiter.pause(error.retry_after)
          delay = max(delay, error.retry_after)
        logger.debug("attempt %d failed (%s); retrying in %.2fs", attempt, reason, delay)
        # The slot is free while we wait (released below before sleeping).
        self._release(pool)
        pool = None
        await asyncio.sleep(delay)
        continue
      except TeacherRequestError as error:
        reason = self._scrub(error.reason)
        self._count_failure(error.failure_class)
        self.limiter.settle(estimate, 0)
        self.stats.failures += 1
        self.breaker.failure(error.failure_class, reason)
        raise TeacherRequestError(reason, attempt, error.failure_class) from None
      except _NIgnored as ignored:
        self._note_response(ticket, started, estimate, ignored.response)
        if not self.ignores_n:
          self.ignores_n = True
          logger.warning("the teacher at %s answered n=%d with one choice: it ignores `n`; "
                         "sending %d separate requests per question from now on",
                         self.base_url, params.n, params.n)
        raise NIgnoredError(f"asked for n={params.n} choices, got 1") from None
      finally:
        if pool is not None:
          self._release(pool)
      self._note_response(ticket, started, estimate, response)
      return dataclasses.replace(response, attempts=attempt)
    raise AssertionError("unreachable")  # The loop returns or raises.

  def _release(self, pool: int) -> None:
    self._pool_load[pool] -= 1
    self.concurrency.release()

  def _count_failure(self, failure_class: str) -> None:
    self.stats.reasons[failure_class] = self.stats.reasons.get(failure_class, 0) + 1

  def _note_response(self, ticket, started, estimate, response: "TeacherResponse") -> None:
    self.concurrency.on_success(ticket, time.monotonic() - started)
    self.breaker.success()
    self.limiter.settle(estimate, response.prompt_tokens + response.completion_tokens)
    self.stats.prompt_tokens += response.prompt_tokens
    self.stats.completion_tokens += response.completion_tokens
    self.stats.oversized += sum(c.oversized for c in response.choices)

  async def _attempt(self, pool: int, url: httpx.URL, payload: bytes, kind: str, n: int,
                     cap: int) -> TeacherResponse:
    # No per-operation httpx timeouts: the asyncio deadline bounds the whole
    # attempt (connect, send, wait, read), which is the timeout that matters.
    request = httpx.Request("POST", url, headers=self._headers, content=payload)
    # Bodies up to 64 MiB are read, parsed and their choices cut to `cap`
    # (flagged oversized); only a larger one fails unread. (JSON may spell a
    # character as \uXXXX, 6 bytes: a body past 6 * n * cap + 1 MiB surely
    # holds more than n capped choices.)
    body_limit = max(_MAX_BODY_BYTES, 6 * n * cap + (1 << 20))
    try:
      async with asyncio.timeout(self.request_timeout_s):
        response = await self._pools[pool].handle_async_request(request)
        try:
          content = await _read_bounded(response, body_limit)
        finally:
          await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
      raise _Retryable(f"timeout: no complete response within {self.request_timeout_s:g}s",
                       "timeout", congestion=True) from None
    except httpx.TransportError as error:
      raise _Retryable(f"connection error: {type(error).__name__}: {error}",
                       "connection") from None
    if content is None:
      raise TeacherRequestError(
          f"oversized response: body over {body_limit} bytes for n={n} (cap "
          f"{cap} characters per choice)", 1, "oversized_response")
    status = response.status_code
    if status != 200:
      snippet = content[:300].decode("utf-8", "replace").replace("\n", " ")
      message = f"http {status}: {snippet}"
      retry_after = parse_retry_after(response.headers)
      if status in (401, 403):
        raise TeacherRequestError(message, 1, "auth")
      if status == 429:
        raise _Retryable(message, "rate_limited", retry_after, congestion=True)
      if status == 408:
        raise _Retryable(message, "timeout", retry_after, congestion=True)
      if status == 409 or status >= 500:
        raise _Retryable(message, "server_error", retry_after, congestion=status == 503)
      raise TeacherRequestError(message, 1, "bad_request")
    try:
      data = json.loads(content)
    except ValueError as error:
      content_type = response.headers.get("content-type", "no content type")
      snippet = content[:120].decode("utf-8", "replace").replace("\n", " ")
      raise _Retryable(f"not json: {content_type} body ({error.msg}): {snippet}",
                       "not_json") from None
    try:
      return _parse_response(data, kind, n, cap)
    except _NIgnored:
      raise
    except _EmptyChoices as error:
      raise _Retryable(f"empty choices: {error}"[:300], "empty_choices") from None
    except (ValueError, KeyError, TypeError, IndexError) as error:
      raise _Retryable(f"malformed response: {type(error).__name__}: {error}"[:300],
                       "malformed_response") from None


async def _read_bounded(response: httpx.Response, limit: int) -> bytes | None:
  """The body, or None once it exceeds `limit` bytes (the rest is not read)."""
  length = response.headers.get("content-length")
  if length and length.isdigit() and int(length) > limit:
    return None
  chunks, size = [], 0
  async for chunk in response.aiter_raw():
    size += len(chunk)
    if size > limit:
      return None
    chunks.append(chunk)
  return b"".join(chunks)


class _EmptyChoices(ValueError):
  pass


def _parse_response(data: Any, kind: str, n: int, cap: int) -> TeacherResponse:
  if not isinstance(data, dict):
    raise TypeError(f"response is a JSON {type(data).__name__}, not an object")
  raw_choices = data.get("choices")
  if raw_choices is None or (isinstance(raw_choices, list) and not raw_choices):
    raise _EmptyChoices(f"response has no choices: {json.dumps(data)[:200]}")
  if not isinstance(raw_choices, list):
    raise TypeError(f"choices is a {type(raw_choices).__name__}, not a list")
  choices = []
  for position, raw in enumerate(raw_choices):
    text = raw["text"] if kind == COMPLETION else raw["message"]["content"]
    if text is None:
      text = ""
    if not isinstance(text, str):
      raise TypeError(f"choice {position} text is {type(text).__name__}, not str")
    oversized = len(text) > cap
    choices.append(Choice(text=text[:cap] if oversized else text,
                          finish_reason=raw.get("finish_reason"),
                          index=int(raw.get("index", position)), oversized=oversized))
  choices.sort(key=lambda c: c.index)
  usage = data.get("usage") or {}
  response = TeacherResponse(tuple(choices), int(usage.get("prompt_tokens") or 0),
                             int(usage.get("completion_tokens") or 0))
  if n > 1 and len(choices) == 1:
    raise _NIgnored(response)
  if len(choices) != n:
    raise ValueError(f"asked for n={n} choices, got {len(choices)}")
  return response
