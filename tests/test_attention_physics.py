"""Attention kernel physics against measured AIConfigurator rows (issue 11): kernel families,
and the engine pricing the same family as the table pricer."""

from __future__ import annotations

import numpy as np
import pytest

from simllm.cost import pricing, tables as T
from simllm.cost.calibration import calibration_for
from simllm.cost.kernel_models import decode_family
from simllm.hardware import load_accelerator


def test_decode_family_split_by_head_ratio():
    h = np.array([8, 16, 64, 64, 96, 128])
    kvh = np.array([8, 8, 2, 1, 2, 4])
    fam = decode_family(h, kvh, "trtllm")
    # MHA and groups above 32 run the generic masked MHA kernel; groups 2..32 run XQA
    assert fam.tolist() == ["mmha", "xqa", "xqa", "mmha", "mmha", "xqa"]
    assert decode_family(h, kvh, "vllm") is None and decode_family(h, kvh, "") is None


def _rows(shared_data, gpu, fw, kind):
    p = shared_data / "calibration" / "aiconfigurator" / gpu / "attention"
    if not p.is_dir():
        pytest.skip(f"no AIConfigurator attention tables under {p}")
    df = T.read_tables(p, fw)
    return df[df["kind"] == kind]


def test_trtllm_xqa_and_mha_short_context_rows(shared_data):
    """H100 TRT-LLM decode at batch 1024, 2-token contexts, head dim 128, bf16 cache: MHA 8/8 (81 us)
    and XQA 16/8 (293 us, 3.6x for the same KV heads) both within 25% (one shared section priced
    them +25% and -65%)."""
    df = _rows(shared_data, "h100_sxm", "trtllm", "generation_attention")
    sel = df[(df.batch_size == 1024) & (df.isl + df.step == 2) & (df.head_dim == 128) & (df.window_size == 0)
             & (df.kv_cache_dtype == "bfloat16") & (df.num_key_value_heads == 8) & df.num_heads.isin([8, 16])]
    assert len(sel) == 2
    acc = load_accelerator("h100-sxm")
    pred = pricing.price(sel, acc, calibration_for(acc).for_framework("trtllm"))
    err = pred / sel["latency_s"].to_numpy() - 1
    assert np.all(np.abs(err) < 0.25), err


@pytest.mark.parametrize("kvh", [8, 64])
def test_serving_step_prices_the_trtllm_decode_family_of_the_table_pricer(kvh):
    """Llama-3-70B's 64 query heads over 8 KV heads run XQA, over 64 (MHA) the masked MHA kernel: the
    serving step's decode attention equals the table pricer's for that family's section."""
    import pandas as pd

    from simllm.cost.kernel_models import attention_launch_and_body
    from simllm.cost.layer_kernels import LayerKernels
    from simllm.model import load_model

    h100 = load_accelerator("h100-sxm")
    m = load_model("llama-3-70b")
    m = m.model_copy(update={"attention": m.attention.model_copy(update={"num_kv_heads": kvh})})
    cal = calibration_for(h100).for_framework("trtllm")
    fam = "xqa" if kvh == 8 else "mmha"
    assert f"generation_attention/bfloat16/{fam}" in cal.kernels
    row = pd.DataFrame({"kind": ["generation_attention"], "dtype": ["bfloat16"], "kv_cache_dtype": ["bfloat16"],
                        "batch_size": [32], "isl": [700], "step": [0], "num_heads": [64],
                        "num_key_value_heads": [kvh], "head_dim": [128], "window_size": [0]})
    k = LayerKernels(m, h100, cal, tp=1, weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", kv_bytes=2.0)
    lo, body = k.decode(32.0, 32.0 * 700)
    tlo, tbody = attention_launch_and_body(row, "generation_attention", h100, cal)
    assert lo + body == pytest.approx(float(tlo[0] + tbody[0]), rel=1e-9)
    assert lo == pytest.approx(cal.kernels[f"generation_attention/bfloat16/{fam}"]["launch_s"], rel=1e-12)
