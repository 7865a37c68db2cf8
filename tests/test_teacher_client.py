"""The teacher client over real HTTP on loopback against a fault-injecting server."""

from __future__ import annotations

import asyncio
import time

import pytest

from cot_distill.teacher import cache as cache_lib
from cot_distill.teacher import client as client_lib
from cot_distill.teacher import concurrency
from cot_distill.teacher import rate_limit
from cot_distill.teacher import server as server_lib

COIN = ('Q: A coin is heads up. Ada flips the coin. Bo does not flip the coin. '
        'Is the coin still heads up? Note that "flip" here means "reverse".\nA:')
PARAMS = client_lib.SamplingParams(temperature=0.0, max_tokens=100)


def generate_many(url, prompts, *, kind=client_lib.COMPLETION, params=PARAMS, **options):
  """Runs `generate` for each prompt; returns (results or exceptions, stats)."""
  async def main():
    async with client_lib.TeacherClient(url, "synthetic-teacher", **options) as teacher:
      results = await asyncio.gather(
          *[teacher.generate(kind, p, params) for p in prompts], return_exceptions=True)
      return results, teacher.stats
  return asyncio.run(main())


def fast_retries(**overrides):
  options = dict(backoff_base_s=0.01, backoff_cap_s=0.05, request_timeout_s=5.0)
  options.update(overrides)
  return options


def statuses(teacher):
  return [entry.status for entry in teacher.server.log]


def test_completion_chat_n_and_models():
  with server_lib.start_local_teacher() as teacher:
    (response,), _ = generate_many(teacher.url, [COIN],
                                   params=client_lib.SamplingParams(temperature=0.7, n=3, seed=1))
    assert len(response.choices) == 3 and [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.text.rstrip().endswith("The answer is no.") for c in response.choices)
    messages = [{"role": "user", "content": COIN}]
    (chat,), _ = generate_many(teacher.url, [messages], kind=client_lib.CHAT)
    assert chat.choices[0].text.endswith("The answer is no.")
    assert chat.prompt_tokens > 0 and chat.completion_tokens > 0
    import httpx  # pylint: disable=g-import-not-at-top
    models = httpx.get(teacher.url + "/models").json()
    assert models["data"][0]["id"] == "synthetic-teacher"


def test_429_waits_at_least_retry_after():
  faults = server_lib.Faults(rate_429=0.5, retry_after_s=0.3)
  with server_lib.start_local_teacher(faults=faults, seed=3) as teacher:
    results, stats = generate_many(teacher.url, [COIN + str(i) for i in range(6)],
                                   **fast_retries(concurrency=1, max_attempts=20))
    assert all(isinstance(r, client_lib.TeacherResponse) for r in results)
    log = teacher.server.log
    assert statuses(teacher).count(429) >= 2
    for before, after in zip(log, log[1:]):
      if before.status == 429:
        assert after.time - before.time >= 0.29, "retried before Retry-After"
    assert stats.retries == statuses(teacher).count(429)


def test_500_timeouts_and_malformed_json_are_retried():
  faults = server_lib.Faults(rate_500=0.2, rate_timeout=0.1, rate_malformed=0.2, timeout_s=3.0)
  with server_lib.start_local_teacher(faults=faults, seed=5) as teacher:
    results, stats = generate_many(teacher.url, [COIN + str(i) for i in range(30)],
                                   **fast_retries(concurrency=8, max_attempts=30,
                                                  request_timeout_s=0.5,
                                                  max_consecutive_failures=1000))
    assert all(isinstance(r, client_lib.TeacherResponse) for r in results), results
    assert all(r.choices[0].text.endswith("The answer is no.") for r in results)
    assert stats.reasons.get("server_error", 0) >= 1
    assert stats.reasons.get("timeout", 0) >= 1
    assert stats.reasons.get("not_json", 0) >= 1
    assert stats.reasons["server_error"] == teacher.server.stats["status_500"]
    assert stats.reasons["not_json"] == teacher.server.stats["fault_malformed"]


def test_attempts_are_bounded_then_failed_with_reason():
  with server_lib.start_local_teacher(faults=server_lib.Faults(rate_500=1.0)) as teacher:
    (result,), stats = generate_many(teacher.url, [COIN], **fast_retries(max_attempts=3))
    assert isinstance(result, client_lib.TeacherRequestError)
    assert result.reason.startswith("http 500: ")
    assert "gave up after 3 attempts" in result.reason
    assert statuses(teacher) == [500, 500, 500]
    assert stats.failures == 1


def test_client_errors_are_not_retried():
  with server_lib.start_local_teacher(api_key="right-key") as teacher:
    (result,), _ = generate_many(teacher.url, [COIN], api_key="wrong-key",
                                 **fast_retries(max_attempts=5))
    # A refused key is not retried, and it stops the client at once.
    assert isinstance(result, concurrency.CircuitOpenError)
    assert result.failure_class == "auth" and result.message.startswith("http 401")
    assert statuses(teacher) == [401]
    # A 400 is not retried either; one does not stop the client.
    (result,), _ = generate_many(teacher.url, [COIN], api_key="right-key",
                                 params=client_lib.SamplingParams(n=500),
                                 **fast_retries(max_attempts=5))
    assert isinstance(result, client_lib.TeacherRequestError)
    assert result.failure_class == "bad_request" and result.reason.startswith("http 400")
    assert statuses(teacher) == [401, 400]
    (good,), _ = generate_many(teacher.url, [COIN], api_key="right-key")
    assert isinstance(good, client_lib.TeacherResponse)


def test_connection_errors_are_retried_then_fail():
  # A port nothing listens on: every attempt is a connection error.
  with server_lib.start_local_teacher() as teacher:
    url = teacher.url
  (result,), stats = generate_many(url, [COIN], **fast_retries(max_attempts=2))
  assert isinstance(result, client_lib.TeacherRequestError)
  assert result.reason.startswith("connection error")
  assert stats.requests_sent == 2


def test_truncated_completion_reports_length():
  with server_lib.start_local_teacher(faults=server_lib.Faults(rate_truncated=1.0)) as teacher:
    (result,), _ = generate_many(teacher.url, [COIN])
    assert result.choices[0].finish_reason == "length"
  with server_lib.start_local_teacher() as teacher:
    (capped,), _ = generate_many(teacher.url, [COIN],
                                 params=client_lib.SamplingParams(max_tokens=5))
    assert capped.choices[0].finish_reason == "length"
    assert len(capped.choices[0].text.split()) == 5


def test_requests_per_minute_limit_is_honoured():
  rate, count = 1200.0, 50  # 20 requests/s, bucket of 20.
  with server_lib.start_local_teacher() as teacher:
    started = time.monotonic()
    generate_many(teacher.url, [COIN + str(i) for i in range(count)], concurrency=16,
                  requests_per_minute=rate)
    elapsed = time.monotonic() - started
    times = sorted(entry.time for entry in teacher.server.log)
  per_second, capacity = rate / 60, rate / 60
  assert elapsed >= (count - capacity) / per_second * 0.95
  # Token-bucket property over every window of arrivals, with 0.25 s of
  # slack for requests that left the bucket apart but reached the (possibly
  # starved) server thread together. Without the limit, all 50 would arrive
  # within a few tens of milliseconds.
  for i in range(len(times)):
    for j in range(i + 1, len(times)):
      assert j - i + 1 <= capacity + per_second * (times[j] - times[i] + 0.25) + 1


def test_token_bucket_with_fake_clock():
  now = [0.0]
  sleeps = []

  async def fake_sleep(seconds):
    sleeps.append(seconds)
    now[0] += seconds

  async def main():
    original = asyncio.sleep
    asyncio.sleep = fake_sleep
    try:
      bucket = rate_limit.TokenBucket(6000, clock=lambda: now[0])  # 100 tokens/s.
      await bucket.acquire(100)  # Full bucket: no wait.
      await bucket.acquire(50)  # Needs 0.5 s of refill.
      await bucket.acquire(500)  # More than capacity: waits for a full bucket, goes into debt.
      bucket.refund(-100)  # Reported usage higher than estimated.
      await bucket.acquire(10)
    finally:
      asyncio.sleep = original
  asyncio.run(main())
  assert sleeps == pytest.approx([0.5, 1.0, 5.1])


def test_cache_means_zero_requests_on_rerun(tmp_path):
  with server_lib.start_local_teacher() as teacher:
    cache = cache_lib.ResponseCache(tmp_path)
    first, _ = generate_many(teacher.url, [COIN, COIN + " "], cache=cache)
    cache.close()
    assert len(teacher.server.log) == 2
    reopened = cache_lib.ResponseCache(tmp_path)
    assert len(reopened) == 2
    second, stats = generate_many(teacher.url, [COIN, COIN + " "], cache=reopened)
    assert len(teacher.server.log) == 2 and stats.cache_hits == 2
    assert [r.choices for r in second] == [r.choices for r in first]
    assert all(r.cached for r in second)
    # Other sampling parameters are another key.
    generate_many(teacher.url, [COIN], cache=reopened,
                  params=client_lib.SamplingParams(temperature=0.0, max_tokens=99))
    assert len(teacher.server.log) == 3


def test_cache_ignores_a_torn_entry(tmp_path):
  cache = cache_lib.ResponseCache(tmp_path)
  cache.put("a" * 64, {"x": 1})
  cache.close()
  pack = next(tmp_path.glob("pack-*.jsonl"))
  with open(pack, "ab") as f:
    f.write(b"b" * 64 + b'\t{"x": ')  # A process killed mid-write.
  reopened = cache_lib.ResponseCache(tmp_path)
  assert reopened.get("a" * 64) == {"x": 1}
  assert reopened.get("b" * 64) is None


def test_error_messages_never_contain_the_api_key():
  """A server that echoes the Authorization header in its error body."""
  secret = "sk-test-0123456789abcdef"

  async def main():
    async def handle(reader, writer):
      head = (await reader.readuntil(b"\r\n\r\n")).decode()
      length = int([l for l in head.split("\r\n") if l.lower().startswith("content-length")][0]
                   .split(":")[1])
      await reader.readexactly(length)
      echo = [l for l in head.split("\r\n") if l.lower().startswith("authorization")][0]
      body = f'{{"error": "bad gateway for {echo}"}}'.encode()
      writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
      await writer.drain()
      writer.close()
    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
      async with client_lib.TeacherClient(f"http://127.0.0.1:{port}", "m", api_key=secret,
                                          **fast_retries(max_attempts=2)) as teacher:
        try:
          await teacher.generate(client_lib.COMPLETION, COIN, PARAMS)
        except client_lib.TeacherRequestError as error:
          return error.reason
  reason = asyncio.run(main())
  assert reason.startswith("http 502")
  assert "Bearer ***" in reason and secret not in reason


def test_base_url_normalisation_and_retry_after_parsing():
  assert client_lib.normalize_base_url("http://h:1") == "http://h:1/v1"
  assert client_lib.normalize_base_url("http://h:1/v1/") == "http://h:1/v1"
  import httpx  # pylint: disable=g-import-not-at-top
  assert client_lib.parse_retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
  assert client_lib.parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
  assert client_lib.parse_retry_after(httpx.Headers({})) is None
