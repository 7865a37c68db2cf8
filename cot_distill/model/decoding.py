"""Autoregressive decoding: greedy, temperature / top-k / top-p sampling, beam search.

The functions here know nothing of T5: they drive a
`tokens_to_logits(token_ids [rows, 1], state) -> (logits [rows, vocab], state)`
callback whose state is the model's key/value cache (or, for the uncached
reference path, the token buffer). Everything runs inside one
`lax.while_loop`, so a whole decode is one compiled program and the loop stops
as soon as every row has produced EOS.

Outputs exclude the start token: row t of a result holds the t-th generated
id, then EOS, then zeros (T5X's convention).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
TokensToLogits = Callable[[Array, Any], tuple[Array, Any]]

NEG_INF = np.array(-1.0e7, dtype=np.float32)
PAD_ID = 0


def _filter_top_k(logits: Array, top_k: int) -> Array:
  if top_k <= 0 or top_k >= logits.shape[-1]:
    return logits
  kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
  return jnp.where(logits < kth_largest, NEG_INF, logits)


def _filter_top_p(logits: Array, top_p: float) -> Array:
  """Nucleus filter: keep the smallest set of tokens whose mass reaches top_p."""
  if top_p >= 1.0:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  # Mass strictly before each sorted token; the first token is always kept.
  mass_before = cumulative - jax.nn.softmax(sorted_logits, axis=-1)
  kept = mass_before < top_p
  cutoff = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def temperature_sample(tokens_to_logits: TokensToLogits, state: Any, *, num_rows: int,
                       max_decode_length: int, eos_id: int | None, rng: Array | None,
                       temperature: float = 0.0, top_k: int = 0,
                       top_p: float = 1.0, start_id: int = PAD_ID) -> tuple[Array, Array]:
  """Samples `num_rows` sequences (greedy argmax when temperature == 0).

  Returns (tokens [rows, max_decode_length] int32, scores [rows]): scores are
  the model's log-probability (before temperature and filtering) of each
  generated sequence up to and including its EOS. `eos_id=None` never stops
  early (benchmarks force the full length).
  """
  greedy = temperature == 0.0
  if not greedy and rng is None:
    raise ValueError("sampling (temperature > 0) needs an rng")
  if rng is None:
    rng = jax.random.PRNGKey(0)

  def cond(carry):
    step, _, _, _, done, _, _ = carry
    return (step < max_decode_length) & ~jnp.all(done)

  def body(carry):
    step, last, state, tokens, done, scores, rng = carry
    logits, state = tokens_to_logits(last[:, None], state)
    logits = logits.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    if greedy:
      next_ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      rng, step_rng = jax.random.split(rng)
      scaled = _filter_top_p(_filter_top_k(logits / temperature, top_k), top_p)
      next_ids = jax.random.categorical(step_rng, scaled, axis=-1).astype(jnp.int32)
    chosen = jnp.take_along_axis(log_probs, next_ids[:, None], axis=-1)[:, 0]
    scores = scores + jnp.where(done, 0.0, chosen)
    next_ids = jnp.where(done, PAD_ID, next_ids)
    tokens = jax.lax.dynamic_update_slice(tokens, next_ids[:, None], (0, step))
    if eos_id is not None:
      done = done | (next_ids == eos_id)
    return step + 1, next_ids, state, tokens, done, scores, rng

  carry = (jnp.zeros((), jnp.int32), jnp.full((num_rows,), start_id, jnp.int32), state,
           jnp.zeros((num_rows, max_decode_length), jnp.int32),
           jnp.zeros((num_rows,), bool), jnp.zeros((num_rows,), jnp.float32), rng)
  _, _, _, tokens, _, scores, _ = jax.lax.while_loop(cond, body, carry)
  return tokens, scores


def brevity_penalty(alpha: float, length: Array) -> Array:
  """GNMT length penalty ((5 + length) / 6) ** alpha, as T5X's beam search."""
  return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


def _gather_beams(tree: Any, beam_indices: Array, batch_size: int, old_beams: int,
                  batch_axis: int = 0) -> Any:
  """Selects beams [batch, new_beams] from leaves with batch * old_beams rows.

  The rows are axis `batch_axis` (1 for a scanned network's cache, stacked
  per layer in front). Scalars (the cache's step counter) are shared by all
  rows and kept as is.
  """
  def gather(x):
    if x.ndim == 0:
      return x
    lead = x.shape[:batch_axis]
    x = x.reshape(lead + (batch_size, old_beams) + x.shape[batch_axis + 1:])
    indices = beam_indices.reshape(
        (1,) * batch_axis + beam_indices.shape + (1,) * (x.ndim - batch_axis - 2))
    x = jnp.take_along_axis(x, indices, axis=batch_axis + 1)
    return x.reshape(lead + (-1,) + x.shape[batch_axis + 2:])
  return jax.tree_util.tree_map(gather, tree)


def beam_search(tokens_to_logits: TokensToLogits, state: Any, *, batch_size: int,
                beam_size: int, max_decode_length: int, eos_id: int,
                alpha: float = 0.6, start_id: int = PAD_ID,
                state_batch_axis: int = 0) -> tuple[Array, Array]:
  """Beam search; returns (tokens [batch, beam, length], scores [batch, beam]).

  Beams are sorted best first. A finished beam scores log p / brevity
  penalty (alpha as T5X); the search stops when no live beam can still beat
  the worst finished one. Rows that finish no beam return their live beams
  scored by raw log-probability. `state` must already hold batch * beam rows (axis
  `state_batch_axis` of its arrays).
  """
  shape = (batch_size, beam_size)

  def cond(carry):
    step, _, live_log_probs, _, finished_scores, finished, _ = carry
    # The best a live beam can still reach: its log-prob never increases,
    # and the largest brevity penalty is at the maximum length.
    best_live = live_log_probs[:, 0] / brevity_penalty(alpha, jnp.array(max_decode_length))
    worst_finished = jnp.min(jnp.where(finished, finished_scores, NEG_INF), axis=1)
    all_full = jnp.all(finished, axis=1)
    can_improve = ~all_full | (best_live > worst_finished)
    return (step < max_decode_length) & jnp.any(can_improve)

  def body(carry):
    step, live_tokens, live_log_probs, finished_tokens, finished_scores, finished, state = carry
    last = jnp.where(step == 0, start_id,
                     jax.lax.dynamic_index_in_dim(live_tokens, jnp.maximum(step - 1, 0), 2,
                                                  keepdims=False))
    logits, state = tokens_to_logits(last.reshape(-1, 1), state)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = log_probs.shape[-1]
    candidates = (live_log_probs[..., None] + log_probs.reshape(shape + (vocab,)))
    candidates = candidates.reshape(batch_size, beam_size * vocab)
    # 2 * beam candidates guarantee beam_size live ones even if beam_size end in EOS.
    top_scores, top_indices = jax.lax.top_k(candidates, 2 * beam_size)
    top_beams, top_ids = top_indices // vocab, (top_indices % vocab).astype(jnp.int32)
    top_tokens = jnp.take_along_axis(live_tokens, top_beams[..., None], axis=1)
    top_tokens = jax.lax.dynamic_update_slice(
        top_tokens, top_ids[..., None], (0, 0, step))
    # Candidates grown from the placeholder beams (initial score NEG_INF) are
    # not real hypotheses; they must never count as finished.
    is_eos = (top_ids == eos_id) & (top_scores > NEG_INF / 2)

    # Live: best beam_size candidates that did not just end.
    live_scores = jnp.where(is_eos, NEG_INF, top_scores)
    live_scores, live_pick = jax.lax.top_k(live_scores, beam_size)
    live_tokens = jnp.take_along_axis(top_tokens, live_pick[..., None], axis=1)
    state = _gather_beams(state, jnp.take_along_axis(top_beams, live_pick, axis=1),
                          batch_size, beam_size, state_batch_axis)

    # Finished: merge the old finished beams with the ones that just ended.
    new_scores = jnp.where(is_eos, top_scores / brevity_penalty(alpha, step + 1), NEG_INF)
    merged_tokens = jnp.concatenate([finished_tokens, top_tokens], axis=1)
    merged_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    merged_flags = jnp.concatenate([finished, is_eos], axis=1)
    merged_scores = jnp.where(merged_flags, merged_scores, NEG_INF)
    finished_scores, pick = jax.lax.top_k(merged_scores, beam_size)
    finished_tokens = jnp.take_along_axis(merged_tokens, pick[..., None], axis=1)
    finished = jnp.take_along_axis(merged_flags, pick, axis=1)
    return (step + 1, live_tokens, live_scores, finished_tokens, finished_scores,
            finished, state)

  initial_log_probs = jnp.tile(
      jnp.array([0.0] + [float(NEG_INF)] * (beam_size - 1), jnp.float32), (batch_size, 1))
  carry = (jnp.zeros((), jnp.int32), jnp.zeros(shape + (max_decode_length,), jnp.int32),
           initial_log_probs, jnp.zeros(shape + (max_decode_length,), jnp.int32),
           jnp.full(shape, NEG_INF, jnp.float32), jnp.zeros(shape, bool), state)
  _, live_tokens, live_log_probs, finished_tokens, finished_scores, finished, _ = (
      jax.lax.while_loop(cond, body, carry))
  none_finished = ~jnp.any(finished, axis=1)
  tokens = jnp.where(none_finished[:, None, None], live_tokens, finished_tokens)
  scores = jnp.where(none_finished[:, None], live_log_probs, finished_scores)
  return tokens, scores
