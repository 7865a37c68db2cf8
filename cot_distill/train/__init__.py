"""The trainer: mesh + logical-axis rules, optax step, orbax checkpoints, gin entry.

`cot_distill.train.train(...)` is `trainer.train`; imported lazily so that
importing this package (e.g. for `checkpoints.restore_params`) stays cheap.
"""


def __getattr__(name):
  if name == "train":
    from cot_distill.train.trainer import train  # pylint: disable=import-outside-toplevel
    return train
  raise AttributeError(f"module 'cot_distill.train' has no attribute {name!r}")
