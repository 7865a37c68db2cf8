"""Benchmark datasets: loaders, TFDS builders, symbolic generators, leakage checks."""

from cot_distill.data.example import AnswerType, Example, make_id

__all__ = ["AnswerType", "Example", "make_id"]
