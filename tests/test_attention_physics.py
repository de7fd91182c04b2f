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
    assert decode_family(h, kvh, "vllm").tolist() == ["mha", "gqa", "gqa", "gqa", "gqa", "gqa"]
    assert decode_family(h, kvh, "sglang") is None and decode_family(h, kvh, "") is None


def _rows(shared_data, gpu, fw, kind):
    p = shared_data / "calibration" / "aiconfigurator" / gpu / ("mla" if "mla" in kind else "attention")
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
    """Llama-3-70B's 64 query heads over 8 KV heads run XQA, over 64 (MHA) the masked MHA kernel, each in its head
    dim 128 build (``<family>_hd128``, kernel_models.DECODE_FAMILY_HD): the serving step's decode attention equals
    the table pricer's for that section."""
    import pandas as pd

    from simllm.cost.kernel_models import attention_launch_and_body
    from simllm.cost.layer_kernels import LayerKernels
    from simllm.model import load_model

    h100 = load_accelerator("h100-sxm")
    m = load_model("llama-3-70b")
    m = m.model_copy(update={"attention": m.attention.model_copy(update={"num_kv_heads": kvh})})
    cal = calibration_for(h100).for_framework("trtllm")
    fam = ("xqa" if kvh == 8 else "mmha") + "_hd128"
    assert f"generation_attention/bfloat16/{fam}" in cal.kernels
    row = pd.DataFrame({"kind": ["generation_attention"], "dtype": ["bfloat16"], "kv_cache_dtype": ["bfloat16"],
                        "batch_size": [32], "isl": [700], "step": [0], "num_heads": [64],
                        "num_key_value_heads": [kvh], "head_dim": [128], "window_size": [0]})
    k = LayerKernels(m, h100, cal, tp=1, weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", kv_bytes=2.0)
    lo, body = k.decode(32.0, 32.0 * 700)
    tlo, tbody = attention_launch_and_body(row, "generation_attention", h100, cal, bench=False)
    assert lo + body == pytest.approx(float(tlo[0] + tbody[0]), rel=1e-9)
    assert lo == pytest.approx(cal.kernels[f"generation_attention/bfloat16/{fam}"]["launch_s"], rel=1e-12)


def test_l40s_decode_l2_step_in_the_table_pricer_not_in_the_serving_step(shared_data):
    """L40S (96 MiB L2): vLLM FA2 decode at batch 1, 32 / 8 heads, head dim 128, bf16 cache reads 67 MB
    of K/V at 16,384 tokens in 38 us (L2-resident between the benchmark's calls) and 134 MB at 32,768
    in 222 us (DRAM). The table pricer prices both within 25% (a DRAM-only roofline had the first
    +176% slow); the serving step, whose KV never stays in L2 between steps, prices the first at the
    DRAM figure, as the table pricer does with ``bench=False``."""
    import pandas as pd

    from simllm.cost.kernel_models import attention_launch_and_body, bench_l2_resident
    from simllm.cost.layer_kernels import LayerKernels
    from simllm.model import load_model

    df = _rows(shared_data, "l40s", "vllm", "generation_attention")
    sel = df[(df.batch_size == 1) & (df.num_heads == 32) & (df.num_key_value_heads == 8) & (df.head_dim == 128)
             & (df.window_size == 0) & (df.kv_cache_dtype == "bfloat16") & (df.isl + df.step).isin([16384, 32768])]
    sel = sel.sort_values("step")
    assert len(sel) == 2
    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("vllm")
    kv_bytes = (sel.isl + sel.step).to_numpy() * 8 * 128 * 2 * 2.0
    assert bench_l2_resident(kv_bytes, acc).tolist() == [True, False]
    assert cal.kernels["generation_attention/bfloat16"]["l2_bpf"] * 362.05e12 > 1.5 * 864e9
    pred = pricing.price(sel, acc, cal)
    err = pred / sel["latency_s"].to_numpy() - 1
    assert np.all(np.abs(err) < 0.25), err
    m = load_model("llama-3-8b")
    assert (m.attention.num_heads, m.attention.num_kv_heads, m.attention.head_dim) == (32, 8, 128)
    k = LayerKernels(m, acc, cal, tp=1, weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", kv_bytes=2.0)
    lo, body = k.decode(1.0, 16384.0)
    serve = attention_launch_and_body(sel.iloc[:1], "generation_attention", acc, cal, bench=False)
    assert lo + body == pytest.approx(float(serve[0][0] + serve[1][0]), rel=1e-9)
    assert lo + body > 2.0 * pred[0]


def test_fa2_window_unpacks_gqa_in_the_table_pricer():
    """FlashAttention 2 with a sliding window runs every query head as its own KV head (no GQA
    packing), FA3 and FlashInfer keep the shared read; the serving step (no source) keeps it too."""
    from simllm.cost.kernel_models import decode_kv_heads

    h, kvh = np.array([32.0, 32.0, 32.0, 32.0]), np.array([8.0, 8.0, 8.0, 8.0])
    w = np.array([128.0, 0.0, 128.0, 128.0])
    src = np.array(["vllm_flash_attn_fa2", "vllm_flash_attn_fa2", "vllm_flash_attn_fa3", "vllm_flashinfer_fidecode"])
    assert decode_kv_heads(h, kvh, "vllm", w, src).tolist() == [32, 8, 8, 8]
    assert decode_family(h, kvh, "vllm", w, src).tolist() == ["mha", "gqa", "gqa", "gqa"]
    assert float(decode_kv_heads(32.0, 8.0, "vllm")) == 8.0


def test_l40s_fa2_windowed_decode_rows(shared_data):
    """L40S vLLM FA2 decode with window 128 at batch 1024, 2-token contexts: 224 us at 8 / 1 and 1.70 ms
    at 64 / 8 heads (as 8 and 64 KV heads), both within 25%."""
    df = _rows(shared_data, "l40s", "vllm", "generation_attention")
    sel = df[(df.batch_size == 1024) & (df.isl + df.step == 2) & (df.head_dim == 128) & (df.window_size == 128)
             & (df.kernel_source == "vllm_flash_attn_fa2")
             & (((df.num_heads == 8) & (df.num_key_value_heads == 1)) | ((df.num_heads == 64) & (df.num_key_value_heads == 8)))]
    assert len(sel) == 2
    acc = load_accelerator("l40s")
    pred = pricing.price(sel, acc, calibration_for(acc).for_framework("vllm"))
    err = pred / sel["latency_s"].to_numpy() - 1
    assert np.all(np.abs(err) < 0.25), err


def test_h100_fa3_decode_past_the_window_loads_more_than_the_window(shared_data):
    """H100 vLLM FA3 decode, window 128: the 12,584 rows whose context outgrew the window measure 15.4 us
    at batch 1 (flat from 256 to 131,072 tokens) against 11.4 us within it; priced as exactly 128 positions
    (``window_tile`` 0) they were 20% fast. With the fitted ``window_tile`` their median signed error is
    within 12%, the rows within the window are unchanged, and the kernel still does not grow with the
    context past the window (its longest row within 5% of its 256-token one)."""
    from dataclasses import replace

    df = _rows(shared_data, "h100_sxm", "vllm", "generation_attention")
    df = df[df.window_size == 128]
    long = (df.isl + df.step > df.window_size).to_numpy()
    assert long.sum() > 10_000 and (~long).sum() > 10_000
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("vllm")
    assert cal.kernels["generation_attention/bfloat16"].get("window_tile", 0) > 0
    flat = replace(cal, kernels={k: {**v, "window_tile": 0.0} if k.startswith("generation_attention") else v
                                 for k, v in cal.kernels.items()})
    t = df["latency_s"].to_numpy()
    e_fit = pricing.price(df, acc, cal) / t - 1
    e_flat = pricing.price(df, acc, flat) / t - 1
    assert np.median(e_flat[long]) < -0.15  # the evidence: priced as the window alone, far too fast
    assert abs(np.median(e_fit[long])) < 0.12
    assert np.allclose(e_fit[~long], e_flat[~long])
    one = df[(df.batch_size == 1) & (df.num_heads == 64) & (df.num_key_value_heads == 8) & (df.head_dim == 64)
             & (df.kv_cache_dtype == "bfloat16")]
    p = pricing.price(one, acc, cal)
    a, b = p[(one.step == 255).to_numpy()], p[(one.step == one.step.max()).to_numpy()]
    assert len(a) == len(b) == 1 and one.step.max() >= 32767 and abs(b[0] / a[0] - 1) < 0.05


def test_sglang_fa3_head_dim_192_decode_is_its_own_kernel_path(shared_data):
    """H100 SGLang FA3 decode at head dim 192 times as a kernel of its own (batch 1: 15.9 us against 9.3 at
    head dim 128 and 11.2 at 256): its rows get the family fa3_hd192 and are priced within 10% (median);
    one section for every head dim priced them ~29% fast. vLLM's FA3 rows keep one family."""
    from simllm.cost.kernel_models import _attn_groups

    df = _rows(shared_data, "h100_sxm", "sglang", "generation_attention")
    fams = {(d, s) for d, s, m in _attn_groups(df, "generation_attention", "sglang")}
    assert ("bfloat16", "fa3_hd192") in fams and ("bfloat16", "fa3") in fams
    acc = load_accelerator("h100-sxm")
    hd = df[(df.head_dim == 192) & (df.kernel_source == "fa3")]
    assert len(hd) > 4000
    err = pricing.price(hd, acc, calibration_for(acc).for_framework("sglang")) / hd["latency_s"].to_numpy() - 1
    assert np.median(np.abs(err)) < 0.10
    v = _rows(shared_data, "h100_sxm", "vllm", "generation_attention")
    assert not any(s.endswith("_hd192") for _, s, _ in _attn_groups(v, "generation_attention", "vllm"))


def test_sglang_flashinfer_decode_tensor_core_dispatch():
    """SGLang's FlashInfer backend (should_use_tensor_core): a bf16 cache with query-head groups >= 4 runs the
    tensor-core kernel (family flashinfer_tc), smaller groups the CUDA-core decode kernel; an fp8 cache always the
    tensor-core one (its rows one family). vLLM's FlashInfer rows are not split."""
    import pandas as pd

    from simllm.cost.kernel_models import _attn_groups

    df = pd.DataFrame({"kind": ["generation_attention"] * 4, "kernel_source": ["flashinfer"] * 4,
                       "dtype": ["bfloat16"] * 4,
                       "kv_cache_dtype": ["bfloat16", "bfloat16", "fp8", "fp8"], "num_heads": [8, 32, 8, 32],
                       "num_key_value_heads": [4, 8, 4, 8], "head_dim": [128] * 4, "batch_size": [1] * 4,
                       "isl": [1] * 4, "step": [1] * 4, "window_size": [0] * 4})
    got = {(d, s_): m.tolist() for d, s_, m in _attn_groups(df, "generation_attention", "sglang")}
    assert got[("bfloat16", "flashinfer")] == [True, False, False, False]
    assert got[("bfloat16", "flashinfer_tc")] == [False, True, False, False]
    assert got[("bfloat16+kv_fp8", "flashinfer")] == [False, False, True, True]
    assert all(not s_.endswith("_tc") for _, s_, _ in _attn_groups(df, "generation_attention", "vllm"))
    # the tensor-core kernel's query tile (FlashInfer's FA2DetermineCtaTileQ): 16 / 64 / 128 packed rows
    wide = df.assign(num_heads=[96, 32, 96, 96], num_key_value_heads=[1, 1, 4, 1], head_dim=[128, 128, 128, 256])
    fam = {(d, s_): m.tolist() for d, s_, m in _attn_groups(wide, "generation_attention", "sglang")}
    assert fam == {("bfloat16", "flashinfer_tc_q128"): [True, False, False, False],  # group 96, head dim 128
                   ("bfloat16", "flashinfer_tc_q64"): [False, True, False, False],  # group 32
                   ("bfloat16+kv_fp8", "flashinfer_q64"): [False, False, True, True]}  # 24; 96 at head dim 256


def test_l40s_sglang_flashinfer_wide_groups_priced_by_their_tile(shared_data):
    """L40S SGLang FlashInfer decode with an fp8 cache, head dim 128, groups 24-64 (the 64-row query tile): one
    section priced them 31-35% fast; with the tile's own section their median |error| is within 16% (14% measured:
    the 64-row configuration's fp8 rows remain the least well fitted family, mean |log| 0.18)."""
    df = _rows(shared_data, "l40s", "sglang", "generation_attention")
    g = df.num_heads // df.num_key_value_heads
    sel = df[(df.kernel_source == "flashinfer") & (df.kv_cache_dtype == "fp8") & (df.head_dim == 128)
             & (g > 16) & (g <= 64)]
    assert len(sel) > 500
    acc = load_accelerator("l40s")
    err = pricing.price(sel, acc, calibration_for(acc).for_framework("sglang")) / sel["latency_s"].to_numpy() - 1
    assert np.median(np.abs(err)) < 0.16


def test_l40s_vllm_flashinfer_decode_wide_groups_by_tile(shared_data):
    """L40S vLLM FlashInfer decode (fp8 cache), head dim 128: groups above 16 run the 64-row query tile and were
    priced 35-45% fast by the GQA section; they get family gqa_q64 (median |error| within 12%); FA2 rows (bf16
    cache) keep one family."""
    from simllm.cost.kernel_models import _attn_groups

    df = _rows(shared_data, "l40s", "vllm", "generation_attention")
    fams = {(d, s_): int(m.sum()) for d, s_, m in _attn_groups(df, "generation_attention", "vllm")}
    assert fams.get(("bfloat16+kv_fp8", "gqa_q64"), 0) > 3000 and ("bfloat16", "gqa_q64") not in fams
    g = df.num_heads // df.num_key_value_heads
    sel = df[(df.kernel_source == "vllm_flashinfer_fidecode") & (df.head_dim == 128) & (g > 16)]
    acc = load_accelerator("l40s")
    err = pricing.price(sel, acc, calibration_for(acc).for_framework("vllm")) / sel["latency_s"].to_numpy() - 1
    assert len(sel) > 1000 and np.median(np.abs(err)) < 0.12


def test_h100_sglang_fa3_prefill_window_band_and_head_dim_192(shared_data):
    """H100 SGLang FA3 prefill: window-128 rows whose prompt outgrew the window were priced 25% fast as exactly
    128 key positions per query (the band's edge tiles are computed too: ``window_tile``), and head dim 192 runs
    a kernel of its own (PREFILL_HD_PATHS, 15% fast in the shared section). Both now within 12% (median signed)."""
    df = _rows(shared_data, "h100_sxm", "sglang", "context_attention")
    fa3 = df[df.kernel_source == "fa3"]
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("sglang")
    banded = fa3[(fa3.window_size == 128) & (fa3.isl + fa3.step > 128)]
    for sel in (banded, fa3[(fa3.head_dim == 192) & (fa3.window_size == 0)]):
        assert len(sel) > 1000
        err = pricing.price(sel, acc, cal) / sel["latency_s"].to_numpy() - 1
        assert abs(np.median(err)) < 0.12, np.median(err)


def test_h100_trtllm_prefill_past_the_window(shared_data):
    """H100 TRT-LLM prefill, window 128: the 11,948 rows whose prompt outgrew the window were priced 34% fast as
    128 keys per query; with the fitted window_tile (the band's edge tiles) within 10% (median signed)."""
    df = _rows(shared_data, "h100_sxm", "trtllm", "context_attention")
    sel = df[(df.window_size == 128) & (df.isl + df.step > 128)]
    assert len(sel) > 10_000
    acc = load_accelerator("h100-sxm")
    err = pricing.price(sel, acc, calibration_for(acc).for_framework("trtllm")) / sel["latency_s"].to_numpy() - 1
    assert abs(np.median(err)) < 0.10, np.median(err)


def test_decode_splits_occupancy_cap():
    from simllm.cost.kernel_models import decode_splits

    s = {"split": 512.0, "split_waves": 0.0}
    assert decode_splits(np.array([1.0, 512.0, 513.0, 4096.0]), 8.0, 132.0, s).tolist() == [1, 1, 2, 8]
    s = {"split": 512.0, "split_waves": 2.0}  # at most ceil(2 x 132 / rows) splits
    assert decode_splits(4096.0, 64.0, 132.0, s) == 5.0 and decode_splits(4096.0, 512.0, 132.0, s) == 1.0
    assert decode_splits(1000.0, 1.0, 132.0, s) == 2.0  # the token split still caps it


def test_h100_xqa_bandwidth_grows_with_kv_heads(shared_data):
    """H100 TRT-LLM XQA at batch 64, 4,096-token contexts, 8 query heads per KV head, head dim 128, bf16
    cache: 1 KV head 70 us (1.9 TB/s), 8 KV heads 369 us (2.9 TB/s); both within 15% (a split per
    fixed token count priced them -9% and +22%)."""
    df = _rows(shared_data, "h100_sxm", "trtllm", "generation_attention")
    sel = df[(df.batch_size == 64) & (df.isl + df.step == 4096) & (df.head_dim == 128) & (df.window_size == 0)
             & (df.kv_cache_dtype == "bfloat16") & (df.num_heads == 8 * df.num_key_value_heads)
             & df.num_key_value_heads.isin([1, 8])]
    assert len(sel) == 2
    acc = load_accelerator("h100-sxm")
    pred = pricing.price(sel, acc, calibration_for(acc).for_framework("trtllm"))
    err = pred / sel["latency_s"].to_numpy() - 1
    assert np.all(np.abs(err) < 0.15), err


def test_a_head_dim_build_without_a_section_falls_back_to_its_family():
    """A100's TensorRT-LLM tables hold head dim 128 only: a head-dim-192 model's decode reads the XQA family's
    section (``xqa``), not the dtype's generic one; H100, which measured head dim 192, has its own."""
    from simllm.cost.kernel_models import _sec

    a100 = calibration_for(load_accelerator("a100-sxm-80gb")).for_framework("trtllm")
    h100 = calibration_for(load_accelerator("h100-sxm")).for_framework("trtllm")
    assert _sec(a100, "generation_attention", "bfloat16", "xqa_hd192")[1] == "generation_attention/bfloat16/xqa"
    assert _sec(h100, "generation_attention", "bfloat16", "xqa_hd192")[1] == "generation_attention/bfloat16/xqa_hd192"


@pytest.mark.parametrize("gpu, device", [("l40s", "l40s"), ("h100_sxm", "h100-sxm")])
def test_trtllm_unpacked_decode_rereads_shared_kv_from_l2(shared_data, gpu, device):
    """TensorRT-LLM decode above its largest XQA group (48-128 query heads per KV head) runs one CTA per query
    head; the re-reads of a shared KV head come from the L2 at a per-SM rate (kernel_models.reread_time), not from
    DRAM: on both GPUs the measured 64 / 1-head rows take the same time (0.662 ms at batch 128, 1,024 tokens) though
    their DRAM differs 3.9x. Priced each query head's K/V from DRAM, those rows were 2.1x (H100) and 6.8x (L40S)
    slow (group p90 500% on L40S); with the re-read term they meet median <= 12%, p90 <= 30%, and the serving step
    prices a 64 / 1-head model's decode below the all-DRAM price."""
    from simllm.cost.layer_kernels import LayerKernels
    from simllm.model import load_model

    acc = load_accelerator(device)
    cal = calibration_for(acc).for_framework("trtllm")
    df = _rows(shared_data, gpu, "trtllm", "generation_attention")
    x = df[df["num_heads"] / df["num_key_value_heads"] > 32]
    assert len(x) >= 1000
    e = np.abs(pricing.price(x, acc, cal) / x["latency_s"].to_numpy() - 1.0)
    assert np.median(e) <= 0.12 and np.quantile(e, 0.9) <= 0.30
    m = load_model("llama-3-70b")
    mqa = m.model_copy(update={"attention": m.attention.model_copy(update={"num_kv_heads": 1})})
    k = LayerKernels(mqa, acc, cal, tp=1, weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", kv_bytes=2.0)
    assert k.rr_tok_s > 0
    lo, body = k.decode(128.0, 128.0 * 1024)
    dram = 128 * 1024 * 64 * 128 * 2 * 2 / (acc.hbm_bw * k.dec["me"])  # every query head's K/V from DRAM
    assert lo + body < dram


@pytest.mark.parametrize("gpu, device", [("a100_sxm", "a100-sxm-80gb"), ("l40s", "l40s")])
def test_vllm_triton_mla_one_head_rank_runs_the_non_grouped_kernel(shared_data, gpu, device):
    """vLLM's Triton MLA decode runs a rank with one query head on its non-grouped kernel (family
    ``vllm_triton_mla_g1``, kernel_models.MLA_G1_SOURCES): measured, one head at batch 1 and 65,535 tokens takes
    4-5x the time of 2-16 heads (one head block of the grouped kernel). Priced with the family's own section those
    rows meet median <= 12%, and the family's section cuts the grouped kernel's section's p90 on them by 30% and its
    mean |log error| by 40% at the least (measured: 0.80 -> 0.45 and 0.56 -> 0.17 on A100, 0.63 -> 0.38 and 0.30 ->
    0.15 on L40S; that section priced the long contexts at 0.04-0.5x of measured; the p90 left keeps the tables'
    spike rows, 2-7x the rows around them), and the serving step of a deployment with one MLA head per rank
    reads that section."""
    from dataclasses import replace
    from simllm.cost.kernel_models import _sec
    from simllm.cost.layer_kernels import LayerKernels
    from simllm.model import load_model

    acc = load_accelerator(device)
    cal = calibration_for(acc).for_framework("vllm")
    df = _rows(shared_data, gpu, "vllm", "generation_mla")
    one, many = df[df["num_heads"] == 1], df[df["num_heads"].between(2, 16)]
    assert len(one) >= 100
    long1 = one[(one.batch_size == 1) & (one.step == 65535)].latency_s.median()
    longm = many[(many.batch_size == 1) & (many.step == 65535)].latency_s.median()
    assert long1 > 3.0 * longm
    e = np.abs(pricing.price(one, acc, cal) / one["latency_s"].to_numpy() - 1.0)
    key = _sec(cal, "generation_mla", "bfloat16", "vllm_triton_mla_g1")[1]
    shared = replace(cal, kernels={k: v for k, v in cal.kernels.items() if k != key})
    e0 = np.abs(pricing.price(one, acc, shared) / one["latency_s"].to_numpy() - 1.0)
    lg = np.abs(np.log(pricing.price(one, acc, cal) / one["latency_s"].to_numpy()))
    lg0 = np.abs(np.log(pricing.price(one, acc, shared) / one["latency_s"].to_numpy()))
    assert np.median(e) <= 0.12
    assert np.quantile(e, 0.9) <= 0.7 * np.quantile(e0, 0.9) and lg.mean() <= 0.6 * lg0.mean()
    assert key == "generation_mla/bfloat16/vllm_triton_mla_g1"
    m = load_model("deepseek-v3")
    kw = dict(weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16", kv_bytes=2.0)
    k1 = LayerKernels(m, acc, cal, tp=m.attention.num_heads, **kw)  # one head per rank
    k2 = LayerKernels(m, acc, cal, tp=m.attention.num_heads // 2, **kw)
    assert k1.dec == {**k1.dec, **cal.kernels[key]}
    assert k2.dec != k1.dec
