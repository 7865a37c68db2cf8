"""`cot-distill bench annotate`: teacher-client throughput against a known bound.

Starts the local teacher in a subprocess with a fixed latency (default
100 ms) and sends requests with a fixed concurrency (default 64). No client
can exceed concurrency / latency requests per second (640/s by default), so
the figure that matters is achieved / bound; the target is >= 0.9. Two
passes, each measured in this run:

  client   `TeacherClient.generate` alone (HTTP, JSON, retry bookkeeping);
  annotate the full runner (prompt building, response cache writes, answer
           judging, record writing, manifest updates), into a fresh
           directory and fresh cache.

CPU ms per request is this process's CPU time (all threads) divided by
requests; the server's CPU time is reported apart (it is a child process).
Requests per second are only meaningful when the machine has a core to spare
for the server, so the load average is printed too.
"""

from __future__ import annotations

import os
import tempfile
import time


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "annotate", help="teacher client requests/s vs concurrency/latency, and CPU per request",
      description=__doc__)
  parser.add_argument("--requests", type=int, default=3000, help="requests per pass")
  parser.add_argument("--concurrency", type=int, default=64)
  parser.add_argument("--latency-ms", type=float, default=100.0)
  parser.add_argument("--passes", default="client,annotate",
                      help="comma-separated: client, annotate")
  parser.set_defaults(func=run)


def _questions(count: int):
  from cot_distill.data import symbolic  # pylint: disable=g-import-not-at-top
  return symbolic.generate_coin_flip(count, num_people=4, seed=0, split="train")


def _client_pass(url: str, concurrency: int, examples) -> tuple[float, float, int]:
  import asyncio  # pylint: disable=g-import-not-at-top
  from cot_distill.teacher import client as client_lib  # pylint: disable=g-import-not-at-top

  async def main():
    params = client_lib.SamplingParams(temperature=0.0, max_tokens=128)
    async with client_lib.TeacherClient(url, "synthetic-teacher",
                                        concurrency=concurrency) as teacher:
      warm = [teacher.generate(client_lib.COMPLETION, f"Q: warm-up {i}\nA:", params)
              for i in range(concurrency)]
      await asyncio.gather(*warm)
      started, cpu_started = time.perf_counter(), time.process_time()
      await asyncio.gather(*[
          teacher.generate(client_lib.COMPLETION, f"Q: {e.question}\nA:", params)
          for e in examples])
      return (time.perf_counter() - started, time.process_time() - cpu_started,
              len(examples))

  return asyncio.run(main())


def _annotate_pass(url: str, concurrency: int, examples) -> tuple[float, float, int]:
  from cot_distill.teacher import runner  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="bench-annotate-") as scratch:
    config = runner.AnnotationConfig(
        dataset="coin_flip_gen", split="train", teacher_url=url, model="synthetic-teacher",
        samples=1, temperature=0.0, max_tokens=128)
    options = runner.ExecutionOptions(concurrency=concurrency, progress=False,
                                      cache_dir=os.path.join(scratch, "cache"))
    # Warm-up run (imports, connection set-up) into its own directory.
    runner.annotate(config, os.path.join(scratch, "warm"), options,
                    examples=examples[:concurrency])
    started, cpu_started = time.perf_counter(), time.process_time()
    manifest = runner.annotate(config, os.path.join(scratch, "run"), options,
                               examples=examples)
    return (time.perf_counter() - started, time.process_time() - cpu_started,
            manifest["requests"]["sent"])


def run(args) -> int:
  from cot_distill.teacher import server  # pylint: disable=g-import-not-at-top
  passes = [p.strip() for p in args.passes.split(",") if p.strip()]
  bound = args.concurrency / (args.latency_ms / 1000.0)
  examples = _questions(args.requests)
  print(f"bench annotate: local teacher in a subprocess, latency {args.latency_ms:g} ms, "
        f"concurrency {args.concurrency}, {args.requests} requests per pass; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  print(f"bound: {bound:.1f} requests/s (concurrency / latency)")
  children_before = os.times()
  teacher = server.start_local_teacher(latency_ms=args.latency_ms, in_process=False)
  results = {}
  try:
    for name in passes:
      if name == "client":
        results[name] = _client_pass(teacher.url, args.concurrency, examples)
      elif name == "annotate":
        results[name] = _annotate_pass(teacher.url, args.concurrency, examples)
      else:
        print(f"unknown pass {name!r}")
        return 2
  finally:
    teacher.stop()
  children_after = os.times()
  total_requests = 0
  for name, (seconds, cpu_seconds, requests) in results.items():
    rate = requests / seconds
    total_requests += requests + args.concurrency
    # A client below the bound while using well under one core was starved
    # of CPU by other processes, not limited by its own work.
    print(f"{name:9s} {rate:8.1f} requests/s  ratio to bound {rate / bound:.3f}  "
          f"client CPU {1000 * cpu_seconds / requests:.2f} ms/request  "
          f"({requests} requests in {seconds:.2f} s, client busy "
          f"{100 * cpu_seconds / seconds:.0f}% of one core)")
  server_cpu = ((children_after.children_user + children_after.children_system)
                - (children_before.children_user + children_before.children_system))
  if total_requests:
    print(f"server CPU {1000 * server_cpu / total_requests:.2f} ms/request "
          f"(all passes and warm-ups)")
  return 0
