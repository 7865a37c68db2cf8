"""T5 hyperparameters and the named configurations of the published models.

Field names are T5X's (`t5x/examples/t5/network.py:T5Config`) so a gin file or
`model_config.json` written for T5X reads the same here. The few extra fields
(relative-position buckets, layer-norm epsilon, special ids) are constants in
T5X; they are fields here so Hugging Face configs that change them still load.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Special ids shared by every T5 SentencePiece vocabulary (and by the T5X
# fixture): 0 is padding and also the decoder start token, 1 is EOS.
PAD_ID = 0
EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of an encoder-decoder T5.

  Defaults are T5X's T5Config defaults except the dtypes, which follow the
  T5 1.1 gin files: float32 parameters, bfloat16 activations.
  """
  vocab_size: int = 32128
  # Activation (compute) dtype; parameters are always stored in `param_dtype`.
  dtype: str = "bfloat16"
  emb_dim: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  # ("relu",) is T5 1.0; ("gelu", "linear") is T5 1.1's gated GELU, where the
  # two branches are wi_0 and wi_1 and their product feeds wo.
  mlp_activations: tuple[str, ...] = ("relu",)
  dropout_rate: float = 0.1
  # True (T5 1.0): the decoder output layer is the transposed token embedding,
  # with logits rescaled by 1/sqrt(emb_dim). False: a separate `logits_dense`.
  logits_via_embedding: bool = False
  float32_attention_logits: bool = False
  param_dtype: str = "float32"
  num_buckets: int = 32
  max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  # Operand dtype of the output (vocabulary) projection. T5X multiplies it in
  # float32; "bfloat16" multiplies bfloat16 operands with float32
  # accumulation and keeps float32 logits (what torch.autocast does), which
  # halves the cost of the largest product of a small model. Logits and the
  # loss stay float32 either way.
  logits_dtype: str = "float32"
  # Rematerialisation of each encoder and decoder layer in training:
  # "none" keeps every activation for the backward pass, "full" keeps only
  # the layer inputs, "minimal" (T5X's) also keeps the weight products (dots
  # without batch dimensions). Numbers are unchanged; memory falls, compute
  # rises. Set in gin: `config.get_config.remat_policy = 'minimal'`.
  remat_policy: str = "none"
  # One encoder and one decoder layer applied under `nn.scan` over the layer
  # count, instead of a Python loop: XLA compiles one layer instead of all of
  # them (what makes 24+24-layer XXL compile in reasonable time). Parameters
  # are stacked on axis 1 under `encoder/layers/...` (`scanned.py` converts
  # to and from T5X's unscanned `layers_N` tree). Set in gin:
  # `config.get_config.scan_layers = True`.
  scan_layers: bool = False

  def __post_init__(self):
    # JSON and gin hand over lists; a frozen dataclass must hold a tuple to be
    # hashable (jit uses the config as a static argument).
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for activation in self.mlp_activations:
      if activation not in ("relu", "gelu", "silu", "linear"):
        raise ValueError(f"T5Config.mlp_activations: unknown activation "
                         f"{activation!r} (use relu, gelu, silu or linear)")
    if self.remat_policy not in ("none", "full", "minimal"):
      raise ValueError(f"T5Config.remat_policy must be none, full or minimal, "
                       f"got {self.remat_policy!r}")
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"T5Config.scan_layers must be True or False, got "
                       f"{self.scan_layers!r}")
    for field in ("dtype", "logits_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"T5Config.{field} must be float32, bfloat16 or float16, "
                         f"got {getattr(self, field)!r}")

  @property
  def joined_kv(self) -> int:
    """Width of the joined heads axis: num_heads * head_dim."""
    return self.num_heads * self.head_dim

  def to_dict(self) -> dict[str, Any]:
    result = dataclasses.asdict(self)
    result["mlp_activations"] = list(self.mlp_activations)
    return result

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "T5Config":
    """Builds a config, rejecting unknown keys so a typo never goes silent."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"T5Config.from_dict: unknown fields {unknown}; "
                       f"known fields are {sorted(known)}")
    return cls(**values)

  def replace(self, **changes: Any) -> "T5Config":
    return dataclasses.replace(self, **changes)


def _t5_1_0(**dims: Any) -> T5Config:
  # T5 1.0 (Raffel et al., 2020): ReLU MLP, output layer tied to the embedding.
  return T5Config(mlp_activations=("relu",), logits_via_embedding=True,
                  dropout_rate=0.1, **dims)


def _t5_1_1(**dims: Any) -> T5Config:
  # T5 1.1 and Flan-T5: gated GELU, untied output layer, no pre-training
  # dropout (T5X's t5_1_1 gin files set DROPOUT_RATE = 0.0; fine-tuning runs
  # override it).
  return T5Config(mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                  dropout_rate=0.0, **dims)


# The tiny dims are T5X's t5_1_1/tiny.gin; they keep tests and the demo fast.
_TINY = dict(emb_dim=8, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
             head_dim=3, mlp_dim=16)

# Published dimensions (T5 paper table 14 for 1.0; the T5 1.1 / Flan-T5
# checkpoints' gin files for the others). All use vocabulary size 32128: the
# 32000-piece SentencePiece model plus 100 sentinels, padded to a multiple of 128.
_CONFIGS: dict[str, T5Config] = {
    "t5_1_0_tiny": _t5_1_0(**_TINY),
    "t5_1_0_small": _t5_1_0(emb_dim=512, num_heads=8, num_encoder_layers=6,
                            num_decoder_layers=6, head_dim=64, mlp_dim=2048),
    "t5_1_0_base": _t5_1_0(emb_dim=768, num_heads=12, num_encoder_layers=12,
                           num_decoder_layers=12, head_dim=64, mlp_dim=3072),
    "t5_1_0_large": _t5_1_0(emb_dim=1024, num_heads=16, num_encoder_layers=24,
                            num_decoder_layers=24, head_dim=64, mlp_dim=4096),
    "t5_1_0_xl": _t5_1_0(emb_dim=1024, num_heads=32, num_encoder_layers=24,
                         num_decoder_layers=24, head_dim=128, mlp_dim=16384),
    "t5_1_0_xxl": _t5_1_0(emb_dim=1024, num_heads=128, num_encoder_layers=24,
                          num_decoder_layers=24, head_dim=128, mlp_dim=65536),
    "t5_1_1_tiny": _t5_1_1(**_TINY),
    "t5_1_1_small": _t5_1_1(emb_dim=512, num_heads=6, num_encoder_layers=8,
                            num_decoder_layers=8, head_dim=64, mlp_dim=1024),
    "t5_1_1_base": _t5_1_1(emb_dim=768, num_heads=12, num_encoder_layers=12,
                           num_decoder_layers=12, head_dim=64, mlp_dim=2048),
    "t5_1_1_large": _t5_1_1(emb_dim=1024, num_heads=16, num_encoder_layers=24,
                            num_decoder_layers=24, head_dim=64, mlp_dim=2816),
    "t5_1_1_xl": _t5_1_1(emb_dim=2048, num_heads=32, num_encoder_layers=24,
                         num_decoder_layers=24, head_dim=64, mlp_dim=5120),
    "t5_1_1_xxl": _t5_1_1(emb_dim=4096, num_heads=64, num_encoder_layers=24,
                          num_decoder_layers=24, head_dim=64, mlp_dim=10240),
}
# Flan-T5 is T5 1.1 (LM-adapted) instruction-tuned: same shapes.
for _size in ("tiny", "small", "base", "large", "xl", "xxl"):
  _CONFIGS[f"flan_t5_{_size}"] = _CONFIGS[f"t5_1_1_{_size}"]
# The T5 1.0 paper names its two largest models by parameter count.
_CONFIGS["t5_1_0_3B"] = _CONFIGS["t5_1_0_xl"]
_CONFIGS["t5_1_0_11B"] = _CONFIGS["t5_1_0_xxl"]

CONFIG_NAMES: tuple[str, ...] = tuple(sorted(_CONFIGS))


def get_config(name: str, **overrides: Any) -> T5Config:
  """Returns the named config (e.g. "t5_1_1_small", "flan_t5_xl").

  Overrides replace fields, e.g. `get_config("t5_1_1_tiny", vocab_size=256)`.
  """
  if name not in _CONFIGS:
    raise ValueError(f"unknown T5 config {name!r}; known: {', '.join(CONFIG_NAMES)}")
  return _CONFIGS[name].replace(**overrides) if overrides else _CONFIGS[name]
