"""Host memory reuse between XLA:CPU executions (cot_distill.cpu_runtime).

The dispatch mode is fixed when JAX starts its CPU client, and this test
process started it long ago, so the behaviour is checked in fresh processes
that count the page faults of repeated executions.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from cot_distill import cpu_runtime

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three executions whose temporaries (64 MiB prefix sums) are freed at the
# end of each; minor page faults counted per execution after a warm-up.
_PROBE = textwrap.dedent("""
    import json, resource, sys
    from cot_distill import cpu_runtime
    synchronous = cpu_runtime.prefer_synchronous_dispatch()
    import jax, jax.numpy as jnp
    x = jnp.ones((16 * 2**20,), jnp.float32)
    probe = jax.jit(lambda x: jnp.cumsum(jnp.exp(x))[::4096] @ jnp.cumsum(jnp.sin(x))[::4096])

    def faults(executions=3):
      counts = []
      for _ in range(executions):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(probe(x))
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
      return counts

    faults()  # compile and warm up
    with cpu_runtime.retained_memory() as retained:
      with cpu_runtime.retained_memory() as nested:
        pass
      inside = faults(5)  # the outer context still holds after the inner one left
    after = faults()
    print(json.dumps({"synchronous": synchronous, "retained": retained, "nested": nested,
                      "inside": inside, "after": after}))
""")


def _run_probe(**environment):
  env = {**os.environ, "PYTHONPATH": _REPO, **environment}
  env.pop("XLA_FLAGS", None)  # one CPU device: a non-parallel computation
  result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc policy")
def test_retained_memory_stops_executions_from_faulting_their_temporaries_in_again():
  buffer_pages = 64 * 2**20 // 4096
  probe = _run_probe()
  assert probe["synchronous"] and probe["retained"] and probe["nested"]
  # Retained: the temporaries' pages are reused, not faulted in again (the
  # median execution; a machine under load has been seen to fault once).
  assert sorted(probe["inside"][1:])[2] < buffer_pages // 10, probe
  # Left the context: free memory went back to the system and is faulted in
  # again by the next execution.
  assert max(probe["after"]) > buffer_pages // 2, probe


def test_opting_out_keeps_asynchronous_dispatch_and_glibc_defaults():
  probe = _run_probe(COT_DISTILL_RETAIN_HOST_MEMORY="0")
  assert not probe["synchronous"] and not probe["retained"]
  assert min(probe["inside"]) > 64 * 2**20 // 4096 // 2, probe


def test_too_late_to_switch_once_jax_started_asynchronously():
  jax.devices()  # this process's backend is up, with JAX's default dispatch
  if not jax.config.values["jax_cpu_enable_async_dispatch"]:
    pytest.skip("this process already runs synchronously")
  assert cpu_runtime.prefer_synchronous_dispatch() is False
  with cpu_runtime.retained_memory() as retained:
    assert retained is False  # asynchronous executions allocate off the main arena


def test_fast_paths_off_leaves_dispatch_and_glibc_alone():
  # cpu_fast_paths=off is "nothing CPU-specific", process settings included.
  script = textwrap.dedent("""
      import json
      from cot_distill import cpu_runtime, fast_paths
      with fast_paths.forced("off"):
        synchronous = cpu_runtime.prefer_synchronous_dispatch()
        import jax
        jax.devices()
        with cpu_runtime.retained_memory() as retained:
          pass
      print(json.dumps({"synchronous": synchronous, "retained": retained,
                        "async": jax.config.values["jax_cpu_enable_async_dispatch"]}))
  """)
  env = {**os.environ, "PYTHONPATH": _REPO}
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
  probe = json.loads(result.stdout.strip().splitlines()[-1])
  assert probe == {"synchronous": False, "retained": False, "async": True}, probe
