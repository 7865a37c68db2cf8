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
    200 whose body is not a valid completion (malformed JSON, no choices);
  * not retried: other 4xx (bad request, bad key, unknown model): retrying
    cannot fix them;
  * between attempts, exponential backoff with full jitter
    (uniform(0, min(backoff_cap_s, backoff_base_s * 2**k))), so many workers
    hitting one failure do not come back in lockstep;
  * when attempts run out, `TeacherRequestError` carries the last reason,
    which the runner records as a "failed" CoT.

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
from cot_distill.teacher import rate_limit

logger = logging.getLogger(__name__)

COMPLETION = "completion"
CHAT = "chat"
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_CONNECTIONS_PER_POOL = 4


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
  """A request that failed for good (non-retryable or out of attempts)."""

  def __init__(self, reason: str, attempts: int):
    super().__init__(reason)
    self.reason = reason
    self.attempts = attempts


class _Retryable(Exception):
  def __init__(self, reason: str, retry_after: float | None = None):
    super().__init__(reason)
    self.reason = reason
    self.retry_after = retry_after


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


@dataclasses.dataclass(frozen=True)
class TeacherResponse:
  """A parsed response: choices in index order and the reported usage."""

  choices: tuple[Choice, ...]
  prompt_tokens: int
  completion_tokens: int
  cached: bool = False
  attempts: int = 0

  def to_json(self) -> dict[str, Any]:
    return {"choices": [{"text": c.text, "finish_reason": c.finish_reason, "index": c.index}
                        for c in self.choices],
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
  reasons: dict[str, int] = dataclasses.field(default_factory=dict)


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


class TeacherClient:
  """Sends completion requests with caching, rate limiting and retries.

  Use inside `async with TeacherClient(...) as client:`.
  """

  def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
               concurrency: int = 16, requests_per_minute: float | None = None,
               tokens_per_minute: float | None = None,
               request_timeout_s: float = 120.0, max_attempts: int = 6,
               backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0,
               cache: cache_lib.ResponseCache | None = None,
               rng: random.Random | None = None):
    self.base_url = normalize_base_url(base_url)
    self.model = model
    self.request_timeout_s = request_timeout_s
    self.max_attempts = max_attempts
    self.backoff_base_s = backoff_base_s
    self.backoff_cap_s = backoff_cap_s
    self.cache = cache
    self.stats = ClientStats()
    self.limiter = rate_limit.RateLimiter(requests_per_minute, tokens_per_minute)
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
    # Absolute URLs, parsed once.
    self._urls = {COMPLETION: httpx.URL(self.base_url + "/completions"),
                  CHAT: httpx.URL(self.base_url + "/chat/completions")}
    # One slot per allowed concurrent request, each naming the pool to use:
    # the queue is both the concurrency bound and the load balancer.
    self._slots: asyncio.Queue[int] = asyncio.Queue()
    for slot in range(concurrency):
      self._slots.put_nowait(slot % shard_count)

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

  async def generate(self, kind: str, prompt: str | Sequence[dict[str, str]],
                     params: SamplingParams) -> TeacherResponse:
    """One request (`kind` COMPLETION with a prompt string, or CHAT with
    messages); served from the cache when the same request was answered."""
    if kind not in (COMPLETION, CHAT):
      raise ValueError(f"unknown endpoint kind {kind!r}")
    prompt_field = "prompt" if kind == COMPLETION else "messages"
    body = {"model": self.model, prompt_field: prompt, **params.to_request()}
    # The canonical JSON is both what is sent and what the cache key hashes.
    payload = json.dumps(body, sort_keys=True, ensure_ascii=False,
                         separators=(",", ":")).encode("utf-8")
    key = None
    if self.cache is not None:
      key = cache_lib.cache_key(kind, payload)
      hit = self.cache.get(key)
      if hit is not None:
        self.stats.cache_hits += 1
        return TeacherResponse.from_json(hit, cached=True)
    pool = await self._slots.get()
    try:
      response = await self._send_with_retries(pool, kind, payload, prompt, params)
    finally:
      self._slots.put_nowait(pool)
    if self.cache is not None:
      self.cache.put(key, response.to_json())
    return response

  async def _send_with_retries(self, pool, kind, payload, prompt, params) -> TeacherResponse:
    url = self._urls[kind]
    estimate = estimate_tokens(prompt, params)
    reason = "no attempt made"
    for attempt in range(1, self.max_attempts + 1):
      await self.limiter.acquire(estimate)
      self.stats.requests_sent += 1
      try:
        response = await self._attempt(pool, url, payload, kind, params.n)
      except _Retryable as error:
        reason = self._scrub(error.reason)
        kind_of_failure = reason.split(":", 1)[0]
        self.stats.reasons[kind_of_failure] = self.stats.reasons.get(kind_of_failure, 0) + 1
        self.limiter.settle(estimate, 0)
        if attempt == self.max_attempts:
          break
        self.stats.retries += 1
        delay = self._rng.uniform(0, min(self.backoff_cap_s,
                                         self.backoff_base_s * 2 ** (attempt - 1)))
        if error.retry_after is not None:
          self.limiter.pause(error.retry_after)
          delay = max(delay, error.retry_after)
        logger.debug("attempt %d failed (%s); retrying in %.2fs", attempt, reason, delay)
        await asyncio.sleep(delay)
        continue
      except TeacherRequestError as error:
        self.stats.failures += 1
        raise TeacherRequestError(self._scrub(error.reason), attempt) from None
      self.limiter.settle(estimate, response.prompt_tokens + response.completion_tokens)
      self.stats.prompt_tokens += response.prompt_tokens
      self.stats.completion_tokens += response.completion_tokens
      return dataclasses.replace(response, attempts=attempt)
    self.stats.failures += 1
    raise TeacherRequestError(
        f"{reason} (gave up after {self.max_attempts} attempts)", self.max_attempts)

  async def _attempt(self, pool: int, url: httpx.URL, payload: bytes, kind: str, n: int) -> TeacherResponse:
    # No per-operation httpx timeouts: the asyncio deadline bounds the whole
    # attempt (connect, send, wait, read), which is the timeout that matters.
    request = httpx.Request("POST", url, headers=self._headers, content=payload)
    try:
      async with asyncio.timeout(self.request_timeout_s):
        response = await self._pools[pool].handle_async_request(request)
        try:
          await response.aread()
        finally:
          await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
      raise _Retryable(f"timeout: no complete response within {self.request_timeout_s:g}s") from None
    except httpx.TransportError as error:
      raise _Retryable(f"connection error: {type(error).__name__}: {error}") from None
    status = response.status_code
    if status != 200:
      snippet = response.text[:300].replace("\n", " ")
      message = f"http {status}: {snippet}"
      if status in _RETRYABLE_STATUS or status >= 500:
        raise _Retryable(message, parse_retry_after(response.headers))
      raise TeacherRequestError(message, 1)
    try:
      return _parse_response(response.content, kind, n)
    except (ValueError, KeyError, TypeError, IndexError) as error:
      raise _Retryable(f"malformed response: {type(error).__name__}: {error}"[:300]) from None


def _parse_response(content: bytes, kind: str, n: int) -> TeacherResponse:
  data = json.loads(content)
  raw_choices = data["choices"]
  if not isinstance(raw_choices, list) or not raw_choices:
    raise ValueError("response has no choices")
  choices = []
  for position, raw in enumerate(raw_choices):
    text = raw["text"] if kind == COMPLETION else raw["message"]["content"]
    if text is None:
      text = ""
    if not isinstance(text, str):
      raise TypeError(f"choice {position} text is {type(text).__name__}, not str")
    choices.append(Choice(text=text, finish_reason=raw.get("finish_reason"),
                          index=int(raw.get("index", position))))
  if len(choices) != n:
    raise ValueError(f"asked for n={n} choices, got {len(choices)}")
  choices.sort(key=lambda c: c.index)
  usage = data.get("usage") or {}
  return TeacherResponse(tuple(choices), int(usage.get("prompt_tokens") or 0),
                         int(usage.get("completion_tokens") or 0))
