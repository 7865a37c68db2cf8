"""cot-distill: teach small T5 students to reason by distilling chain-of-thought.

Data flow (one subpackage per stage):
  data (Example) -> teacher (prompts, client, annotate -> CoT records)
  -> answers (extraction shared by filter and evaluation)
  -> preprocessors / metrics + cot_distill_tasks (SeqIO registry)
  -> model (T5 in Flax) -> train (gin, mesh, orbax) -> evaluation (reports).
"""

__version__ = "0.1.0"
