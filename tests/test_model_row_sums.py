"""Leading-axis sums by halving, and the RMS-norm scale that uses them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import row_sums


@pytest.mark.parametrize("shape", [(1, 5), (2, 3), (7, 4), (8, 128, 16), (3, 5, 6), (1024, 8)])
def test_sum_of_products_is_the_sum_over_leading_axes(shape):
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal(shape), rng.standard_normal(shape)
  got = row_sums.sum_of_products(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  want = (a * b).reshape(-1, shape[-1]).sum(axis=0)
  assert got.shape == (shape[-1],) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sum_of_products_accumulates_bfloat16_inputs_in_float32():
  # 4096 products of 1.0 + 2^-7: a bfloat16 running sum could not hold them.
  ones = jnp.full((4096, 2), 1 + 2**-7, jnp.bfloat16)
  np.testing.assert_allclose(row_sums.sum_of_products(ones, jnp.ones_like(ones)),
                             [4096 * (1 + 2**-7)] * 2, rtol=1e-6)


def test_sum_of_products_rejects_different_shapes():
  with pytest.raises(ValueError, match="equal shapes"):
    row_sums.sum_of_products(jnp.ones((4, 3)), jnp.ones((3, 4)))


def test_sum_of_products_lowers_without_a_leading_axis_reduction():
  text = jax.jit(row_sums.sum_of_products).lower(jnp.ones((64, 8)), jnp.ones((64, 8))).as_text()
  assert "stablehlo.reduce" not in text


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_scale_features_gradients_are_autodiffs(dtype):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((4, 6, 8)), dtype)
  scale = jnp.asarray(rng.standard_normal(8), dtype)
  weights = jnp.asarray(rng.standard_normal((4, 6, 8)), jnp.float32)

  def loss(function):
    return lambda x, s: jnp.sum(jnp.sin(function(x, s).astype(jnp.float32)) * weights)

  got = jax.grad(loss(row_sums.scale_features), argnums=(0, 1))(x, scale)
  want = jax.grad(loss(lambda x, s: x * s), argnums=(0, 1))(x, scale)
  np.testing.assert_array_equal(row_sums.scale_features(x, scale), x * scale)
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for g, w in zip(got, want):
    assert g.dtype == w.dtype == dtype
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                               rtol=tolerance, atol=tolerance)
