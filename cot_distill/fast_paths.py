"""The one switch for code that exists only for XLA:CPU's speed.

The model, loss and optimizer are written as T5X writes them: `jnp.einsum`,
`lax.dot_general`, `jnp.sum`, autodiff gradients. That is what TPUs and
GPUs run, and what the sharding partitioner turns into the fewest
collectives. XLA:CPU, where this project is tested, runs some of those forms
far below its peak (see `cot_distill/model/README.md`, "CPU notes"), so the
project also has CPU kernels:

- `cot_distill.model.matmul`: bfloat16 products with float32 accumulation
  and custom VJPs, attention products made row-major (batch flattening and
  `optimization_barrier`);
- `cot_distill.model.row_sums`: leading-axis sums by halving, for the RMS
  norms' scale gradient and Adafactor's column statistics;
- `cot_distill.cpu_runtime`: synchronous dispatch and glibc memory retention
  (process-wide, so only command-line entry points apply them).

On a sharded mesh those kernels cost communication (halving sums over a
sharded axis compile to chains of collective-permutes where `jnp.sum` is one
all-reduce), so they must never reach an accelerator. Every call site goes
through the functions below, which pick the CPU kernel or the plain form by
one setting:

    cpu_fast_paths = "auto"  # CPU kernels on the CPU backend only (default)
                   | "on"    # always (testing the kernels anywhere)
                   | "off"   # never: plain JAX/Flax everywhere

Set it in gin (`fast_paths.setting.cpu_fast_paths = 'off'`, or on the
command line `--gin.fast_paths.setting.cpu_fast_paths="'off'"`) or in code
with `forced(mode)`. It is read while a function is traced, so set it
before the model or train step is compiled.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import gin
import jax
import jax.numpy as jnp

Array = jax.Array
MODES = ("auto", "on", "off")

_forced: list[str] = []  # innermost `forced(...)` last


def _check(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"cpu_fast_paths must be one of {', '.join(MODES)}, got {mode!r}")
  return mode


@gin.configurable(module="cot_distill.fast_paths")
def setting(cpu_fast_paths: str = "auto") -> str:
  """The configured mode; gin binds `fast_paths.setting.cpu_fast_paths`."""
  return _check(cpu_fast_paths)


def mode() -> str:
  """The mode in effect: the innermost `forced` one, else the gin setting."""
  return _forced[-1] if _forced else setting()


@contextlib.contextmanager
def forced(value: str) -> Iterator[None]:
  """Overrides the setting inside the context (tests, benchmarks)."""
  _forced.append(_check(value))
  try:
    yield
  finally:
    _forced.pop()


def enabled(backend: str | None = None) -> bool:
  """Whether the CPU kernels run: "on", or "auto" on the CPU backend."""
  current = mode()
  if current != "auto":
    return current == "on"
  return (backend or jax.default_backend()) == "cpu"


# --- the operations with two forms --------------------------------------------
# Each takes the arguments of the plain form; the CPU kernels are imported
# lazily so that with the switch off they are not even loaded.


def dense(inputs: Array, kernel: Array, *, dtype: Any, out_dtype: Any = None) -> Array:
  """inputs [..., in] x kernel [in, out] in `dtype`; result in `out_dtype` (default `dtype`).

  Plain: T5X's `DenseGeneral` (both operands cast to `dtype`, one
  `lax.dot_general`); a float32 `out_dtype` asks for float32 accumulation
  output, what TPUs and GPUs accumulate in anyway.
  """
  if enabled():
    from cot_distill.model import matmul  # pylint: disable=import-outside-toplevel
    return matmul.dense(inputs, kernel, dtype=dtype, out_dtype=out_dtype)
  dtype = jnp.dtype(dtype)
  out_dtype = dtype if out_dtype is None else jnp.dtype(out_dtype)
  inputs, kernel = jnp.asarray(inputs, dtype), jnp.asarray(kernel, dtype)
  product = jax.lax.dot_general(
      inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
      preferred_element_type=None if out_dtype == dtype else out_dtype)
  return product.astype(out_dtype)


def einsum(spec: str, lhs: Array, rhs: Array, *, dtype: Any, out_dtype: Any = None) -> Array:
  """`jnp.einsum(spec, lhs, rhs)` with operands in `dtype`, result in `out_dtype`."""
  if enabled():
    from cot_distill.model import matmul  # pylint: disable=import-outside-toplevel
    return matmul.einsum(spec, lhs, rhs, dtype=dtype, out_dtype=out_dtype)
  dtype = jnp.dtype(dtype)
  out_dtype = dtype if out_dtype is None else jnp.dtype(out_dtype)
  product = jnp.einsum(spec, jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype),
                       preferred_element_type=None if out_dtype == dtype else out_dtype)
  return product.astype(out_dtype)


def attention_logits(query: Array, key: Array) -> Array:
  """query [b, q, h, d] . key [b, k, h, d] -> [b, h, q, k] (T5X's first einsum)."""
  if enabled():
    from cot_distill.model import matmul  # pylint: disable=import-outside-toplevel
    # Heads next to the batch, keys transposed once: row-major products.
    return matmul.batched_matmul(jnp.swapaxes(query, 1, 2), jnp.transpose(key, (0, 2, 3, 1)),
                                 dtype=jnp.promote_types(query.dtype, key.dtype))
  return jnp.einsum("bqhd,bkhd->bhqk", query, key)


def attention_mix(weights: Array, value: Array) -> Array:
  """weights [b, h, q, k] . value [b, k, h, d] -> [b, q, h, d] (T5X's second einsum)."""
  if enabled():
    from cot_distill.model import matmul  # pylint: disable=import-outside-toplevel
    mixed = matmul.batched_matmul(weights, jnp.swapaxes(value, 1, 2),
                                  dtype=jnp.promote_types(weights.dtype, value.dtype))
    return jnp.swapaxes(mixed, 1, 2)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def scale_features(x: Array, scale: Array) -> Array:
  """x [..., features] * scale [features]; the CPU form sums its gradient by halving."""
  if enabled():
    from cot_distill.model import row_sums  # pylint: disable=import-outside-toplevel
    return row_sums.scale_features(x, scale)
  return x * scale


def mean_of_squares(x: Array, axis: int) -> Array:
  """`jnp.mean(jnp.square(x), axis)`; the CPU form halves a matrix's leading axis."""
  if enabled() and x.ndim == 2 and axis == 0:
    from cot_distill.model import row_sums  # pylint: disable=import-outside-toplevel
    return row_sums.sum_of_products(x, x) / x.shape[0]
  return jnp.mean(jnp.square(x), axis=axis)
