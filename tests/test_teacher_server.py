"""The local synthetic teacher: its answers, its errors, its HTTP behaviour."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time

import httpx
import pytest

from cot_distill import answers
from cot_distill.data.example import AnswerType
from cot_distill.teacher import server as server_lib
from cot_distill.teacher import synthetic

COIN_Q = ('A coin is heads up. Ada flips the coin. Bo does not flip the coin. Cy flips the '
          'coin. Di flips the coin. Is the coin still heads up? Note that "flip" here means '
          '"reverse".')
LETTERS_Q = 'Take the last letters of each words in "Whitney Erika Tj Benito" and concatenate them.'


def test_parsers_take_the_last_question_of_a_prompt():
  exemplar = COIN_Q.replace("Ada flips", "Ada does not flip")
  prompt = f"Q: {exemplar}\nA: ... The answer is yes.\n\nQ: {COIN_Q}\nA:"
  question = synthetic.parse_coin_flip(prompt)
  assert question.flippers == ("Ada", "Cy", "Di") and question.answer == "no"
  assert synthetic.parse_last_letters(LETTERS_Q).answer == "yajo"


@pytest.mark.parametrize("question, answer_type, gold", [
    (COIN_Q, AnswerType.YES_NO, "no"), (LETTERS_Q, AnswerType.LETTERS, "yajo")])
def test_correct_and_wrong_chains_of_thought(question, answer_type, gold):
  kinds = {}
  for seed in range(300):
    solution = synthetic.solve(f"Q: {question}\nA:", random.Random(seed), error_rate=0.5,
                               vary_wording=True)
    verdict = answers.judge(solution.text, gold, answer_type)
    # Every injected error changes the final answer; no error never does.
    assert verdict.correct == (solution.error is None), solution.text
    assert verdict.predicted == solution.answer
    kinds[solution.error] = kinds.get(solution.error, 0) + 1
  assert set(kinds) == {None, synthetic.WRONG_STEP, synthetic.WRONG_ANSWER}
  assert 100 < kinds[None] < 200


def test_exemplar_style_when_greedy():
  solution = synthetic.solve(f"Q: {LETTERS_Q}\nA:", random.Random(0), error_rate=0.0,
                             vary_wording=False)
  assert solution.text == (' The last letter of "Whitney" is "y". The last letter of "Erika" '
                           'is "a". The last letter of "Tj" is "j". The last letter of "Benito" '
                           'is "o". Concatenating them is "yajo". The answer is yajo.')


def test_zero_shot_stage_two_repeats_the_chain_of_thought_answer():
  prompt = (f"Q: {COIN_Q}\nA: Let's think step by step. The coin ... The answer is yes. "
            "\nTherefore, the answer (Yes or No) is")
  solution = synthetic.solve(prompt, random.Random(0), error_rate=0.0, vary_wording=False)
  assert solution.text == " yes."


def test_unknown_question_gets_no_answer():
  solution = synthetic.solve("Q: What is 2 + 2?\nA:", random.Random(0), error_rate=0.0,
                             vary_wording=False)
  assert answers.extract_answer(solution.text, AnswerType.NUMBER).answer is None


def post(url, path, body):
  return httpx.post(url + path, json=body, timeout=10).json()


def test_http_api_n_seed_determinism_and_errors():
  with server_lib.start_local_teacher(error_rate=0.3, seed=7) as teacher:
    body = {"model": "m", "prompt": f"Q: {COIN_Q}\nA:", "n": 4, "seed": 1, "temperature": 1.0}
    first = post(teacher.url, "/completions", body)
    again = post(teacher.url, "/completions", body)
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]
    other_seed = post(teacher.url, "/completions", {**body, "seed": 2})
    assert [c["text"] for c in other_seed["choices"]] != [c["text"] for c in first["choices"]]
    assert first["object"] == "text_completion" and len(first["choices"]) == 4
    chat = post(teacher.url, "/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": LETTERS_Q}]})
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert httpx.post(teacher.url + "/completions", content=b"{not json").status_code == 400
    assert httpx.get(teacher.url + "/nothing").status_code == 404


def test_error_rate_is_honoured_over_many_samples():
  with server_lib.start_local_teacher(error_rate=0.2, seed=1) as teacher:
    body = {"model": "m", "prompt": f"Q: {COIN_Q}\nA:", "n": 100, "temperature": 1.0}
    errors = 0
    for seed in range(5):
      post(teacher.url, "/completions", {**body, "seed": seed})
    for entry in teacher.server.log:
      errors += sum(e is not None for e in entry.errors)
    assert 60 <= errors <= 140  # 500 samples at 20%.


def test_sustains_64_concurrent_requests_with_latency():
  """64 requests at 200 ms each finish together, not one after another."""
  with server_lib.start_local_teacher(latency_ms=200) as teacher:
    async def main():
      limits = httpx.Limits(max_connections=64)
      async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*[
            client.post(teacher.url + "/completions",
                        json={"model": "m", "prompt": f"Q: {COIN_Q}\nA: {i}"})
            for i in range(64)])
        return time.monotonic() - started, responses
    elapsed, responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert teacher.server.max_in_flight == 64
    assert elapsed < 3.0  # Serially: 12.8 s.


def test_subprocess_mode_and_cli_entry_point():
  with server_lib.start_local_teacher(in_process=False, latency_ms=1) as teacher:
    response = post(teacher.url, "/completions", {"model": "m", "prompt": LETTERS_Q})
    assert response["choices"][0]["text"].endswith("The answer is yajo.")
  command = [sys.executable, "-c",
             "import argparse, sys; from cot_distill.commands import teacher; "
             "p = argparse.ArgumentParser(); teacher.register(p.add_subparsers()); "
             "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))",
             "teacher", "serve", "--port", "0", "--error-rate", "0.2", "--seed", "3"]
  process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()
    assert "stand-in" in line and "http://127.0.0.1:" in line
    url = line.split()[-1]
    assert httpx.get(url + "/models").json()["data"][0]["id"] == "synthetic-teacher"
  finally:
    process.terminate()
    assert process.wait(timeout=10) == 0
    process.stdout.close()
