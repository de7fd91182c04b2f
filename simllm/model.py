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

from pydantic import Field, field_validator, model_validator

from .config import Frozen, list_names, load_yaml, resolve, validate

MODEL_DIR = "workloads/models"

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


class Attention(Frozen):
    kind: Literal["mha", "gqa", "mla"]
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)  # for MLA: equals num_heads (the latent is shared)
    head_dim: int = Field(gt=0)  # q/k head dim for MHA/GQA; for MLA qk_nope + qk_rope
    qkv_bias: bool = False
    o_bias: bool = False  # bias on the output projection (Pangu Pro MoE)
    qk_norm: bool = False  # RMSNorm over each q and k head (Qwen3): 2 * head_dim weights per layer
    # MLA (DeepSeek-V2/V3): low-rank query and joint KV compression
    q_lora_rank: Optional[int] = Field(default=None, gt=0)  # None: full-rank query projection
    kv_lora_rank: Optional[int] = Field(default=None, gt=0)
    qk_nope_head_dim: Optional[int] = Field(default=None, gt=0)
    qk_rope_head_dim: Optional[int] = Field(default=None, gt=0)
    v_head_dim: Optional[int] = Field(default=None, gt=0)
    # sliding-window (local) attention: each query attends to the last ``sliding_window`` key positions
    # (itself included, Hugging Face's convention) in ``window_layers`` of the layers (None: all of them;
    # gpt-oss and Gemma interleave windowed and full layers). Priced per layer in the serving step
    # (simllm.cost.ops.LayerOps); the KV cache still holds every layer's whole context (an assumption:
    # vLLM V1 frees a windowed layer's blocks behind the window, so capacity is conservative here).
    sliding_window: Optional[int] = Field(default=None, gt=0)
    window_layers: Optional[int] = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.window_layers is not None and self.sliding_window is None:
            raise ValueError("window_layers needs sliding_window")
        if self.kind == "mla" and self.sliding_window is not None:
            raise ValueError("sliding_window is not supported with MLA attention")
        if self.kind == "mla":
            for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                if getattr(self, f) is None:
                    raise ValueError(f"MLA attention needs {f}")
            if self.head_dim != self.qk_nope_head_dim + self.qk_rope_head_dim:
                raise ValueError(f"head_dim {self.head_dim} must equal qk_nope_head_dim + qk_rope_head_dim "
                                 f"({self.qk_nope_head_dim + self.qk_rope_head_dim}) for MLA")
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
    shared_intermediate_size: Optional[int] = Field(default=None, gt=0)  # per shared expert; default expert_intermediate_size
    first_dense_layers: int = Field(default=0, ge=0)  # the first k layers use the dense FFN
    moe_layer_freq: int = Field(default=1, ge=1)  # every n-th layer (after the dense ones) is MoE
    num_groups: int = Field(default=1, ge=1)  # expert groups (DeepSeek node-limited, Pangu MoGE)
    topk_groups: Optional[int] = None  # groups a token may route into (DeepSeek-V3: 4 of 8)
    routing: Literal["softmax_topk", "sigmoid_topk", "grouped_topk", "moge"] = "softmax_topk"
    router_bias: bool = False

    # field validators (not one model validator) so that errors name the offending field
    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v, info):
        n = info.data.get("num_experts")
        if n is not None and v > n:
            raise ValueError(f"top_k {v} exceeds num_experts {n}")
        return v

    @field_validator("num_groups")
    @classmethod
    def _groups(cls, v, info):
        n = info.data.get("num_experts")
        if n is not None and n % v:
            raise ValueError(f"num_experts {n} is not divisible by num_groups {v}")
        return v

    @field_validator("topk_groups")
    @classmethod
    def _topk_groups(cls, v, info):
        g = info.data.get("num_groups")
        if v is not None and (v < 1 or (g is not None and v > g)):
            raise ValueError(f"topk_groups {v} must be between 1 and num_groups {g}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.routing == "moge" and self.top_k % self.num_groups:
            raise ValueError(f"moge routing picks the same number of experts in each group: top_k {self.top_k} "
                             f"is not a multiple of num_groups {self.num_groups}")
        return self


class PublishedParams(Frozen):
    total: float = Field(gt=0)
    active: Optional[float] = Field(default=None, gt=0)
    source: str
    # Which embedding matrices the vendor's "active" figure includes: both the input embedding
    # and the output head ("both"), only the output head ("lm_head": the lookup reads one row a
    # token), or neither ("none"). :attr:`ModelSpec.active_params` follows this convention.
    active_embeddings: Literal["both", "lm_head", "none"] = "both"


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
        if (self.attention.window_layers or 0) > self.num_layers:
            raise ValueError(f"attention.window_layers {self.attention.window_layers} exceeds num_layers "
                             f"{self.num_layers}")
        return self

    @property
    def windowed_layer_share(self) -> float:
        """The share of layers whose attention is sliding-window (0 without a window)."""
        a = self.attention
        if a.sliding_window is None:
            return 0.0
        return 1.0 if a.window_layers is None else a.window_layers / self.num_layers

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

    # -- sizes (all derived from :func:`param_breakdown`) ------------------------------------
    @property
    def dtype_bytes(self) -> float:
        return DTYPE_BYTES[self.dtype]

    @property
    def total_params(self) -> float:
        """Parameters of the serving model (MTP modules excluded)."""
        return param_breakdown(self)["total"]

    @property
    def active_params(self) -> float:
        """Parameters touched per token, counting embeddings as the vendor does
        (``published_params.active_embeddings``; both matrices when nothing is published)."""
        return param_breakdown(self)["active"]

    def kv_cache_bytes_per_token(self, dtype_bytes: float | None = None) -> float:
        """KV-cache bytes one token occupies over all layers (default: the model dtype).

        GQA/MHA: ``2 * num_kv_heads * head_dim`` values a layer; MLA: the compressed latent
        plus the shared RoPE key, ``kv_lora_rank + qk_rope_head_dim`` values a layer.
        """
        b = self.dtype_bytes if dtype_bytes is None else dtype_bytes
        return self.num_layers * kv_values_per_layer(self.attention) * b

    def weight_bytes(self, dtype_bytes: float | None = None) -> float:
        """Bytes of all serving weights at ``dtype_bytes`` a parameter (default: the model dtype)."""
        b = self.dtype_bytes if dtype_bytes is None else dtype_bytes
        return self.total_params * b


# -- parameter counting: the one place where the formulas live ---------------------------------
def _ffn_params(hidden: int, intermediate: int, gated: bool) -> int:
    """One feed-forward block (dense FFN or one expert): gate+up+down, or up+down."""
    return (3 if gated else 2) * hidden * intermediate


def attention_params(spec: "ModelSpec") -> dict[str, int]:
    """Weights of one attention block, split into projections and norms inside the block."""
    a, h = spec.attention, spec.hidden_size
    if a.kind == "mla":
        qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:  # q = W_qb · norm(W_qa · x)
            q = h * a.q_lora_rank + a.q_lora_rank * a.num_heads * qk_head
            q_norm = a.q_lora_rank
        else:
            q, q_norm = h * a.num_heads * qk_head, 0
        # joint KV down-projection (latent + shared RoPE key), its norm, the up-projection
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
        o = a.num_heads * a.v_head_dim * h
        return {"q_proj": q, "kv_proj": kv, "o_proj": o, "norms": q_norm + a.kv_lora_rank}
    q = h * a.num_heads * a.head_dim
    kv = 2 * h * a.num_kv_heads * a.head_dim
    if a.qkv_bias:
        q += a.num_heads * a.head_dim
        kv += 2 * a.num_kv_heads * a.head_dim
    o = a.num_heads * a.head_dim * h + (h if a.o_bias else 0)
    return {"q_proj": q, "kv_proj": kv, "o_proj": o, "norms": 2 * a.head_dim if a.qk_norm else 0}


def kv_values_per_layer(a: Attention) -> int:
    """Values cached per token and layer."""
    if a.kind == "mla":
        return a.kv_lora_rank + a.qk_rope_head_dim
    return 2 * a.num_kv_heads * a.head_dim


def param_breakdown(spec: "ModelSpec") -> dict[str, float]:
    """Parameter counts of ``spec`` by component.

    Keys ending in ``_per_layer`` are one layer of that kind; the others are whole-model
    totals. ``attention`` includes MLA's down/up projections and their norms (and Qwen3's
    q/k norms); ``norms`` are the two RMSNorms of every layer plus the final one. ``total``
    excludes MTP modules (not used in serving). ``active`` is per token (top_k routed experts
    + shared experts + router + dense parts + attention + norms + embeddings as the vendor
    counts them, see :class:`PublishedParams`); ``active_non_embedding`` leaves both
    embedding matrices out.
    """
    h, m = spec.hidden_size, spec.moe
    attn_parts = attention_params(spec)
    attn = float(sum(attn_parts.values()))
    n_moe = spec.num_moe_layers
    n_dense = spec.num_layers - n_moe
    dense_ffn = float(_ffn_params(h, spec.ffn.intermediate_size, spec.ffn.gated))
    if m is not None:
        expert = float(_ffn_params(h, m.expert_intermediate_size, spec.ffn.gated))
        shared_i = m.shared_intermediate_size or m.expert_intermediate_size
        shared = float(m.num_shared_experts * _ffn_params(h, shared_i, spec.ffn.gated))
        routed = m.num_experts * expert
        routed_active = m.top_k * expert
        router = float(m.num_experts * h + (m.num_experts if m.router_bias else 0))
    else:
        expert = shared = routed = routed_active = router = 0.0
    embedding = float(spec.vocab_size * h)
    lm_head = 0.0 if spec.tie_embeddings else embedding
    layer_norms = float(2 * h)

    out: dict[str, float] = {
        "embedding": embedding,
        "lm_head": lm_head,
        "attention_per_layer": attn,
        "attention_q_per_layer": float(attn_parts["q_proj"]),
        "attention_kv_per_layer": float(attn_parts["kv_proj"]),
        "attention_o_per_layer": float(attn_parts["o_proj"]),
        "attention_norms_per_layer": float(attn_parts["norms"]),
        "dense_ffn_per_layer": dense_ffn if n_dense else 0.0,
        "expert": expert,
        "routed_experts_per_layer": routed,
        "shared_experts_per_layer": shared,
        "router_per_layer": router,
        "norms_per_layer": layer_norms,
        "attention": attn * spec.num_layers,
        "dense_ffn": dense_ffn * n_dense,
        "routed_experts": routed * n_moe,
        "shared_experts": shared * n_moe,
        "router": router * n_moe,
        "norms": layer_norms * spec.num_layers + h,
    }
    body_common = out["attention"] + out["dense_ffn"] + out["shared_experts"] + out["router"] + out["norms"]
    out["total_non_embedding"] = body_common + out["routed_experts"]
    out["total"] = out["total_non_embedding"] + embedding + lm_head
    out["active_non_embedding"] = body_common + routed_active * n_moe
    conv = spec.published_params.active_embeddings if spec.published_params else "both"
    emb_active = {"both": embedding + lm_head, "lm_head": lm_head or embedding, "none": 0.0}[conv]
    out["active"] = out["active_non_embedding"] + emb_active
    return out


@lru_cache(maxsize=None)
def load_model(name_or_path: str) -> ModelSpec:
    path = resolve(MODEL_DIR, name_or_path, what="model")
    return validate(ModelSpec, load_yaml(path), file=path)


def list_models() -> list[str]:
    return list_names(MODEL_DIR)


def model_path(name_or_path: str) -> Path:
    return resolve(MODEL_DIR, name_or_path, what="model")
