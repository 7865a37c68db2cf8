"""Matrix products that keep XLA:CPU on its fast low-precision kernels.

XLA:CPU hands a dot to YNNPACK's bfloat16 kernels (AVX-512-BF16) only when
its result is float32. A dot whose result is bfloat16, the form
`jnp.dot(bf16, bf16)` produces, is rewritten to upcast both operands and
multiply in float32: on this project's reference CPU that is 2x slower for a
training-sized product and 8x slower for a decoding step's 8-row logits
product (`cot-distill bench train|decode` print the effect). TPUs and GPUs
accumulate bfloat16 products in float32 anyway, so asking for a float32
result and rounding it once gives the same numbers there and the fast path
here.

The custom VJP keeps the backward products in the same form: without it,
the cotangent of the float32 result is float32 and both gradient products
would run as mixed float32 x bfloat16 dots, i.e. in float32.

CPU kernels: the model reaches them only through `cot_distill.fast_paths`
(CPU backend only by default). On a sharded mesh the row-major attention
products add all-gathers that the plain einsums do not need.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _parse(spec: str) -> tuple[str, str, str]:
  inputs, output = spec.replace(" ", "").split("->")
  lhs, rhs = inputs.split(",")
  for operand in (lhs, rhs):
    missing = set(operand) - set(output) - set(lhs if operand is rhs else rhs)
    if missing:
      # An index summed away inside one operand has no product to transpose.
      raise ValueError(f"einsum {spec!r}: index {sorted(missing)} appears in one operand only")
  return lhs, rhs, output


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _accumulating_einsum(spec: str, out_dtype: Any, lhs: Array, rhs: Array) -> Array:
  return jnp.einsum(spec, lhs, rhs, preferred_element_type=jnp.float32).astype(out_dtype)


def _forward(spec, out_dtype, lhs, rhs):
  return _accumulating_einsum(spec, out_dtype, lhs, rhs), (lhs, rhs)


def _backward(spec, out_dtype, residuals, cotangent):  # pylint: disable=unused-argument
  lhs, rhs = residuals
  lhs_axes, rhs_axes, out_axes = _parse(spec)
  cotangent = cotangent.astype(lhs.dtype)
  d_lhs = jnp.einsum(f"{out_axes},{rhs_axes}->{lhs_axes}", cotangent, rhs,
                     preferred_element_type=jnp.float32)
  d_rhs = jnp.einsum(f"{lhs_axes},{out_axes}->{rhs_axes}", lhs, cotangent,
                     preferred_element_type=jnp.float32)
  return d_lhs.astype(lhs.dtype), d_rhs.astype(rhs.dtype)


_accumulating_einsum.defvjp(_forward, _backward)


@functools.lru_cache(maxsize=None)
def _backend_runs_accumulating_dots(backend: str) -> bool:
  """Whether this backend runs bfloat16 x bfloat16 -> float32 dots.

  TPUs and GPUs always do. XLA:CPU does only through YNNPACK (its default
  since jaxlib 0.8); with YNNPACK switched off by XLA_FLAGS, its fallback
  kernel rejects the type at run time, so a tiny probe decides once.
  """
  if backend != "cpu":
    return True
  # Called while tracing a model: the probe must run now, not be staged.
  with jax.ensure_compile_time_eval():
    probe = jnp.ones((16, 16), jnp.bfloat16)
    try:
      product = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))(probe)
      return bool(product[0, 0] == 16.0)
    except jax.errors.JaxRuntimeError:
      return False


def einsum(spec: str, lhs: Array, rhs: Array, *, dtype: Any, out_dtype: Any = None) -> Array:
  """`jnp.einsum(spec, lhs, rhs)` computed in `dtype`, accumulated in float32.

  Both operands are cast to `dtype`; the result has `out_dtype` (default
  `dtype`; float32 keeps the accumulator unrounded). For float32, or
  where the backend cannot accumulate (see `_backend_runs_accumulating_dots`),
  this is a plain einsum. Every index must appear in the output or in both
  operands (true of every product in T5).
  """
  dtype = jnp.dtype(dtype)
  out_dtype = dtype if out_dtype is None else jnp.dtype(out_dtype)
  lhs, rhs = jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype)
  _parse(spec)
  if dtype == jnp.float32 or not _backend_runs_accumulating_dots(jax.default_backend()):
    return jnp.einsum(spec, lhs, rhs).astype(out_dtype)
  return _accumulating_einsum(spec, out_dtype, lhs, rhs)


def dense(inputs: Array, kernel: Array, *, dtype: Any, out_dtype: Any = None) -> Array:
  """inputs [..., in] x kernel [in, out] -> [..., out] in `out_dtype` (default `dtype`).

  XLA:CPU's YNNPACK takes 2-D products with any side of at least 8; smaller
  ones (toy test configs) go to a kernel without the mixed type, so they
  stay plain.
  """
  if max(inputs.size // max(inputs.shape[-1], 1), *kernel.shape) < 8:
    product = jnp.dot(jnp.asarray(inputs, dtype), jnp.asarray(kernel, dtype))
    return product if out_dtype is None else product.astype(out_dtype)
  if jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.float32:
    # (bfloat16 products were faster through `einsum`'s VJP, as XLA
    # arranges them, than through `_row_major_product`.)
    float32 = jnp.dtype(jnp.float32)
    rows = jnp.asarray(inputs, float32).reshape(-1, inputs.shape[-1])
    product = _row_major_product(float32 if out_dtype is None else jnp.dtype(out_dtype),
                                 rows, jnp.asarray(kernel, float32))
    return product.reshape(inputs.shape[:-1] + kernel.shape[-1:])
  return einsum("...i,io->...o", inputs, kernel, dtype=dtype, out_dtype=out_dtype)


def _batched_product(lhs: Array, rhs: Array, out_dtype: Any) -> Array:
  """[..., m, k] x [..., k, n] -> [..., m, n], float32 accumulation.

  The barriers keep XLA from folding a caller's transpose into the product:
  YNNPACK only takes row-major operands, and XLA:CPU's fallback kernel has
  no bfloat16 x bfloat16 -> float32. The batch axes are flattened into one
  for the same reason: XLA keeps a transpose of a matrix's last two axes as
  a layout change, and a batched product whose operand arrives in that
  column-major layout is run in float32 (the attention products of a training
  step were; half YNNPACK's bfloat16 speed). Flattening the batch forces a
  row-major copy.
  """
  lhs, rhs = jax.lax.optimization_barrier((lhs, rhs))
  batch_shape = lhs.shape[:-2]
  lhs = lhs.reshape((-1,) + lhs.shape[-2:])
  rhs = rhs.reshape((-1,) + rhs.shape[-2:])
  product = jax.lax.dot_general(lhs, rhs, (((2,), (1,)), ((0,), (0,))),
                                preferred_element_type=jnp.float32)
  return product.reshape(batch_shape + product.shape[-2:]).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _row_major_product(out_dtype: Any, lhs: Array, rhs: Array) -> Array:
  """`_batched_product` whose gradient products are row-major too.

  Autodiff's gradient products contract the right operand's last axis and
  the left operand's row axis, i.e. read one operand transposed; XLA:CPU's
  fast kernels take only row-major operands (a float32 32k-vocabulary logits
  layer ran those at half the forward product's speed). Here the transposes
  are materialised once and every gradient product is a plain one.
  """
  return _batched_product(lhs, rhs, out_dtype)


def _row_major_forward(out_dtype, lhs, rhs):
  return _row_major_product(out_dtype, lhs, rhs), (lhs, rhs)


def _row_major_backward(out_dtype, residuals, cotangent):  # pylint: disable=unused-argument
  lhs, rhs = residuals
  cotangent = cotangent.astype(lhs.dtype)
  swap_last = lambda x: jnp.swapaxes(x, -1, -2)  # pylint: disable=unnecessary-lambda-assignment
  return (_batched_product(cotangent, swap_last(rhs), lhs.dtype),
          _batched_product(swap_last(lhs), cotangent, rhs.dtype))


_row_major_product.defvjp(_row_major_forward, _row_major_backward)


def batched_matmul(lhs: Array, rhs: Array, *, dtype: Any) -> Array:
  """lhs [..., m, k] @ rhs [..., k, n] in `dtype` with float32 accumulation.

  For attention's per-head products. Low-precision products take YNNPACK's
  batched kernels (about 2x XLA:CPU's other paths for T5 small's heads) when
  every side of the matrices allows it; YNNPACK declines a matrix-vector
  product inside a batch (m or n of 1), so those, float32, and backends
  without the mixed type stay plain.
  """
  dtype = jnp.dtype(dtype)
  lhs, rhs = jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype)
  m, k = lhs.shape[-2:]
  n = rhs.shape[-1]
  if (dtype == jnp.float32 or min(m, n) < 2 or max(m, k, n) < 8
      or not _backend_runs_accumulating_dots(jax.default_backend())):
    return jnp.matmul(lhs, rhs)
  return _row_major_product(dtype, lhs, rhs)
