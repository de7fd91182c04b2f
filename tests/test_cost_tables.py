"""AIConfigurator / Vidur readers, the pricing registry and `simllm calibrate check|fit` on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simllm.cost import pricing, tables as T
from simllm.cost.calibration import calibration_for
from simllm.cost.kernel_models import strict_peak
from simllm.errors import InputError
from simllm.hardware import load_accelerator
from tests.helpers.cli import run_cli


def _aic(shared_data) -> Path:
    p = shared_data / "calibration" / "aiconfigurator"
    if not (p / "h100_sxm").is_dir():
        pytest.skip("no AIConfigurator tables under ../shared/data/calibration/aiconfigurator")
    return p


def _mini_layout(shared_data, tmp_path, rows=400) -> Path:
    """A small GPU folder in the native layout: a newer version holding a real table AND a
    reuse.yaml entry for it (the table must win), an older version, and a reuse-only version."""
    src = _aic(shared_data) / "h100_sxm" / "gemm" / "vllm" / "0.24.0" / "gemm_perf.parquet"
    df = pd.read_parquet(src).iloc[::50].head(rows)
    g = tmp_path / "h100_sxm"
    for v in ("0.9.0", "0.10.0"):
        d = g / "gemm" / "vllm" / v
        d.mkdir(parents=True)
        df.assign(latency=df["latency"] * (2.0 if v == "0.9.0" else 1.0)).to_parquet(d / "gemm_perf.parquet")
    (g / "gemm" / "vllm" / "0.10.0" / "reuse.yaml").write_text(
        "schema_version: 1\nreuse:\n- table: gemm_perf\n  from_version: 0.9.0\n")
    (g / "gemm" / "vllm" / "0.5.0").mkdir()
    (g / "gemm" / "vllm" / "0.5.0" / "reuse.yaml").write_text(
        "reuse:\n- table: gemm_perf\n  from_version: 0.9.0\n")
    return g


def test_version_order():
    vs = ["0.5.9", "0.5.14", "0.5.6.post2", "1.3.0rc15", "1.3.0rc20", "1.3.0", "0.1.dev19262", "2.27.3", "2.3"]
    assert sorted(vs, key=T.version_key) == ["0.1.dev19262", "0.5.6.post2", "0.5.9", "0.5.14", "1.3.0rc15",
                                             "1.3.0rc20", "1.3.0", "2.3", "2.27.3"]


def test_gpu_tokens():
    assert T.gpu_token("NVIDIA H100 80GB HBM3") == "h100"
    assert T.gpu_token("a100_sxm") == "a100" == T.gpu_token("a100-sxm-80gb")
    assert T.gpu_token("NVIDIA L40S") == "l40s" and T.gpu_token("mi300x") == "mi300x"


def test_layout_table_wins_over_reuse(shared_data, tmp_path):
    g = _mini_layout(shared_data, tmp_path)
    res = T.resolve(g, "vllm")
    (ref,) = [r for r in res.tables if r.stem == "gemm_perf"]
    assert ref.version == "0.10.0" and ref.path.parent.name == "0.10.0"
    df = T.read_tables(g, "vllm")
    assert set(T.CONTRACT_COLUMNS) <= set(df.columns) and (df["kind"] == "gemm").all()
    assert (df["framework"] == "vllm").all() and (df["gpu"] == "h100_sxm").all()
    # the reuse-only folder follows its reuse.yaml to the donor
    assert T._follow(g / "gemm" / "vllm", "0.5.0", "gemm_perf", set()).parent.name == "0.9.0"


def test_real_layout_newest_and_reuse(shared_data):
    p = _aic(shared_data) / "h100_sxm"
    res = {r.stem: r for r in T.resolve(p, "vllm").tables}
    assert res["gemm_perf"].version == "0.24.0"
    assert res["nccl_perf"].framework == "nccl" and res["nccl_perf"].version == "2.29.2"
    # vLLM 0.22.0 reuses 0.14.0's MLA tables; 0.24.0 holds other (module) tables only
    assert res["context_mla_perf"].version == "0.22.0" and res["context_mla_perf"].path.parent.name == "0.14.0"


def test_check_json_shape(shared_data, tmp_path, capsys):
    g = _mini_layout(shared_data, tmp_path)
    code, out, err = run_cli(["calibrate", "check", str(g), "--hw", "h100-sxm", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert set(d) == {"frameworks"} and set(d["frameworks"]) == {"vllm"}
    v = d["frameworks"]["vllm"]
    assert set(v) == {"n", "median_abs_rel_error", "p90_abs_rel_error", "unpriced", "per_op"}
    assert v["n"] == 400 and all(k.startswith("gemm/") for k in v["per_op"])
    assert set(next(iter(v["per_op"].values()))) == {"n", "median", "p90", "median_signed"}
    code, out, _ = run_cli(["calibrate", "check", str(g), "--hw", "h100-sxm", "--framework", "vllm", "--json"], capsys)
    assert code == 0 and set(json.loads(out)) >= {"n", "per_op", "unpriced"}


def test_unpriced_rows_are_counted():
    df = pd.DataFrame({"kind": ["gemm", "no_such_kind"], "dtype": ["bfloat16", "x"], "m": [128, 1], "n": [128, 1],
                       "k": [128, 1], "latency_s": [1e-5, 1e-5]})
    r = pricing.check(df, load_accelerator("h100-sxm"), calibration_for(load_accelerator("h100-sxm")))
    assert r["n"] == 2 and r["unpriced"] == {"no_such_kind": 1} and "gemm/bfloat16" in r["per_op"]


def test_missing_dtype_peak_is_an_error():
    a100 = load_accelerator("a100-sxm-80gb")
    with pytest.raises(InputError) as e:
        strict_peak(a100, "fp8")
    assert "peak_flops.fp8" in str(e.value)
    df = pd.DataFrame({"kind": ["gemm"], "dtype": ["fp8"], "m": [64], "n": [64], "k": [64], "latency_s": [1e-5]})
    with pytest.raises(InputError):
        pricing.price(df, a100, calibration_for(a100))


def _one_line(err):
    e = err.strip()
    return e.startswith("error:") and "\n" not in e


def test_bad_inputs(shared_data, tmp_path, capsys):
    g = _mini_layout(shared_data, tmp_path)
    table = g / "gemm" / "vllm" / "0.10.0" / "gemm_perf.parquet"
    # truncated parquet
    trunc = tmp_path / "t" / "gemm_perf.parquet"
    trunc.parent.mkdir()
    trunc.write_bytes(table.read_bytes()[:300])
    code, _, err = run_cli(["calibrate", "check", str(trunc), "--hw", "h100-sxm"], capsys)
    assert code == 2 and _one_line(err) and str(trunc) in err and "parquet" in err
    # unknown columns: a gemm table without m/n/k
    bad = tmp_path / "u" / "gemm_perf.parquet"
    bad.parent.mkdir()
    pd.DataFrame({"foo": [1], "bar": [2.0]}).to_parquet(bad)
    code, _, err = run_cli(["calibrate", "check", str(bad), "--hw", "h100-sxm"], capsys)
    assert code == 2 and _one_line(err) and str(bad) in err and ": m:" in err
    # unknown table name
    other = tmp_path / "u" / "weird_perf.parquet"
    pd.DataFrame({"latency": [1.0]}).to_parquet(other)
    code, _, err = run_cli(["calibrate", "check", str(other), "--hw", "h100-sxm"], capsys)
    assert code == 2 and _one_line(err) and str(other) in err
    # unknown framework
    code, _, err = run_cli(["calibrate", "check", str(g), "--hw", "h100-sxm", "--framework", "tgi"], capsys)
    assert code == 2 and _one_line(err) and "--framework" in err
    # a table for another GPU than --hw
    code, _, err = run_cli(["calibrate", "check", str(g), "--hw", "a100-sxm-80gb"], capsys)
    assert code == 2 and _one_line(err) and "gemm_perf.parquet: gpu:" in err
    # a device lacking the dtype's peak: fp8 rows on an L40S-like device with the fp8 peak removed
    src = pd.read_parquet(table)
    fp8 = tmp_path / "l40s" / "gemm" / "vllm" / "1.0.0"
    fp8.mkdir(parents=True)
    src[src["gemm_dtype"] == "fp8"].head(20).to_parquet(fp8 / "gemm_perf.parquet")
    code, _, err = run_cli(["calibrate", "check", str(tmp_path / "l40s"), "--hw", "a100-sxm-80gb"], capsys)
    assert code == 2 and _one_line(err)  # another GPU's folder
    code, _, err = run_cli(["calibrate", "check", str(fp8 / "gemm_perf.parquet"), "--hw", "a100-sxm-80gb"], capsys)
    assert code == 2 and _one_line(err)


def test_device_lacking_peak_cli(tmp_path, capsys):
    """A table measured on the device itself but in a dtype its descriptor has no peak for."""
    d = tmp_path / "a100_sxm" / "gemm" / "vllm" / "1.0.0"
    d.mkdir(parents=True)
    pd.DataFrame({"gemm_dtype": ["fp8"] * 3, "m": [1, 2, 4], "n": [4096] * 3, "k": [4096] * 3,
                  "latency": [0.01] * 3}).to_parquet(d / "gemm_perf.parquet")
    code, _, err = run_cli(["calibrate", "check", str(tmp_path / "a100_sxm"), "--hw", "a100-sxm-80gb"], capsys)
    assert code == 2 and _one_line(err) and "peak_flops.fp8" in err


def test_fit_cli_on_layout(shared_data, tmp_path, capsys):
    g = _mini_layout(shared_data, tmp_path, rows=300)
    out = tmp_path / "cal.yaml"
    code, _, err = run_cli(["calibrate", "fit", str(g), "--hw", "h100-sxm", "--framework", "vllm", "--out", str(out)],
                        capsys)
    assert code == 0, err
    from simllm.cost.calibration import load_calibration

    cal = load_calibration(out)
    fw = cal.frameworks["vllm"]
    assert any(k.startswith("gemm/") for k in fw["kernels"]) and fw["fit"]["tables"]
    code, o, _ = run_cli(["calibrate", "check", str(g), "--hw", "h100-sxm", "--framework", "vllm",
                       "--calibration", str(out), "--json"], capsys)
    d = json.loads(o)
    assert code == 0 and d["median_abs_rel_error"] < 0.15  # fitted on these very rows


# the target is 8% / 25%: met on A100 and H100 since the K-dependent floor (A100 was 8.3% / 27%);
# L40S misses it (its cuBLAS heuristics switch split-K on and off between neighbouring shapes), see README
@pytest.mark.parametrize("gpu,hw,limit,p90", [("h100_sxm", "h100-sxm", 0.08, 0.25),
                                              ("a100_sxm", "a100-sxm-80gb", 0.08, 0.25), ("l40s", "l40s", 0.13, 0.40)])
def test_shipped_calibration_gemm_bf16(shared_data, gpu, hw, limit, p90):
    """The shipped calibration on a sample of each GPU's measured vLLM bf16 GEMMs (fitted on them)."""
    p = _aic(shared_data) / gpu / "gemm" / "vllm"
    acc = load_accelerator(hw)
    cal = calibration_for(acc).for_framework("vllm")
    if "vllm" not in (cal.frameworks or {}):
        pytest.skip(f"no vLLM calibration shipped for {hw}")
    df = T.read_tables(p, "vllm")
    df = df[df["dtype"] == "bfloat16"].iloc[::7]
    r = pricing.check(df, acc, cal)
    assert r["per_op"]["gemm/bfloat16"]["median"] < limit, r["per_op"]
    assert r["per_op"]["gemm/bfloat16"]["p90"] < p90, r["per_op"]


def test_l40s_descriptor_matches_aiconfigurator_system_file(shared_data):
    """The L40S descriptor's datasheet figures agree with AIConfigurator's own l40s.yaml (a source we
    did not write): tensor-core peaks, memory bandwidth and capacity, power."""
    import yaml

    f = shared_data / "calibration" / "aiconfigurator" / "l40s.yaml"
    if not f.is_file():
        pytest.skip("no AIConfigurator l40s.yaml under ../shared/data")
    gpu = yaml.safe_load(f.read_text())["gpu"]
    a = load_accelerator("l40s")
    assert a.peak("bf16") == pytest.approx(gpu["bfloat16_tc_flops"])
    assert a.peak("fp8") == pytest.approx(gpu["fp8_tc_flops"])
    assert a.peak("int8") == pytest.approx(gpu["int8_tc_flops"])
    assert a.hbm_bw == pytest.approx(gpu["mem_bw"])
    assert a.hbm_bytes == pytest.approx(gpu["mem_capacity"])
    assert a.tdp.value == pytest.approx(gpu["power"])
    assert int(a.compute_units.value) == 18176 // 128


def test_l40s_without_fp4_peak_fails_in_serving_too(tmp_path, capsys):
    """No fp4 peak on the L40S datasheet: an fp4 deployment is refused (one line, exit 2), never
    priced at the bf16 peak."""
    import yaml

    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump({"model": "llama-3-8b", "hardware": {"accelerator": "l40s"},
                                   "deployment": {"weight_dtype": "fp4", "act_dtype": "fp4", "kv_dtype": "fp8"},
                                   "workload": {"trace": str(Path(__file__).resolve().parents[1] / "traces" /
                                                             "azure2023_conv_sample.csv"), "limit": 5}}))
    code, _, err = run_cli(["run", str(scn)], capsys)
    assert code == 2 and _one_line(err) and "peak_flops.fp4" in err, err


def test_fp8_per_token_quantization_term(shared_data):
    """H100 vLLM per-token fp8 GEMMs at N = 32, K = 128: measured time grows linearly in M (one
    latency-bound quantization block per token row); the shipped model follows it within 25% at
    M = 4097 and 16384 and the fp8 group reaches the issue's target (median <= 8%, p90 <= 25%)."""
    p = _aic(shared_data) / "h100_sxm" / "gemm" / "vllm"
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("vllm")
    df = T.read_tables(p, "vllm")
    df = df[df["dtype"] == "fp8"]
    small = df[(df["n"] == 32) & (df["k"] == 128) & df["m"].isin([4097, 16384])]
    pred = pricing.price(small, acc, cal)
    assert np.all(np.abs(pred / small["latency_s"].to_numpy() - 1) < 0.25), (pred, small["latency_s"].to_numpy())
    r = pricing.check(df.iloc[::5], acc, cal)["per_op"]["gemm/fp8"]
    assert r["median"] <= 0.08 and r["p90"] <= 0.25, r


def test_partial_refit_keeps_other_records_and_top_level():
    """Refitting one kind for one framework keeps the other kinds' fit groups and the top-level
    (vLLM) sections of the file."""
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc)
    assert "vllm" in cal.frameworks and "trtllm" in cal.frameworks
    ms = np.array([1, 16, 256, 4096], float)
    rows = [dict(kind="gemm", dtype="sq", m=m, n=n, k=k, latency_s=3e-6 + 2 * m * n * k / 1.5e15,
                 source="x/gemm_perf.parquet", framework="trtllm") for m in ms for n in (1024, 8192) for k in (1024, 8192)]
    df = pd.DataFrame(rows)
    out = pricing.fit_frameworks({"trtllm": df}, acc, cal, sources=["x"])
    assert out.kernels == cal.kernels  # top-level untouched
    rec = out.frameworks["trtllm"]["fit"]
    old = cal.frameworks["trtllm"]["fit"]["per_op"]
    assert "gemm/sq" in rec["per_op"] and all(rec["per_op"][k] == v for k, v in old.items() if not k.startswith("gemm/"))
    assert "x/gemm_perf.parquet" in rec["tables"] and set(cal.frameworks["trtllm"]["fit"]["tables"]) <= set(rec["tables"])
    assert out.frameworks["vllm"] == cal.frameworks["vllm"]


def test_sm89_fp8_dispatch_tables():
    """The tile each SM89 fp8 library picks, as its dispatch source writes it (vLLM's
    scaled_mm_c2x_sm89_fp8_dispatch.cuh by M bucket and next power of two of N; sgl-kernel's
    sm89_fp8_dispatch_shape by M bucket and N), and a section naming a dispatch whose tiles it lacks is an
    error, not a silent zero."""
    from dataclasses import replace

    from simllm.cost.calibration import GemmParams
    from simllm.cost.kernels import cutlass_sm89_fp8_tiles as v, gemm_time, sgl_sm89_fp8_tiles as s

    def t(f, m, n):
        a, b = f(m, n)
        return int(a), int(b)

    assert [t(v, m, 4096) for m in (1, 16, 17, 33, 65, 129, 257)] == \
        [(16, 64), (16, 64), (32, 64), (64, 64), (64, 128), (64, 128), (128, 128)]
    assert t(v, 8, 16384) == (16, 128) and t(v, 8, 32768) == (32, 64) and t(v, 300, 5000) == (256, 128)
    assert t(v, 100, 10000) == (128, 128) and t(v, 100, 20000) == (128, 64) and t(v, 200, 5000) == (128, 128)
    assert [t(s, m, 4096) for m in (1, 2, 17, 65, 129, 257, 513)] == \
        [(16, 64), (16, 64), (32, 64), (64, 64), (128, 64), (128, 128), (128, 128)]
    assert t(s, 1, 9000) == (32, 64) and t(s, 8, 12000) == (32, 64) and t(s, 200, 12000) == (64, 128)
    gp = replace(GemmParams(), dispatch="cutlass_sm89_fp8")  # the default tiles lack the 16- and 32-row ones
    with pytest.raises(InputError, match="dispatch"):
        gemm_time(8, 4096, 4096, peak=7e14, bw=8.6e11, cus=142, gp=gp)


def test_l40s_vllm_fp8_gemm_follows_the_dispatch_steps(shared_data):
    """L40S vLLM fp8 GEMMs (N = 128, K = 4,096) step where vLLM's SM89 dispatch changes tile: 8.6 us at
    M <= 15, then up at 17 (32-row tile) and again at 257 (the 128 x 128 default tile: 21.9 -> 37.4 us). The
    shipped section follows the dispatch and reproduces the jump at 257 within 25%; the table's group meets
    the targets (10.5% / 35% median / p90 with the best-of-tiles model, 6.9% / 22% with the dispatch)."""
    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("vllm")
    df = T.read_tables(_aic(shared_data) / "l40s" / "gemm", framework="vllm")
    df = df[(df["kind"] == "gemm") & (df["dtype"] == "fp8")]
    q = df[(df.n == 128) & (df.k == 4096)].groupby("m")["latency_s"].median()
    assert q[257] / q[256] > 1.5 and q[17] > 1.2 * q[8]
    rows = df[(df.n == 128) & (df.k == 4096) & df.m.isin([8, 17, 256, 257])].drop_duplicates("m").sort_values("m")
    p = pd.Series(pricing.price(rows, acc, cal), index=rows["m"].to_numpy())
    assert p[257] / p[256] > 1.5 * 0.75 and abs(p[257] / q[257] - 1) < 0.25
    r = np.abs(pricing.price(df, acc, cal) / df["latency_s"].to_numpy() - 1)
    assert np.median(r) <= 0.08 and np.quantile(r, 0.9) <= 0.25


def test_sustained_compute_limits():
    """The power-limited clock term: no change for a kernel much shorter than its throttle time, the
    sustained fraction's slowdown for a much longer one, monotone in between; off at fraction 1."""
    from simllm.cost.kernels import sustained_compute

    tc = np.array([1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 10.0])
    out = sustained_compute(tc, 0.6, 1e-2)
    assert np.all(out >= tc) and np.all(np.diff(out / tc) > 0)
    assert out[0] / tc[0] == pytest.approx(1.0, abs=1e-3)
    assert out[-1] / tc[-1] == pytest.approx(1 / 0.6, rel=2e-3)
    assert np.array_equal(sustained_compute(tc, 1.0, 1e-2), tc)


def test_long_fp8_gemms_run_at_the_power_limited_clock(shared_data):
    """H100 SGLang fp8 GEMM rows measured over 10 ms (the collector repeats one shape; the same shape family
    reaches 957 TFLOP/s at 2.4 ms and 590 at 50 ms) were priced 40-57% fast at the datasheet clock (signed
    median log -0.52 at 10-30 ms, -0.69 at 30-100 ms before the sustained-clock term). With it, the long rows'
    signed median is within +-0.15 and the rows under 0.3 ms are where they were (within +-0.08)."""
    p = _aic(shared_data) / "h100_sxm" / "gemm" / "sglang"
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("sglang")
    df = T.read_tables(p, "sglang")
    df = df[(df["dtype"] == "fp8") & (df["m"] >= 1024)]
    t = df["latency_s"].to_numpy()
    le = np.log(pricing.price(df, acc, cal) / t)
    long_, short = t > 1e-2, t < 3e-4
    assert long_.sum() > 100 and short.sum() > 1000
    assert abs(np.median(le[long_])) <= 0.15, np.median(le[long_])
    assert abs(np.median(le[short])) <= 0.08, np.median(le[short])


def test_fa3_prefill_packs_query_heads_per_kv_head(shared_data):
    """FlashAttention-3 through the varlen interface (vLLM's and SGLang's H100 prefill) packs the query heads of
    one KV head into one query tile: one-token prompts at batch 256 take the same time whether 8, 32 or 64 query
    heads share their KV heads (measured within 25% of each other), so the price must not grow with the query heads
    (one tile per query head priced 17 / 32 / 51 us at 8 / 32 / 64 heads and 8 KV heads against 67-69 us measured);
    and the fewer KV heads, the faster (measured 20-25 / 27-30 / 39-44 / 66-69 us at 1 / 2 / 4 / 8)."""
    from simllm.cost.kernel_models import prefill_tiles

    assert prefill_tiles(256, 1, 64, 8, 128, "vllm_flash_attn_fa3") == 256 * 8
    assert prefill_tiles(256, 2, 64, 8, 128, "vllm_flash_attn") == 256 * 64  # FA2: one tile per query head ...
    assert prefill_tiles(256, 1, 64, 8, 128, "vllm_flash_attn") == 256 * 8  # ... but one-token queries swapped
    assert prefill_tiles(256, 1, 64, 8, 128, "vllm_flash_attn", 128) == 256 * 64  # not with a window
    assert prefill_tiles(256, 1, 64, 8, 128, "torch_flow") == 256 * 64  # TensorRT-LLM's kernel: per query head
    assert prefill_tiles(4, 100, 32, 8, 128, "flashinfer") == 4 * 8 * np.ceil(400 / 128)  # FlashInfer: packed
    assert prefill_tiles(1, 4096, 32, 32, 64, "fa3") == 32 * np.ceil(4096 / 192)  # FA3's 192-row tiles at hd <= 96
    p = _aic(shared_data) / "h100_sxm" / "attention" / "vllm"
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("vllm")
    df = T.read_tables(p, "vllm")
    df = df[(df["kind"] == "context_attention") & (df["isl"] == 1) & (df["batch_size"] == 256)
            & (df["head_dim"] == 128) & (df["kv_cache_dtype"] == "bfloat16") & (df["window_size"] == 0)]
    pred = pricing.price(df, acc, cal)
    for kvh in (1, 2, 4, 8):
        m = (df["num_key_value_heads"] == kvh).to_numpy() & df["num_heads"].isin([8, 32, 64]).to_numpy()
        t = df["latency_s"].to_numpy()[m]
        assert m.sum() >= 2 and t.max() / t.min() < 1.25
        assert pred[m].max() / pred[m].min() < 1.3, (kvh, pred[m])
        assert np.all(np.abs(pred[m] / t - 1) < 0.3), (kvh, pred[m] / t)
    by = df.assign(p=pred)[df["num_heads"] == 64].set_index("num_key_value_heads")["p"]
    assert by[1] < by[2] < by[4] < by[8]


def test_sglang_triton_prefill_window_is_a_mask(shared_data):
    """SGLang's Triton extend-attention applies a sliding window as a mask over every KV tile (L40S, fp8, window
    128, 16,384 tokens: 11.9 ms, 0.8x the unwindowed 15.0 ms, not the band's 1 / 64): the windowed rows are priced
    with the whole causal work, in a section of their own (``triton_swa``). Their long prompts were priced 60-80%
    fast as a band."""
    from simllm.cost.kernel_models import _attn_groups

    p = _aic(shared_data) / "l40s" / "attention" / "sglang"
    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("sglang")
    df = T.read_tables(p, "sglang")
    df = df[(df["kind"] == "context_attention") & (df["kernel_source"] == "triton")]
    fams = {src for _, src, m in _attn_groups(df, "context_attention", "sglang") if m.any()}
    assert "triton_swa" in fams and "triton" in fams
    long_ = df[(df["window_size"] > 0) & (df["isl"] >= 8192)]
    r = pricing.price(long_, acc, cal) / long_["latency_s"].to_numpy()
    # (the head-dim-192 rows run 22-36% under the whole causal work: their kernel skips some tiles; head dim 64 +-5%)
    lo, hi = np.percentile(r, [5, 95])
    assert len(long_) >= 20 and lo > 0.75 and hi < 1.5 and np.median(np.abs(r - 1)) < 0.2, (lo, hi)


def test_prefill_kv_bytes_cost_more_from_a_paged_cache(shared_data):
    """A prefill that gathers K/V from a paged cache (vLLM's FA2 on L40S) pays more per K/V byte than per query or
    output byte: 64 query heads, batch 16, 128-token prompts (one query tile per head, no re-read) take 74 / 104 /
    387 us at 1 / 8 / 64 KV heads. The section's ``kv_cost`` prices the 64-KV-head row within 20% and keeps the
    one-KV-head row within 25% (one bandwidth for all bytes priced them 40% fast and 30% slow)."""
    p = _aic(shared_data) / "l40s" / "attention" / "vllm"
    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("vllm")
    assert cal.kernels["context_attention/bfloat16"]["kv_cost"] > 1.5
    df = T.read_tables(p, "vllm")
    df = df[(df["kind"] == "context_attention") & (df["batch_size"] == 16) & (df["isl"] == 128)
            & (df["num_heads"] == 64) & (df["head_dim"] == 128) & (df["kv_cache_dtype"] == "bfloat16")
            & (df["window_size"] == 0)]
    r = pd.Series(pricing.price(df, acc, cal) / df["latency_s"].to_numpy(), index=df["num_key_value_heads"].to_numpy())
    assert abs(r[64] - 1) < 0.2 and abs(r[1] - 1) < 0.25, r


def test_trtllm_prefill_head_dims_are_kernels_of_their_own(shared_data):
    """TensorRT-LLM's context FMHA is a precompiled kernel per head size and dtype: on L40S its fp8 prefill at head
    dim 128 ran 82% faster than one section fitted mostly on head dim 64 priced it. With a section per head dim the
    fp8 group is within 8% median / 25% p90 and no head dim is off by more than 10% at the median."""
    p = _aic(shared_data) / "l40s" / "attention" / "trtllm"
    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("trtllm")
    df = T.read_tables(p, "trtllm")
    df = df[(df["kind"] == "context_attention") & (df["dtype"] == "fp8")]
    r = pricing.price(df, acc, cal) / df["latency_s"].to_numpy() - 1
    assert np.median(np.abs(r)) <= 0.08 and np.percentile(np.abs(r), 90) <= 0.25
    for hd in (64, 128, 192, 256):
        m = (df["head_dim"] == hd).to_numpy()
        assert m.sum() > 1000 and abs(np.median(r[m])) < 0.1, (hd, np.median(r[m]))


def test_trtllm_weight_only_small_m_streams_the_weights(shared_data):
    """TensorRT-LLM's weight-only int4 GEMM at one to four tokens streams its weights (A100, m = 1, 48-128 MiB of
    int4 weights: 1.27 TB/s); priced with the 64-row tiles padding M, those rows were 30-43% slow (median). The
    sections' 16-row tile (kernel_models.SMALL_M_TILES, which their refit added) brings the m <= 4 rows within 12% at the median."""
    p = _aic(shared_data) / "a100_sxm" / "gemm" / "trtllm"
    acc = load_accelerator("a100-sxm-80gb")
    cal = calibration_for(acc).for_framework("trtllm")
    assert [16, 128] in [list(t) for t in cal.kernels["gemm/int4_wo"]["tiles"]]
    df = T.read_tables(p, "trtllm")
    df = df[(df["kind"] == "gemm") & (df["dtype"] == "int4_wo") & (df["m"] <= 4)]
    r = pricing.price(df, acc, cal) / df["latency_s"].to_numpy() - 1
    assert len(df) > 500 and abs(np.median(r)) < 0.12, np.median(r)
