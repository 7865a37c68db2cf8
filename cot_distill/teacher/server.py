"""A local OpenAI-compatible teacher server for offline runs and tests.

`cot-distill teacher serve` is a stand-in for a real LLM endpoint (vLLM, TGI,
a hosted API). It speaks the subset of the OpenAI HTTP API the client uses:
`POST /v1/completions`, `POST /v1/chat/completions` (with `n`, `seed`,
`max_tokens`, `temperature`) and `GET /v1/models`. Answers come from
`cot_distill.teacher.synthetic`, which solves the coin-flip and last-letter
questions it finds in the prompt and injects reasoning errors at a chosen
rate. Nothing in the client knows this server is special.

For tests it can also inject transport faults (`Faults`): 429 with
Retry-After, 500s, responses slower than the client's timeout, malformed
JSON bodies and truncated completions (finish_reason "length").

The HTTP layer is a small asyncio HTTP/1.1 implementation with keep-alive:
one event loop comfortably holds hundreds of concurrent connections, each
sleeping `latency_ms` before it answers, which is what the throughput
benchmark needs (64 connections x 100 ms). It binds to loopback by default.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import random
import re
import threading
import time
from typing import Any

from cot_distill.teacher import synthetic

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests",
            500: "Internal Server Error"}
_TOKEN_RE = re.compile(r"\S+")
_MAX_HEADER_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Faults:
  """Transport faults injected per request (probabilities, drawn in order).

  Attributes:
    rate_429: answer 429 with a `Retry-After: retry_after_s` header.
    rate_500: answer 500.
    rate_timeout: wait `timeout_s` before answering (longer than the client's
      per-request timeout), then answer normally.
    rate_malformed: answer 200 with a body that is not valid JSON.
    rate_truncated: answer 200 with every choice cut to half its tokens and
      finish_reason "length" (a valid response the filter must drop).
    rate_html: answer 200 with an HTML page (a proxy or login page).
    rate_empty: answer 200 with valid JSON and `"choices": []`.
    rate_oversized: answer with every choice padded by `oversized_chars`
      characters (a runaway generation that ignores max_tokens).
    retry_after_s: value of the Retry-After header on 429s.
    timeout_s: how long a "timeout" request hangs.
    oversized_chars: padding of an "oversized" choice.
  """

  rate_429: float = 0.0
  rate_500: float = 0.0
  rate_timeout: float = 0.0
  rate_malformed: float = 0.0
  rate_truncated: float = 0.0
  rate_html: float = 0.0
  rate_empty: float = 0.0
  rate_oversized: float = 0.0
  retry_after_s: float = 1.0
  timeout_s: float = 30.0
  oversized_chars: float = 1_000_000

  def draw(self, rng: random.Random) -> str | None:
    value = rng.random()
    # New kinds go last: a seeded fault sequence stays as it was.
    for name in ("429", "500", "timeout", "malformed", "truncated", "html", "empty",
                 "oversized"):
      rate = getattr(self, f"rate_{name}")
      if value < rate:
        return name
      value -= rate
    return None


@dataclasses.dataclass
class RequestLogEntry:
  """What the server saw and did for one request (tests read these)."""

  time: float
  path: str
  status: int
  fault: str | None
  prompt_sha: str | None
  errors: tuple[str | None, ...] = ()


class TeacherServer:
  """The request handler state: settings, randomness, statistics."""

  def __init__(self, *, error_rate: float = 0.0, latency_ms: float = 0.0,
               seed: int = 0, model_name: str = "synthetic-teacher",
               faults: Faults | None = None, api_key: str | None = None,
               keep_log: bool = True, step_error_rate: float = 0.0,
               worked: synthetic.WorkedSolutions | None = None):
    if not 0.0 <= error_rate <= 1.0:
      raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    if not 0.0 <= step_error_rate <= 1.0:
      raise ValueError(f"step_error_rate must be in [0, 1], got {step_error_rate}")
    self.error_rate = error_rate
    self.step_error_rate = step_error_rate
    self.worked = worked
    self.latency_s = latency_ms / 1000.0
    self.seed = seed
    self.model_name = model_name
    self.faults = faults or Faults()
    self.api_key = api_key
    self.keep_log = keep_log
    self.log: list[RequestLogEntry] = []
    self.stats: collections.Counter = collections.Counter()
    self.in_flight = 0
    self.max_in_flight = 0
    self._fault_rng = random.Random(f"faults|{seed}")
    self._connections: set[asyncio.Task] = set()

  # -------------------------------------------------------------------------
  # HTTP.

  async def handle_connection(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
    task = asyncio.current_task()
    self._connections.add(task)
    try:
      while True:
        try:
          head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
          return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
          return
        method, target, _ = parts
        headers = {}
        for line in header_lines:
          if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        status, extra_headers, payload = await self._dispatch(
            method, target.split("?", 1)[0], headers, body)
        out_headers = {"Content-Type": "application/json", **extra_headers,
                       "Content-Length": str(len(payload))}
        head_out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        head_out += [f"{k}: {v}" for k, v in out_headers.items()]
        writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()
        if headers.get("connection", "").lower() == "close":
          return
    except (ConnectionError, asyncio.IncompleteReadError):
      return
    finally:
      self._connections.discard(task)
      writer.close()

  async def close_connections(self) -> None:
    """Ends every open connection (the listener is closed separately)."""
    tasks = list(self._connections)
    for task in tasks:
      task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

  async def _dispatch(self, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[int, dict[str, str], bytes]:
    if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
      return self._error(401, "invalid or missing API key", path)
    if path in ("/v1/models", "/models"):
      if method != "GET":
        return self._error(405, "use GET", path)
      data = {"object": "list", "data": [
          {"id": self.model_name, "object": "model", "owned_by": "cot-distill"}]}
      return 200, {}, json.dumps(data).encode()
    if path not in ("/v1/completions", "/v1/chat/completions"):
      return self._error(404, f"no route {path}", path)
    if method != "POST":
      return self._error(405, "use POST", path)
    try:
      request = json.loads(body)
      if not isinstance(request, dict):
        raise ValueError("body is not a JSON object")
    except ValueError as error:
      return self._error(400, f"invalid JSON body: {error}", path)
    self.in_flight += 1
    self.max_in_flight = max(self.max_in_flight, self.in_flight)
    try:
      return await self._generate(path, request)
    finally:
      self.in_flight -= 1

  def _error(self, status: int, message: str, path: str,
             headers: dict[str, str] | None = None, fault: str | None = None):
    self.stats[f"status_{status}"] += 1
    if self.keep_log:
      self.log.append(RequestLogEntry(time.monotonic(), path, status, fault, None))
    body = json.dumps({"error": {"message": message, "type": "server_error",
                                 "code": status}}).encode()
    return status, headers or {}, body

  # -------------------------------------------------------------------------
  # Generation.

  def solution(self, prompt_text: str, request_seed: Any, index: int,
               temperature: float) -> synthetic.Solution:
    """The reply to choice `index` of a request: a pure function of the
    server's settings and the request, so a caller (the demo) can tell
    which replies carry which injected error."""
    prompt_sha = hashlib.sha256(prompt_text.encode()).hexdigest()
    rng = random.Random(f"{self.seed}|{request_seed}|{prompt_sha}|{index}")
    return synthetic.solve(prompt_text, rng, error_rate=self.error_rate,
                           vary_wording=temperature > 0,
                           step_error_rate=self.step_error_rate, worked=self.worked)

  async def _generate(self, path: str, request: dict[str, Any]):
    chat = path.endswith("/chat/completions")
    try:
      prompt_text = _prompt_text(request, chat)
      n = int(request.get("n", 1) or 1)
      max_tokens = request.get("max_tokens")
      max_tokens = int(max_tokens) if max_tokens is not None else None
      temperature = float(request.get("temperature", 1.0) or 0.0)
    except (TypeError, ValueError) as error:
      return self._error(400, f"bad request: {error}", path)
    if not 1 <= n <= 128:
      return self._error(400, f"n must be in [1, 128], got {n}", path)
    fault = self.faults.draw(self._fault_rng)
    self.stats["requests"] += 1
    if fault == "timeout":
      await asyncio.sleep(self.faults.timeout_s)
    elif self.latency_s:
      await asyncio.sleep(self.latency_s)
    if fault == "429":
      return self._error(429, "rate limit exceeded", path,
                         {"Retry-After": f"{self.faults.retry_after_s:g}"}, fault)
    if fault == "500":
      return self._error(500, "injected server error", path, fault=fault)
    if fault == "html":
      self.stats["fault_html"] += 1
      return 200, {"Content-Type": "text/html"}, (
          b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
          b"<body><h1>Please sign in</h1></body></html>")
    prompt_sha = hashlib.sha256(prompt_text.encode()).hexdigest()
    choices, errors, completion_tokens = [], [], 0
    for index in range(n):
      solution = self.solution(prompt_text, request.get("seed"), index, temperature)
      text, finish_reason = _cap_tokens(solution.text, max_tokens)
      if fault == "truncated":
        text, finish_reason = _cap_tokens(text, max(1, _count_tokens(text) // 2))
      if fault == "oversized":
        text += " x" * (int(self.faults.oversized_chars) // 2)
      completion_tokens += _count_tokens(text)
      errors.append(solution.error)
      choice = {"index": index, "finish_reason": finish_reason, "logprobs": None}
      if chat:  # Chat models start their turn without the leading space.
        choice["message"] = {"role": "assistant", "content": text.lstrip()}
      else:
        choice["text"] = text
      choices.append(choice)
    prompt_tokens = _count_tokens(prompt_text)
    response = {
        "id": f"cmpl-{prompt_sha[:24]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": request.get("model", self.model_name),
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens,
                  "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    self.stats["status_200"] += 1
    if fault:
      self.stats[f"fault_{fault}"] += 1
    if self.keep_log:
      self.log.append(RequestLogEntry(time.monotonic(), path, 200, fault,
                                      prompt_sha, tuple(errors)))
    if fault == "empty":
      response["choices"] = []
    payload = json.dumps(response).encode()
    if fault == "malformed":
      payload = payload[: len(payload) // 2]
    return 200, {}, payload


def _prompt_text(request: dict[str, Any], chat: bool) -> str:
  if chat:
    messages = request["messages"]
    return "\n".join(str(m.get("content", "")) for m in messages)
  prompt = request["prompt"]
  if isinstance(prompt, list):  # The API allows a batch; we answer the last.
    prompt = prompt[-1]
  return str(prompt)


def _count_tokens(text: str) -> int:
  """A crude token count (whitespace pieces): enough for usage and max_tokens."""
  return len(text.split())


def _cap_tokens(text: str, max_tokens: int | None) -> tuple[str, str]:
  """(text cut to `max_tokens` tokens, finish_reason)."""
  if max_tokens is None:
    return text, "stop"
  pieces = list(_TOKEN_RE.finditer(text))
  if len(pieces) <= max_tokens:
    return text, "stop"
  return text[: pieces[max_tokens - 1].end()] if max_tokens > 0 else "", "length"


# ---------------------------------------------------------------------------
# Running it.


async def serve_forever(server: TeacherServer, host: str, port: int,
                        started: "asyncio.Future[int] | None" = None,
                        stop_event: asyncio.Event | None = None) -> None:
  """Serves until `stop_event` is set (or forever); reports the bound port."""
  listener = await asyncio.start_server(server.handle_connection, host, port,
                                        limit=_MAX_HEADER_BYTES, backlog=1024)
  bound_port = listener.sockets[0].getsockname()[1]
  if started is not None:
    started.set_result(bound_port)
  try:
    if stop_event is None:
      await listener.serve_forever()
    else:
      await stop_event.wait()
  finally:
    # Idle keep-alive connections first: from Python 3.12 on, wait_closed()
    # waits for every connection to end.
    listener.close()
    await server.close_connections()
    await listener.wait_closed()


class LocalTeacher:
  """A running local teacher; use as a context manager or call `stop()`.

  Attributes:
    url: base URL to give the client, e.g. "http://127.0.0.1:43117/v1".
    server: the `TeacherServer` (request log, stats) when run in a thread;
      None when run in a subprocess.
  """

  def __init__(self, url: str, server: TeacherServer | None, stop_fn):
    self.url = url
    self.server = server
    self._stop_fn = stop_fn

  def stop(self) -> None:
    if self._stop_fn is not None:
      self._stop_fn()
      self._stop_fn = None

  def __enter__(self) -> "LocalTeacher":
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()


def start_local_teacher(*, host: str = "127.0.0.1", port: int = 0,
                        error_rate: float = 0.0, latency_ms: float = 0.0,
                        seed: int = 0, model_name: str = "synthetic-teacher",
                        faults: Faults | None = None, api_key: str | None = None,
                        in_process: bool = True,
                        server: TeacherServer | None = None,
                        step_error_rate: float = 0.0) -> LocalTeacher:
  """Starts the local teacher on a free loopback port (port=0) and returns it.

  Args:
    in_process: True runs the server's event loop in a daemon thread of this
      process (tests read `LocalTeacher.server.log`); False runs
      `python -m cot_distill.teacher.server` in a subprocess, so the server's
      CPU time does not compete with the client's GIL (benchmarks, demo).
    server: a ready `TeacherServer` (e.g. a test's subclass) to run in a
      thread instead of one built from the other arguments.
  """
  if not in_process:
    return _start_subprocess(host, port, error_rate, latency_ms, seed,
                             model_name, faults, api_key, step_error_rate)
  if server is None:
    server = TeacherServer(error_rate=error_rate, latency_ms=latency_ms, seed=seed,
                           model_name=model_name, faults=faults, api_key=api_key,
                           step_error_rate=step_error_rate)
  ready = threading.Event()
  state: dict[str, Any] = {}

  def run_loop():
    loop = asyncio.new_event_loop()
    state["loop"] = loop
    stop_event = asyncio.Event()
    state["stop_event"] = stop_event
    started = loop.create_future()

    async def main():
      task = asyncio.ensure_future(serve_forever(server, host, port, started, stop_event))
      try:
        state["port"] = await asyncio.shield(started)
      except BaseException as error:  # pylint: disable=broad-except
        state["error"] = error
      finally:
        ready.set()
      await task

    try:
      loop.run_until_complete(main())
    except BaseException as error:  # pylint: disable=broad-except
      state.setdefault("error", error)
      ready.set()
    finally:
      loop.close()

  thread = threading.Thread(target=run_loop, name="local-teacher", daemon=True)
  thread.start()
  ready.wait(timeout=30)
  if "port" not in state:
    raise RuntimeError(f"local teacher failed to start: {state.get('error')!r}")

  def stop():
    state["loop"].call_soon_threadsafe(state["stop_event"].set)
    thread.join(timeout=10)

  return LocalTeacher(f"http://{host}:{state['port']}/v1", server, stop)


def _start_subprocess(host, port, error_rate, latency_ms, seed, model_name,
                      faults, api_key, step_error_rate=0.0) -> LocalTeacher:
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  command = [sys.executable, "-m", "cot_distill.teacher.server", "--host", host,
             "--port", str(port), "--error-rate", str(error_rate),
             "--latency-ms", str(latency_ms), "--seed", str(seed),
             "--model-name", model_name, "--step-error-rate", str(step_error_rate)]
  command += _fault_arguments(faults or Faults())
  env = dict(os.environ)
  if api_key is not None:
    # Passed by environment, never on the command line (visible in `ps`).
    env["COT_DISTILL_TEACHER_SERVER_KEY"] = api_key
    command += ["--api-key-env", "COT_DISTILL_TEACHER_SERVER_KEY"]
  process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
  line = process.stdout.readline()
  match = re.search(r"http://\S+/v1", line)
  if not match:
    process.kill()
    process.wait()
    raise RuntimeError(f"local teacher subprocess did not start: {line!r}")

  def stop():
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    process.stdout.close()

  return LocalTeacher(match.group(0), None, stop)


def _fault_arguments(faults: Faults) -> list[str]:
  arguments = []
  for field in dataclasses.fields(Faults):
    value = getattr(faults, field.name)
    if value != field.default:
      arguments += [f"--fault-{field.name.replace('_', '-')}", str(value)]
  return arguments


def add_server_arguments(parser) -> None:
  """Flags shared by `cot-distill teacher serve` and `python -m` here."""
  parser.add_argument("--host", default="127.0.0.1",
                      help="interface to bind (default loopback only)")
  parser.add_argument("--port", type=int, default=8000,
                      help="port; 0 picks a free one (printed at start)")
  parser.add_argument("--error-rate", type=float, default=0.0,
                      help="probability that a sample has a wrong step or answer "
                           "(its final answer is wrong)")
  parser.add_argument("--step-error-rate", type=float, default=0.0,
                      help="probability that a sample has a wrong step and still the "
                           "right final answer (only the rationale verifier catches it)")
  parser.add_argument("--latency-ms", type=float, default=0.0,
                      help="delay before every response, in milliseconds")
  parser.add_argument("--worked-solutions", action="append", default=[],
                      metavar="DATASET:SPLIT",
                      help="also answer that split's questions with the dataset's own "
                           "worked solutions (e.g. gsm8k:train; files from "
                           "$COT_DISTILL_DATA_DIR); repeatable")
  parser.add_argument("--seed", type=int, default=0, help="server randomness seed")
  parser.add_argument("--model-name", default="synthetic-teacher",
                      help="model id reported by /v1/models")
  parser.add_argument("--api-key-env", default=None,
                      help="if set, require 'Authorization: Bearer $VAR'")
  for field in dataclasses.fields(Faults):
    parser.add_argument(f"--fault-{field.name.replace('_', '-')}", type=float,
                        default=field.default, dest=f"fault_{field.name}",
                        help=f"injected fault setting {field.name} (tests)")


def load_worked_solutions(specs) -> synthetic.WorkedSolutions | None:
  """`["gsm8k:train", ...]` -> the questions the teacher replays solutions for."""
  if not specs:
    return None
  from cot_distill import errors  # pylint: disable=g-import-not-at-top
  from cot_distill.data import registry  # pylint: disable=g-import-not-at-top
  examples = []
  for spec in specs:
    name, _, split = spec.partition(":")
    if not split:
      raise errors.UserError(f"--worked-solutions {spec!r}: write DATASET:SPLIT, e.g. gsm8k:train")
    try:
      examples += registry.load(name, split)
    except (KeyError, ValueError) as error:
      raise errors.UserError(f"--worked-solutions {spec!r}: {error}") from error
  worked = synthetic.WorkedSolutions(examples)
  if not len(worked):
    raise errors.UserError(f"--worked-solutions {', '.join(specs)}: no example has a worked "
                           "solution (gold rationale)")
  return worked


def run_from_arguments(args) -> int:
  """Runs the server in the foreground until interrupted."""
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      print(f"error: environment variable {args.api_key_env} is empty", file=sys.stderr)
      return 2
  faults = Faults(**{f.name: getattr(args, f"fault_{f.name}")
                     for f in dataclasses.fields(Faults)})
  worked = load_worked_solutions(args.worked_solutions)
  server = TeacherServer(error_rate=args.error_rate, latency_ms=args.latency_ms,
                         seed=args.seed, model_name=args.model_name,
                         faults=faults, api_key=api_key, keep_log=False,
                         step_error_rate=args.step_error_rate, worked=worked)

  async def main():
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(signal_number, stop_event.set)
    started = loop.create_future()
    task = asyncio.ensure_future(
        serve_forever(server, args.host, args.port, started, stop_event))
    port = await started
    print(f"local teacher (synthetic stand-in for an LLM) serving "
          f"http://{args.host}:{port}/v1", flush=True)
    await task

  try:
    asyncio.run(main())
  except KeyboardInterrupt:
    pass
  return 0


if __name__ == "__main__":
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  _parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_server_arguments(_parser)
  sys.exit(run_from_arguments(_parser.parse_args()))
