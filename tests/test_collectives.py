"""Communication of the compiled train and decode steps on 8 fake devices.

With `cpu_fast_paths=off` (what TPUs and GPUs run) each layout's optimised
program must have no collective-permute, and no more all-reduce /
all-gather / reduce-scatter / all-to-all (count and bytes, per kind) than
the plain reference, the same model with textbook jnp operations
(`cot_distill.benchmarks.collectives`). `pytest -s` prints the table;
`cot-distill bench collectives` prints it for every variant.
"""

from __future__ import annotations

import pytest

from cot_distill.benchmarks import collectives

import train_testing

_HLO = """
ENTRY %main (p: f32[8,16]) -> f32[8,16] {
  %all-reduce.1 = f32[8,16]{1,0} all-reduce(f32[8,16]{1,0} %p), channel_id=1, to_apply=%add
  %all-reduce.2 = (bf16[4]{0}, f32[2,3]{1,0}) all-reduce(bf16[4]{0} %a, f32[2,3]{1,0} %b), to_apply=%add
  %all-gather-start = (f32[2]{0}, f32[16]{0}) all-gather-start(f32[2]{0} %c), dimensions={0}
  %all-gather-done = f32[16]{0} all-gather-done((f32[2]{0}, f32[16]{0}) %all-gather-start)
  %collective-permute.3 = s32[5]{0} collective-permute(s32[5]{0} %d), source_target_pairs={{0,1}}
  ROOT %all-to-all = f32[8,16]{1,0} all-to-all(f32[8,16]{1,0} %e), dimensions={0}
}
"""


def test_collectives_are_counted_with_their_result_bytes():
  found = collectives.collectives(_HLO)
  assert found["all-reduce"] == collectives.Collective(2, 8 * 16 * 4 + 4 * 2 + 6 * 4)
  assert found["all-gather"] == collectives.Collective(1, 16 * 4)  # the async pair once
  assert found["collective-permute"] == collectives.Collective(1, 5 * 4)
  assert found["all-to-all"] == collectives.Collective(1, 8 * 16 * 4)
  assert found["reduce-scatter"] == collectives.Collective(0, 0)


@pytest.fixture(scope="module")
def eight_devices():
  train_testing.require_eight_devices()


def test_cpu_kernels_on_a_mesh_are_what_the_check_catches(eight_devices):
  # The halving sums over the data-sharded batch: collective-permutes that
  # the plain program does not have (the check below could fail).
  found = collectives.table("train", "data_parallel 8x1", "on")
  assert found["collective-permute"].count > 0


_CASES = [(program, name) for program in collectives.PROGRAMS
          for name, _, _ in collectives.LAYOUTS]


@pytest.mark.slow
@pytest.mark.parametrize("program,layout", _CASES, ids=[f"{p}-{l.split()[0]}-{l.split()[1]}"
                                                        for p, l in _CASES])
def test_fast_paths_off_communicates_no_more_than_plain_jax(eight_devices, program, layout):
  rows = {(program, layout, variant): collectives.table(program, layout, variant)
          for variant in ("off", "reference")}
  print()
  print(collectives.format_rows(rows))
  off, reference = rows[(program, layout, "off")], rows[(program, layout, "reference")]
  assert off["collective-permute"].count == 0, off
  for kind in collectives.KINDS:
    assert off[kind].count <= reference[kind].count, (kind, off, reference)
    assert off[kind].bytes <= reference[kind].bytes, (kind, off, reference)
  if layout != "data_parallel 8x1" or program == "train":
    # A program that communicates (gradients, or split weights).
    assert sum(found.count for found in off.values()) > 0
