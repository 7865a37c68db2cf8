"""The package installs what it claims: every subpackage, the registry alias,
and every CLI command module."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import tomllib

from cot_distill import cli
from cot_distill.commands import bench

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
  listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())
               ["tool"]["setuptools"]["packages"])
  on_disk = {
      ".".join(p.parent.relative_to(REPO).parts)
      for p in (REPO / "cot_distill").rglob("__init__.py")
  } | {"cot_distill_tasks"}
  assert on_disk == listed


def test_registry_imports_under_its_distinct_name():
  module = importlib.import_module("cot_distill_tasks")
  assert pathlib.Path(module.__file__).parent == REPO / "tasks"


def test_every_command_and_benchmark_module_registers():
  parser = cli.build_parser()
  help_text = parser.format_help()
  for name in cli.COMMAND_MODULES:
    assert name in help_text
  for name in bench.BENCHMARK_MODULES:
    args = parser.parse_args(["bench", name, "--help"][:2])
    assert args.benchmark == name


def test_help_is_fast_and_imports_no_heavy_library():
  code = ("import sys; from cot_distill import cli; cli.build_parser(); "
          "heavy = [m for m in ('jax', 'tensorflow', 'torch', 'seqio') if m in sys.modules]; "
          "print(','.join(heavy))")
  out = subprocess.run([sys.executable, "-c", code], check=True,
                       capture_output=True, text=True).stdout.strip()
  assert out == ""
