"""Model descriptors: dense, GQA, MLA and Mixture-of-Experts transformer architectures.

YAML files under ``workloads/models/`` are validated into a frozen :class:`ModelSpec`.
Architecture numbers come from one published ``config.json`` (named in ``source``);
``published_params`` carries the totals the vendor states, with their own source, so tests
can check :func:`ModelSpec.total_params` against them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from .config import Frozen, list_names, load_yaml, resolve, validate

MODEL_DIR = "workloads/models"


class Attention(Frozen):
    kind: Literal["mha", "gqa", "mla"]
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)  # for MLA: equals num_heads (the latent is shared)
    head_dim: int = Field(gt=0)  # q/k head dim for MHA/GQA; for MLA qk_nope + qk_rope
    qkv_bias: bool = False
    # MLA (DeepSeek-V2/V3): low-rank query and joint KV compression
    q_lora_rank: Optional[int] = None  # None: full-rank query projection
    kv_lora_rank: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    v_head_dim: Optional[int] = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "mla":
            for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                if getattr(self, f) is None:
                    raise ValueError(f"MLA attention needs {f}")
        elif self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        return self


class FFN(Frozen):
    intermediate_size: int = Field(gt=0)
    gated: bool = True  # SwiGLU-style gate+up (3 matrices) vs plain up/down (2)
    activation: str = "silu"


class MoE(Frozen):
    num_experts: int = Field(gt=0)  # routed experts per MoE layer
    top_k: int = Field(gt=0)
    expert_intermediate_size: int = Field(gt=0)
    num_shared_experts: int = Field(default=0, ge=0)
    shared_intermediate_size: Optional[int] = None  # per shared expert; default expert_intermediate_size
    first_dense_layers: int = Field(default=0, ge=0)  # the first k layers use the dense FFN
    moe_layer_freq: int = Field(default=1, ge=1)  # every n-th layer (after the dense ones) is MoE
    num_groups: int = Field(default=1, ge=1)  # expert groups (DeepSeek node-limited, Pangu MoGE)
    topk_groups: Optional[int] = None  # groups a token may route into (DeepSeek-V3: 4 of 8)
    routing: Literal["softmax_topk", "sigmoid_topk", "grouped_topk", "moge"] = "softmax_topk"
    router_bias: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} exceeds num_experts {self.num_experts}")
        if self.num_experts % self.num_groups:
            raise ValueError(f"num_experts {self.num_experts} not divisible by num_groups {self.num_groups}")
        return self


class PublishedParams(Frozen):
    total: float = Field(gt=0)
    active: Optional[float] = None
    source: str


class ModelSpec(Frozen):
    name: str
    family: str = ""
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    source: str  # the config.json (or paper table) the architecture numbers come from
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_embeddings: bool = False
    attention: Attention
    ffn: FFN  # dense FFN (all layers of a dense model; the dense layers of an MoE model)
    moe: Optional[MoE] = None
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    max_position_embeddings: Optional[int] = None
    dtype: Literal["bf16", "fp16", "fp8", "fp32"] = "bf16"
    mtp_layers: int = Field(default=0, ge=0)  # multi-token-prediction modules (DeepSeek-V3); not counted in serving
    published_params: Optional[PublishedParams] = None

    @model_validator(mode="after")
    def _check(self):
        if self.moe and self.moe.first_dense_layers > self.num_layers:
            raise ValueError("moe.first_dense_layers exceeds num_layers")
        return self

    # -- structure -------------------------------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        if self.moe is None or layer < self.moe.first_dense_layers:
            return False
        return (layer - self.moe.first_dense_layers) % self.moe.moe_layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers


@lru_cache(maxsize=None)
def load_model(name_or_path: str) -> ModelSpec:
    path = resolve(MODEL_DIR, name_or_path, what="model")
    return validate(ModelSpec, load_yaml(path), file=path)


def list_models() -> list[str]:
    return list_names(MODEL_DIR)


def model_path(name_or_path: str) -> Path:
    return resolve(MODEL_DIR, name_or_path, what="model")
