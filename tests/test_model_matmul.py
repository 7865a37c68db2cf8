"""Float32-accumulating products: same numbers as a plain product, fast-path HLO."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cot_distill.model import matmul


def _operands(shape_lhs, shape_rhs, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal(shape_lhs), jnp.float32),
          jnp.asarray(rng.standard_normal(shape_rhs) / 8, jnp.float32))


def test_bfloat16_dense_matches_a_float32_product_of_the_rounded_operands():
  x, w = _operands((4, 16, 64), (64, 96))
  out = matmul.dense(x, w, dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16 and out.shape == (4, 16, 96)
  reference = jnp.dot(x.astype(jnp.bfloat16).astype(jnp.float32),
                      w.astype(jnp.bfloat16).astype(jnp.float32))
  # One rounding of an exactly accumulated result: within half a bf16 ulp.
  np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=2**-8, atol=1e-6)


def test_gradients_equal_the_plain_bfloat16_product_gradients():
  x, w = _operands((32, 64), (64, 48))

  def loss(function, x, w):
    return jnp.sum(jnp.sin(function(x, w).astype(jnp.float32)))

  mixed = jax.grad(lambda x, w: loss(lambda a, b: matmul.dense(a, b, dtype=jnp.bfloat16),
                                     x, w), argnums=(0, 1))(x, w)
  plain = jax.grad(lambda x, w: loss(
      lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)), x, w),
                   argnums=(0, 1))(x, w)
  exact = jax.grad(lambda x, w: loss(jnp.dot, x, w), argnums=(0, 1))(x, w)
  for got, same_precision, reference in zip(mixed, plain, exact):
    assert got.dtype == jnp.float32  # cotangent of the float32 primal
    np.testing.assert_allclose(got, same_precision, rtol=0.05, atol=0.02)
    error = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert error < 0.01, error


def test_attention_shaped_einsum_gradients():
  q, k = _operands((2, 8, 3, 16), (2, 8, 3, 16))
  spec = "bqhd,bkhd->bhqk"
  got = jax.grad(lambda q, k: jnp.sum(matmul.einsum(spec, q, k, dtype=jnp.float32) ** 2),
                 argnums=(0, 1))(q, k)
  want = jax.grad(lambda q, k: jnp.sum(jnp.einsum(spec, q, k) ** 2), argnums=(0, 1))(q, k)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_float32_dense_values_and_gradients_are_the_plain_products():
  # On CPU these go through `_row_major_dense` (materialised transposes).
  x, w = _operands((2, 8, 32), (32, 16))
  np.testing.assert_allclose(matmul.dense(x, w, dtype=jnp.float32), jnp.dot(x, w),
                             rtol=1e-6, atol=1e-6)
  loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))  # pylint: disable=unnecessary-lambda-assignment
  got = jax.grad(loss(lambda x, w: matmul.dense(x, w, dtype=jnp.float32)), argnums=(0, 1))(x, w)
  want = jax.grad(loss(jnp.dot), argnums=(0, 1))(x, w)
  for g, w_ in zip(got, want):
    assert g.shape == w_.shape
    np.testing.assert_allclose(g, w_, rtol=1e-5, atol=1e-6)


def test_bfloat16_dense_lowers_to_a_float32_result_dot():
  """The property XLA:CPU needs to pick its bf16 kernels (see the module docstring)."""
  x, w = _operands((16, 64), (64, 32))
  text = jax.jit(lambda x, w: matmul.dense(x, w, dtype=jnp.bfloat16)).lower(x, w).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*", text)
  assert dots and all("bf16>, tensor<" in dot and "xf32>" in dot.split("->")[-1]
                      for dot in dots), dots


def test_tiny_products_stay_plain_and_run():
  # XLA:CPU's fallback kernel has no bf16 x bf16 -> f32; sides below 8 go there.
  x, w = _operands((2, 3), (3, 4))
  text = jax.jit(lambda x, w: matmul.dense(x, w, dtype=jnp.bfloat16)).lower(x, w).as_text()
  assert "xf32>" not in text.split("stablehlo.dot_general")[1].split("\n")[0]
  assert matmul.dense(x, w, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_cpu_backend_runs_accumulating_dots():
  assert matmul._backend_runs_accumulating_dots(jax.default_backend())  # pylint: disable=protected-access


def test_an_index_summed_inside_one_operand_is_rejected():
  x, w = _operands((4, 5), (5, 6))
  with pytest.raises(ValueError, match="one operand only"):
    matmul.einsum("ij,jk->k", x, w, dtype=jnp.bfloat16)


@pytest.mark.parametrize("shapes", [((2, 3, 16, 8), (2, 3, 8, 16)),   # attention-like
                                    ((2, 3, 1, 8), (2, 3, 8, 16))])   # one query row
def test_batched_matmul_values_and_gradients(shapes):
  a, b = _operands(*shapes)

  def loss(function, a, b):
    return jnp.sum(jnp.sin(function(a, b).astype(jnp.float32)))

  got = jax.value_and_grad(lambda a, b: loss(
      lambda x, y: matmul.batched_matmul(x, y, dtype=jnp.bfloat16), a, b), argnums=(0, 1))(a, b)
  want = jax.value_and_grad(lambda a, b: loss(
      lambda x, y: jnp.matmul(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)), a, b),
                            argnums=(0, 1))(a, b)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-2)
  for g, w in zip(got[1], want[1]):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, rtol=0.05, atol=0.02)
  out = matmul.batched_matmul(a, b, dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16 and out.shape == shapes[0][:-1] + shapes[1][-1:]


def _compiled_dot_operand_types(function, *args):
  """Operand dtypes of every dot in XLA's optimised program."""
  text = jax.jit(function).lower(*args).compile().as_text()
  types = []
  for name, params in re.findall(r"^%(\S+) \((.*?)\) -> \S+ \{", text, re.M):
    body = text.split(f"%{name} (", 1)[1].split("\n}", 1)[0]
    if " dot(" in body:
      types.append(sorted(set(re.findall(r"(bf16|f32)\[", params))))
  return types


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU kernel selection")
def test_batched_gradient_products_keep_bfloat16_operands_on_cpu():
  # Both gradient products read an operand transposed; XLA keeps such a
  # transpose as a layout change unless the batch is flattened, and then runs
  # the product in float32 (see `_batched_product`).
  a, b = _operands((2, 3, 16, 32), (2, 3, 32, 24))

  def gradients(a, b):
    return jax.grad(lambda a, b: jnp.sum(jnp.sin(matmul.batched_matmul(
        a, jnp.swapaxes(b, -1, -2), dtype=jnp.bfloat16).astype(jnp.float32))),
                    argnums=(0, 1))(a, jnp.swapaxes(b, -1, -2))

  types = _compiled_dot_operand_types(gradients, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
  assert len(types) == 3 and all(t == ["bf16"] for t in types), types
