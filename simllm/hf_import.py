"""Turn a Hugging Face ``config.json`` into a model descriptor.

:func:`import_hf_config` reads a local ``config.json`` and returns a plain dict in the layout
of ``workloads/models/*.yaml`` (validate it with :class:`simllm.model.ModelSpec`). Supported
families, chosen by ``architectures[0]``:

- dense Llama-style: ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``
- ``MixtralForCausalLM`` (every layer MoE, ``intermediate_size`` is the expert size)
- ``Qwen2MoeForCausalLM`` (one gated shared expert) and ``Qwen3MoeForCausalLM`` (q/k norms, no shared expert)
- ``DeepseekV2ForCausalLM`` and ``DeepseekV3ForCausalLM`` (MLA, dense prefix, shared + routed experts, groups)
- ``Llama4ForConditionalGeneration`` / ``Llama4ForCausalLM`` (Scout, Maverick: the text model's routed
  experts with one shared expert, MoE every ``interleave_moe_layer_step``-th layer, dense layers of
  ``intermediate_size_mlp``; the vision tower is not served per token and is left out)

``head_dim`` is taken when the config gives it (it need not be hidden / heads); a ``sliding_window`` the
config turns on becomes the attention block's window (``layer_types`` / ``max_window_layers`` say which layers;
see :func:`_window`); a
``quantization_config`` with ``quant_method: fp8`` (or compressed-tensors fp8 weights) makes the
weights fp8.

Anything else, a missing key, or a value of the wrong type is an :class:`InputError` naming the
file, the key and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}
_MISSING = object()


class _Cfg:
    """Typed access to the keys of one config.json, with located errors."""

    def __init__(self, data: dict, file: Path):
        self.data, self.file = data, file

    def _err(self, key: str, msg: str) -> InputError:
        return InputError(msg, file=self.file, field=key)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        v = self.data.get(key, _MISSING)
        if v is _MISSING or v is None:
            if default is _MISSING:
                raise self._err(key, "required key is missing")
            return default
        return v

    def int(self, key: str, default: Any = _MISSING, *, positive: bool = True) -> Any:
        v = self.get(key, default)
        if v is default and default is not _MISSING:
            return v
        if isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0):
            raise self._err(key, f"expected a {'positive ' if positive else ''}integer, got {v!r}")
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.get(key, default)
        if not isinstance(v, bool):
            raise self._err(key, f"expected true or false, got {v!r}")
        return v


def _dtype(c: _Cfg) -> str:
    q = c.data.get("quantization_config")
    if isinstance(q, dict) and str(q.get("quant_method", "")).lower() == "fp8":
        return "fp8"  # weights shipped in FP8 (DeepSeek-V3)
    if isinstance(q, dict) and str(q.get("quant_method", "")).lower() == "compressed-tensors":
        groups = q.get("config_groups") or {}
        w = [g.get("weights") or {} for g in groups.values() if isinstance(g, dict)]
        if w and all(x.get("type") == "float" and x.get("num_bits") == 8 for x in w):
            return "fp8"  # FP8 weights in compressed-tensors form (e.g. Llama-4-Maverick-FP8)
    if isinstance(q, dict) and q.get("quant_method") not in (None, "fp8", "compressed-tensors"):
        raise c._err("quantization_config.quant_method", f"unsupported quantization {q.get('quant_method')!r}; "
                                                         "supported: fp8 weights")
    td = c.data.get("torch_dtype") or c.data.get("dtype") or "bfloat16"
    if td not in _DTYPES:
        raise c._err("torch_dtype", f"expected one of {', '.join(_DTYPES)}, got {td!r}")
    return _DTYPES[td]


def _common(c: _Cfg) -> dict:
    out = {
        "num_layers": c.int("num_hidden_layers"),
        "hidden_size": c.int("hidden_size"),
        "vocab_size": c.int("vocab_size"),
        "tie_embeddings": c.bool("tie_word_embeddings", False),
    }
    return out


def _gqa(c: _Cfg, *, qkv_bias_default: bool = False, qk_norm: bool = False) -> dict:
    h, nh = c.int("hidden_size"), c.int("num_attention_heads")
    nkv = c.int("num_key_value_heads", nh)
    head_dim = c.int("head_dim", None)
    if head_dim is None:
        if h % nh:
            raise c._err("head_dim", f"missing, and hidden_size {h} is not a multiple of num_attention_heads {nh}")
        head_dim = h // nh
    att = {"kind": "gqa" if nkv < nh else "mha", "num_heads": nh, "num_kv_heads": nkv, "head_dim": head_dim}
    if c.bool("attention_bias", qkv_bias_default):
        att["qkv_bias"] = True
    if qk_norm:
        att["qk_norm"] = True
    att.update(_window(c))
    return att


def _window(c: _Cfg) -> dict:
    """``sliding_window`` / ``window_layers`` of the attention block: a window the config turns on
    (``sliding_window`` set and ``use_sliding_window`` not false, as Qwen2/3 configs carry a window they do
    not use), in the layers ``layer_types`` marks ``sliding_attention`` (gpt-oss, newer Gemma / Mistral
    configs), all but every ``sliding_window_pattern``-th layer (Gemma 3's form) or, for Qwen2/3 with the window
    on, the layers from ``max_window_layers`` on; else every layer."""
    w = c.int("sliding_window", None)
    if w is None or not c.bool("use_sliding_window", True):
        return {}
    n = c.int("num_hidden_layers")
    types = c.get("layer_types", None)
    if types is not None:
        if not isinstance(types, list) or len(types) != n or not all(isinstance(t, str) for t in types):
            raise c._err("layer_types", f"expected a list of {n} layer type names, got {types!r}")
        k = sum(t == "sliding_attention" for t in types)
        return {} if k == 0 else {"sliding_window": w, "window_layers": k}
    pattern = c.int("sliding_window_pattern", None)
    if pattern is not None:  # Gemma 3: every pattern-th layer global, the others windowed
        k = n - n // pattern
        return {} if k == 0 else {"sliding_window": w, "window_layers": k}
    if "use_sliding_window" in c.data and c.data.get("max_window_layers") is not None:
        first = c.int("max_window_layers", positive=False)
        k = max(0, n - first)
        return {} if k == 0 else {"sliding_window": w, "window_layers": k}
    return {"sliding_window": w}


def _ffn(c: _Cfg, size_key: str = "intermediate_size") -> dict:
    return {"intermediate_size": c.int(size_key), "gated": True, "activation": str(c.get("hidden_act", "silu"))}


def _tail(c: _Cfg, out: dict) -> dict:
    out["norm"] = "rmsnorm"
    mpe = c.int("max_position_embeddings", None)
    if mpe is not None:
        out["max_position_embeddings"] = mpe
    out["dtype"] = _dtype(c)
    return out


def _llama(c: _Cfg, family: str, **attn_kw) -> dict:
    out = {"family": family, **_common(c), "attention": _gqa(c, **attn_kw), "ffn": _ffn(c)}
    return _tail(c, out)


def _mixtral(c: _Cfg) -> dict:
    out = {"family": "mixtral", **_common(c), "attention": _gqa(c), "ffn": _ffn(c)}
    out["moe"] = {
        "num_experts": c.int("num_local_experts"),
        "top_k": c.int("num_experts_per_tok"),
        "expert_intermediate_size": c.int("intermediate_size"),
        "routing": "softmax_topk",
    }
    return _tail(c, out)


def _qwen_moe_layers(c: _Cfg) -> dict:
    """Qwen-MoE: layer i is MoE when i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0."""
    step = c.int("decoder_sparse_step", 1)
    only = c.get("mlp_only_layers", [])
    if not isinstance(only, list) or not all(isinstance(i, int) for i in only):
        raise c._err("mlp_only_layers", f"expected a list of layer indices, got {only!r}")
    if only and (step != 1 or sorted(only) != list(range(len(only)))):
        raise c._err("mlp_only_layers", "only a leading run of dense layers (0..k-1) with decoder_sparse_step 1 "
                                        f"can be described; got {only!r} with decoder_sparse_step {step}")
    first = len(only) if only else step - 1
    out: dict = {}
    if first:
        out["first_dense_layers"] = first
    if step > 1:
        out["moe_layer_freq"] = step
    return out


def _qwen2_moe(c: _Cfg) -> dict:
    out = {"family": "qwen2-moe", **_common(c), "attention": _gqa(c, qkv_bias_default=True), "ffn": _ffn(c)}
    moe = {
        "num_experts": c.int("num_experts"),
        "top_k": c.int("num_experts_per_tok"),
        "expert_intermediate_size": c.int("moe_intermediate_size"),
    }
    shared = c.int("shared_expert_intermediate_size", 0, positive=False)
    if shared:
        moe.update(num_shared_experts=1, shared_intermediate_size=shared)
    moe.update(_qwen_moe_layers(c), routing="softmax_topk")
    out["moe"] = moe
    return _tail(c, out)


def _qwen3_moe(c: _Cfg) -> dict:
    out = {"family": "qwen3-moe", **_common(c), "attention": _gqa(c, qk_norm=True), "ffn": _ffn(c)}
    moe = {
        "num_experts": c.int("num_experts"),
        "top_k": c.int("num_experts_per_tok"),
        "expert_intermediate_size": c.int("moe_intermediate_size"),
        "num_shared_experts": 0,
    }
    moe.update(_qwen_moe_layers(c), routing="softmax_topk")
    out["moe"] = moe
    return _tail(c, out)


def _deepseek(c: _Cfg, family: str) -> dict:
    nh = c.int("num_attention_heads")
    nope, rope = c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim")
    att = {
        "kind": "mla",
        "num_heads": nh,
        "num_kv_heads": nh,
        "head_dim": nope + rope,
        "q_lora_rank": c.int("q_lora_rank", None),
        "kv_lora_rank": c.int("kv_lora_rank"),
        "qk_nope_head_dim": nope,
        "qk_rope_head_dim": rope,
        "v_head_dim": c.int("v_head_dim"),
    }
    if att["q_lora_rank"] is None:
        del att["q_lora_rank"]
    out = {"family": family, **_common(c), "attention": att, "ffn": _ffn(c)}
    n_routed = c.int("n_routed_experts", None)
    if n_routed is not None:
        groups = c.int("n_group", 1)
        scoring = c.get("scoring_func", "softmax")
        if scoring not in ("softmax", "sigmoid"):
            raise c._err("scoring_func", f"expected softmax or sigmoid, got {scoring!r}")
        moe = {
            "num_experts": n_routed,
            "top_k": c.int("num_experts_per_tok"),
            "expert_intermediate_size": c.int("moe_intermediate_size"),
            "num_shared_experts": c.int("n_shared_experts", 0, positive=False),
            "first_dense_layers": c.int("first_k_dense_replace", 0, positive=False),
            "moe_layer_freq": c.int("moe_layer_freq", 1),
            "num_groups": groups,
        }
        if groups > 1:
            moe["topk_groups"] = c.int("topk_group")
            moe["routing"] = "grouped_topk"
        else:
            moe["routing"] = f"{scoring}_topk"
        moe["router_bias"] = c.get("topk_method", "") == "noaux_tc"  # e_score_correction_bias
        out["moe"] = moe
    _tail(c, out)
    mtp = c.int("num_nextn_predict_layers", 0, positive=False)
    if mtp:
        out["mtp_layers"] = mtp
    return out


def _llama4(c: _Cfg) -> dict:
    """Llama-4 text model: ``text_config`` holds the decoder (ConditionalGeneration) or the top level does."""
    tc = c.data.get("text_config")
    t = _Cfg({**tc, "quantization_config": c.data.get("quantization_config"),
              "torch_dtype": tc.get("torch_dtype") or c.data.get("torch_dtype")}, c.file) if isinstance(tc, dict) else c
    step = t.int("interleave_moe_layer_step", 1)
    n_layers = t.int("num_hidden_layers")
    moe_layers = t.data.get("moe_layers")
    if isinstance(moe_layers, list) and moe_layers != [i for i in range(n_layers) if (i + 1) % step == 0]:
        raise t._err("moe_layers", f"only MoE every interleave_moe_layer_step-th layer can be described; got {moe_layers!r}")
    out = {"family": "llama4", **_common(t), "attention": _gqa(t), "ffn": _ffn(t)}
    out["ffn"]["intermediate_size"] = t.int("intermediate_size_mlp", t.int("intermediate_size"))
    moe = {"num_experts": t.int("num_local_experts"), "top_k": t.int("num_experts_per_tok"),
           "expert_intermediate_size": t.int("intermediate_size"), "num_shared_experts": 1,
           "routing": "sigmoid_topk"}
    if step > 1:
        moe.update(first_dense_layers=step - 1, moe_layer_freq=step)
    out["moe"] = moe
    return _tail(t, out)


_FAMILIES: dict[str, Callable[[_Cfg], dict]] = {
    "LlamaForCausalLM": lambda c: _llama(c, "llama"),
    "MistralForCausalLM": lambda c: _llama(c, "mistral"),
    "Qwen2ForCausalLM": lambda c: _llama(c, "qwen2", qkv_bias_default=True),
    "Qwen3ForCausalLM": lambda c: _llama(c, "qwen3", qk_norm=True),
    "MixtralForCausalLM": _mixtral,
    "Qwen2MoeForCausalLM": _qwen2_moe,
    "Qwen3MoeForCausalLM": _qwen3_moe,
    "DeepseekV2ForCausalLM": lambda c: _deepseek(c, "deepseek-v2"),
    "DeepseekV3ForCausalLM": lambda c: _deepseek(c, "deepseek-v3"),
    "Llama4ForConditionalGeneration": _llama4,
    "Llama4ForCausalLM": _llama4,
}
SUPPORTED_ARCHITECTURES = tuple(_FAMILIES)


def _default_name(path: Path, data: dict) -> str:
    src = data.get("_name_or_path")
    if isinstance(src, str) and src.strip():
        return src.rstrip("/").split("/")[-1].lower()
    parent = path.resolve().parent.name
    return parent.lower() if parent else "imported-model"


def import_hf_config(path: str | Path, *, name: str | None = None) -> dict:
    """Read a Hugging Face ``config.json`` and return a descriptor dict (not yet validated)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise InputError(f"malformed JSON{where}: {getattr(e, 'msg', e)}", file=p) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object at the top level, got {type(data).__name__}", file=p)
    c = _Cfg(data, p)
    archs = c.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise c._err("architectures", f"expected a list with the model class name, got {archs!r}")
    arch = archs[0]
    if arch not in _FAMILIES:
        raise c._err("architectures", f"unsupported architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    body = _FAMILIES[arch](c)
    desc = {
        "name": name or _default_name(p, data),
        "family": body.pop("family"),
        "description": f"Imported from a Hugging Face config.json ({arch}).",
        "source": str(p),
    }
    desc.update(body)
    return desc
