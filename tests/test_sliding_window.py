"""Sliding-window attention in the serving step (issue 11): the model descriptor's window, its import from
Hugging Face configs, and the step pricing windowed layers as the table pricer prices the measured kernel."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from simllm.cost.calibration import calibration_for
from simllm.cost.kernel_models import attention_launch_and_body
from simllm.cost.step import make_step_cost
from simllm.errors import InputError
from simllm.hardware import load_accelerator
from simllm.hf_import import import_hf_config
from simllm.model import ModelSpec, load_model


def _windowed(name="llama-3-8b", window=128, layers=None):
    m = load_model(name)
    att = m.attention.model_copy(update={"sliding_window": window, "window_layers": layers})
    return ModelSpec.model_validate({**m.model_dump(), "attention": att.model_dump()})


def _cfg(tmp_path, **kw):
    base = {"architectures": ["MistralForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32000,
            "torch_dtype": "bfloat16"}
    p = tmp_path / "config.json"
    p.write_text(json.dumps({**base, **kw}))
    return p


def test_import_reads_the_window_the_config_turns_on(tmp_path):
    d = import_hf_config(_cfg(tmp_path, sliding_window=4096))  # Mistral-7B-v0.1: every layer
    assert d["attention"]["sliding_window"] == 4096 and "window_layers" not in d["attention"]
    d = import_hf_config(_cfg(tmp_path, sliding_window=None))
    assert "sliding_window" not in d["attention"]
    # Qwen2/3 configs carry a window they do not use
    d = import_hf_config(_cfg(tmp_path, sliding_window=131072, use_sliding_window=False, max_window_layers=28))
    assert "sliding_window" not in d["attention"]
    d = import_hf_config(_cfg(tmp_path, sliding_window=4096, use_sliding_window=True, max_window_layers=28))
    assert d["attention"]["window_layers"] == 4
    types = ["sliding_attention", "full_attention"] * 16  # gpt-oss's interleave
    d = import_hf_config(_cfg(tmp_path, sliding_window=128, layer_types=types))
    assert d["attention"]["sliding_window"] == 128 and d["attention"]["window_layers"] == 16
    assert ModelSpec.model_validate(d).windowed_layer_share == 0.5
    d = import_hf_config(_cfg(tmp_path, sliding_window=1024, sliding_window_pattern=6, num_hidden_layers=30))
    assert d["attention"]["window_layers"] == 25  # five local layers to one global
    with pytest.raises(InputError, match="layer_types"):
        import_hf_config(_cfg(tmp_path, sliding_window=128, layer_types=types[:5]))


def test_descriptor_rejects_windows_that_make_no_sense():
    with pytest.raises(ValueError, match="window_layers"):
        _windowed(layers=33)
    m = load_model("deepseek-v3")
    with pytest.raises(ValueError, match="MLA"):
        m.attention.model_validate({**m.attention.model_dump(), "sliding_window": 128})


def test_serving_decode_past_the_window_is_the_table_pricers_windowed_kernel():
    """Every layer windowed (128): the serving step's decode attention at 32 sequences of 4,000 tokens equals
    the table pricer's price of that row with window_size 128 (serving semantics, no L2 residency), which is
    fitted on H100 vLLM's measured windowed rows (tests/test_attention_physics.py)."""
    h100 = load_accelerator("h100-sxm")
    cal = calibration_for(h100).for_framework("vllm")
    cost = make_step_cost(_windowed(), h100, calibration=cal, framework="vllm")
    row = pd.DataFrame({"kind": ["generation_attention"], "dtype": ["bfloat16"], "kv_cache_dtype": ["bfloat16"],
                        "batch_size": [32], "isl": [1], "step": [3999], "num_heads": [32],
                        "num_key_value_heads": [8], "head_dim": [128], "window_size": [128]})
    lo, body = attention_launch_and_body(row, "generation_attention", h100, cal, bench=False)
    got = cost.ops.decode_attention_time(32, 32 * 4000.0)
    assert got == pytest.approx(float(lo[0] + body[0]), rel=0.02)
    full = make_step_cost(load_model("llama-3-8b"), h100, calibration=cal, framework="vllm")
    assert full.ops.decode_attention_time(32, 32 * 4000.0) > 3 * got


def test_step_unchanged_within_the_window_and_flat_past_it():
    h100 = load_accelerator("h100-sxm")
    w = make_step_cost(_windowed(window=4096), h100)
    f = make_step_cost(load_model("llama-3-8b"), h100)
    # every context within the window (the longest 3,000): the full model's step, exactly
    assert w.step_time(0, 0.0, 0, 64, 64 * 2000.0, 3000.0) == f.step_time(0, 0.0, 0, 64, 64 * 2000.0, 3000.0)
    assert w.step_time(512, 512 * 256.0, 1, 0, 0.0) == f.step_time(512, 512 * 256.0, 1, 0, 0.0)
    # past it the windowed step stops growing with the context; the full one does not
    a, b = (w.step_time(0, 0.0, 0, 64, 64 * c, float(c)) for c in (16384.0, 65536.0))
    assert b == pytest.approx(a, rel=1e-6)
    assert f.step_time(0, 0.0, 0, 64, 64 * 65536.0, 65536.0) > 2 * b
    # an 8,192-token prompt's pairs capped at 4,096 per query: a cheaper prefill
    P, W = 8192, 8192 * 8192 / 2.0
    assert w.step_time(P, W, 1, 0, 0.0) < f.step_time(P, W, 1, 0, 0.0)
    assert w.decode_step_times(64, [64 * 2000.0]) is None  # the fast path is left to step_time


def test_interleaved_layers_average_full_and_windowed():
    h100 = load_accelerator("h100-sxm")
    half = make_step_cost(_windowed(window=128, layers=16), h100).ops
    allw = make_step_cost(_windowed(window=128), h100).ops
    full = make_step_cost(load_model("llama-3-8b"), h100).ops
    ctx = np.array([64 * 1000.0, 64 * 8000.0])
    got = half.decode_attention_time(64, ctx)
    assert np.allclose(got, 0.5 * (allw.decode_attention_time(64, ctx) + full.decode_attention_time(64, ctx)))
    assert half.prefill_attention_time(4096, 4096 * 2048.0) == pytest.approx(
        0.5 * (allw.prefill_attention_time(4096, 4096 * 2048.0) + full.prefill_attention_time(4096, 4096 * 2048.0)))


def test_windowed_prefill_pairs_are_each_querys_window():
    """One 8,192-token prompt, window 4,096: sum over queries of min(position, window) = 4096 x 4097 / 2 +
    4096 x 4096, against the causal 8192 x 8193 / 2 (and two such prompts in one step, twice that)."""
    ops = make_step_cost(_windowed(window=4096), load_accelerator("h100-sxm")).ops
    exact = 4096 * 4097 / 2 + 4096 * 4096
    assert ops._win_work(8192, 8192 * (0 + 8192 / 2.0), 1) == pytest.approx(exact)
    assert ops._win_work(16384, 2 * 8192 * (0 + 8192 / 2.0), 2) == pytest.approx(2 * exact)
    # a 1,024-token chunk after 10,000 cached tokens: every query sees the whole window
    assert ops._win_work(1024, 1024 * (10000 + 512.0), 1) == pytest.approx(1024 * 4096)
