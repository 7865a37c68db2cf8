"""Decoding: cache vs no cache, EOS handling, scores, sampling, beam search."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import decoding
from model_testing import random_inputs, teacher_forced_batch, tiny_model

EOS = 1


@pytest.fixture(scope="module")
def setup():
  model, params, config = tiny_model("t5_1_1_tiny")
  inputs = random_inputs(0, batch=4, length=12)
  return model, params, config, {"encoder_input_tokens": jnp.asarray(inputs)}


@pytest.mark.parametrize("name", ["t5_1_0_tiny", "t5_1_1_tiny"])
def test_cached_equals_uncached_token_for_token(name):
  model, params, _ = tiny_model(name, seed=3)
  batch = {"encoder_input_tokens": jnp.asarray(random_inputs(1, batch=4, length=10))}
  cached, cached_scores = model.predict_batch(params, batch, max_decode_length=12,
                                              eos_id=None, return_scores=True)
  uncached, uncached_scores = model.predict_batch(params, batch, max_decode_length=12,
                                                  eos_id=None, use_cache=False,
                                                  return_scores=True)
  assert len(np.unique(np.asarray(cached))) > 4, "degenerate decode; test cannot fail"
  np.testing.assert_array_equal(cached, uncached)
  np.testing.assert_allclose(cached_scores, uncached_scores, atol=1e-4)


def test_greedy_stops_each_row_at_eos_and_scores_are_log_likelihoods(setup):
  model, params, _, batch = setup
  free = np.asarray(model.predict_batch(params, batch, max_decode_length=16, eos_id=None))
  # Use as "EOS" a token that rows first generate at different steps; rows
  # that never generate it must run to the full length unchanged.
  def first_steps(token):
    return [int(np.flatnonzero(row == token)[0]) if (row == token).any() else None
            for row in free]
  stop_id = max(np.unique(free).tolist(),
                key=lambda token: len({s for s in first_steps(token) if s is not None}))
  stops = first_steps(stop_id)
  assert len({s for s in stops if s is not None}) > 1, "rows should stop at different steps"
  tokens, scores = model.predict_batch(params, batch, max_decode_length=16, eos_id=stop_id,
                                       return_scores=True)
  tokens = np.asarray(tokens)
  lengths = []
  for row, free_row, stop in zip(tokens, free, stops):
    length = 16 if stop is None else stop + 1
    np.testing.assert_array_equal(row[:length], free_row[:length])
    assert (row[length:] == 0).all()
    lengths.append(length)
  scored = teacher_forced_batch(np.asarray(batch["encoder_input_tokens"]), tokens)
  scored["decoder_loss_weights"] = jnp.asarray(
      np.arange(16)[None] < np.array(lengths)[:, None], jnp.float32)
  np.testing.assert_allclose(scores, model.score_batch(params, scored), atol=1e-4)


def test_sampling_draws_distinct_reproducible_samples(setup):
  model, params, _, batch = setup
  kwargs = dict(decode_method="sample", num_decodes=5, temperature=1.0,
                max_decode_length=8, eos_id=None)
  first = np.asarray(model.predict_batch(params, batch, rng=jax.random.PRNGKey(0), **kwargs))
  again = np.asarray(model.predict_batch(params, batch, rng=jax.random.PRNGKey(0), **kwargs))
  other = np.asarray(model.predict_batch(params, batch, rng=jax.random.PRNGKey(1), **kwargs))
  assert first.shape == (4, 5, 8)
  np.testing.assert_array_equal(first, again)
  assert (first != other).any()
  assert len({tuple(sample) for sample in first[0]}) > 1  # N different samples per input


def test_top_k_one_and_tiny_top_p_are_greedy(setup):
  model, params, _, batch = setup
  greedy = np.asarray(model.predict_batch(params, batch, max_decode_length=8))
  for kwargs in (dict(top_k=1), dict(top_p=1e-6)):
    sampled = np.asarray(model.predict_batch(
        params, batch, decode_method="sample", temperature=2.0, rng=jax.random.PRNGKey(4),
        max_decode_length=8, **kwargs))
    np.testing.assert_array_equal(sampled, greedy, err_msg=str(kwargs))


def test_top_k_restricts_to_the_k_most_likely():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.2, 0.1]]))
  filtered = decoding._filter_top_k(logits, 2)  # pylint: disable=protected-access
  assert (np.asarray(filtered)[0, 3] < -1e6) and (np.asarray(filtered)[0, :3] > -2).all()
  nucleus = decoding._filter_top_p(logits, 0.6)  # pylint: disable=protected-access
  # 0.5 < 0.6, so the nucleus needs a second token: both 0.2s tie and stay.
  assert (np.asarray(nucleus)[0, :3] > -2).all() and np.asarray(nucleus)[0, 3] < -1e6


def test_beam_search_finds_the_exhaustive_best():
  """With 2 * beam >= every candidate the search is exact: compare with brute force."""
  vocab, length, alpha = 6, 3, 0.6
  model, params, _ = tiny_model("t5_1_1_tiny", seed=5, vocab_size=vocab)
  inputs = random_inputs(2, batch=2, length=6, vocab=vocab)
  tokens, scores = model.predict_batch(
      params, {"encoder_input_tokens": jnp.asarray(inputs)}, decode_method="beam",
      beam_size=vocab ** length // 2, num_decodes=3, alpha=alpha, max_decode_length=length,
      return_scores=True)
  # Every sequence ending in EOS within `length` (0 is an ordinary token mid-sequence).
  alphabet = [token for token in range(vocab) if token != EOS]
  candidates = [list(prefix) + [EOS] for size in range(length)
                for prefix in itertools.product(alphabet, repeat=size)]
  targets = np.array([c + [0] * (length - len(c)) for c in candidates], np.int32)
  sizes = np.array([len(c) for c in candidates])
  weights = np.arange(length)[None] < sizes[:, None]
  for row in range(len(inputs)):
    batch = teacher_forced_batch(np.repeat(inputs[row:row + 1], len(targets), axis=0), targets)
    # Decoding never masks generated 0s as padding; score the same way.
    batch["decoder_target_tokens"] = jnp.ones_like(batch["decoder_target_tokens"])
    log_probs = jax.nn.log_softmax(model.compute_logits(params, batch), axis=-1)
    token_log_probs = np.take_along_axis(np.asarray(log_probs), targets[..., None], -1)[..., 0]
    log_likelihood = (token_log_probs * weights).sum(-1)
    penalised = log_likelihood / ((5.0 + sizes) / 6.0) ** alpha
    best = np.argsort(-penalised)[:3]
    np.testing.assert_array_equal(tokens[row], targets[best])
    np.testing.assert_allclose(scores[row], penalised[best], atol=1e-4)


def test_beam_search_with_cache_equals_without(setup):
  model, params, _, batch = setup
  cached = model.predict_batch(params, batch, decode_method="beam", beam_size=3,
                               max_decode_length=8)
  uncached = model.predict_batch(params, batch, decode_method="beam", beam_size=3,
                                 max_decode_length=8, use_cache=False)
  np.testing.assert_array_equal(cached, uncached)


def test_decode_argument_errors(setup):
  model, params, _, batch = setup
  with pytest.raises(ValueError, match="decode_method"):
    model.predict_batch(params, batch, decode_method="nucleus", max_decode_length=4)
  with pytest.raises(ValueError, match="rng"):
    model.predict_batch(params, batch, decode_method="sample", max_decode_length=4)
  with pytest.raises(ValueError, match="max_decode_length"):
    model.predict_batch(params, batch)
