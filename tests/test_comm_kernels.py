"""Kernel-level collectives, DeepEP low-latency and the MoE layer kernel against measured tables.

Fit errors are checked with the parameters shipped in hardware/calibration/a100-sxm-80gb.yaml
(fitted by ``python benchmarks/comm_calibration.py --write``) on the A100 tables of
../shared/data; the DeepEP low-latency figures against DeepEP's published H800 table, which
nothing was fitted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from simllm.cost import collectives as C, comm_tables as T, moe_layer as M
from simllm.cost.calibration import calibration_for
from simllm.errors import InputError
from simllm.hardware import load_accelerator, load_cluster, load_node

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "calibration" / "aiconfigurator"
need_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/calibration/aiconfigurator is absent")


@pytest.fixture(scope="module")
def a100():
    return calibration_for(load_accelerator("a100-sxm-80gb"))


@need_data
def test_shipped_a100_nccl_and_vllm_custom_allreduce_errors(a100):
    """Every (kind, dtype) group of >= 50 rows: median <= 8%, p90 <= 25% (issue targets)."""
    sec = {"kernels": a100.kernels, "frameworks": {"vllm": a100.frameworks["vllm"]}}
    errs = T.sections_errors(DATA, sec, ["a100_sxm"])["a100_sxm"]
    assert len(errs) == 9  # 4 ops x 2 dtypes + vLLM's custom all-reduce
    for group, e in errs.items():
        assert e["n"] >= 50
        assert e["median"] <= 0.08, (group, e)
        assert e["p90"] <= 0.25, (group, e)


@need_data
def test_l40s_custom_allreduce_pcie_switch_break():
    """L40S (PCIe, no NVLink): the shipped vLLM custom all-reduce reproduces the measured break
    between 2 ranks (one PCIe switch) and 4 / 8 (across the host) for messages >= 2 MiB (CUDA
    graph), which one power law of the rank count cannot; the group median meets the 8% target."""
    cal = calibration_for(load_accelerator("l40s")).for_framework("vllm")
    sec = {"kernels": cal.kernels, "frameworks": {"vllm": {"kernels": cal.kernels}}}
    errs = T.sections_errors(DATA, sec, ["l40s"])["l40s"]
    assert errs["custom_allreduce/vllm"]["median"] <= 0.08, errs["custom_allreduce/vllm"]
    d = T.gpu_tables(DATA / "l40s")["vllm"]
    d = d[d["graph"].to_numpy(bool) & (d["nbytes"].to_numpy() >= 2 ** 21)]
    pred = T.price(d, T.system_link("l40s"), T.nccl_params(cal), T.custom_params(cal))
    r = pred / d["latency_s"].to_numpy() - 1
    for n in (2, 4, 8):
        m = d["num_gpus"].to_numpy() == n
        assert m.sum() >= 5 and np.all(np.abs(r[m]) < 0.12), (n, r[m])
    # the measured 4-rank time is 7x the 2-rank one at the largest size: more than the bytes (1.5x) explain
    t = d[d["nbytes"] == d["nbytes"].max()].set_index("num_gpus")["latency_s"]
    assert t[4] / t[2] > 5


@need_data
def test_eager_custom_allreduce_is_paced_by_the_slower_of_host_and_device():
    """Back-to-back eager calls cost max(host issue time, graph kernel + input copy), not their sum:
    with the shipped L40S SGLang fit, the 2-GPU eager rows of 16 Ki-256 Ki elements (measured flat at
    39-40 us while the graph rows grow 8 -> 32 us) within 10%, and the 1-64 Mi rows (device-bound)
    within 10% of graph + copy; the 4-GPU eager floor (across the PCIe host) is about twice the 2-GPU one."""
    cal = calibration_for(load_accelerator("l40s")).for_framework("sglang")
    d = T.gpu_tables(DATA / "l40s", ["sglang"])["sglang"]
    link, nc, ca = T.system_link("l40s"), T.nccl_params(cal), T.custom_params(cal)
    eager = ~d["graph"].to_numpy(bool)
    size = d["message_size"].to_numpy()
    n = d["num_gpus"].to_numpy()
    pred = T.price(d, link, nc, ca)
    r = pred / d["latency_s"].to_numpy() - 1
    flat = eager & (n == 2) & (size >= 2 ** 14) & (size <= 2 ** 18)
    big = eager & (n == 2) & (size >= 2 ** 20) & (size <= 2 ** 26)
    assert flat.sum() >= 5 and big.sum() >= 5
    assert np.all(np.abs(r[flat]) < 0.10), r[flat]
    assert np.all(np.abs(r[big]) < 0.10), r[big]
    t = d["latency_s"].to_numpy()
    assert 1.8 < np.median(t[eager & (n == 4) & (size <= 2 ** 12)]) / np.median(t[flat]) < 2.6  # measured
    assert 1.5 < ca.cross_eager < 3.0  # fitted on it
    # the form: never below either term
    S = np.array([2.0 ** 12, 2.0 ** 20, 2.0 ** 26])
    for k in (2, 4, 8):
        g = C.custom_allreduce_time(S, k, link, ca, nc, graph=True)
        e = C.custom_allreduce_time(S, k, link, ca, nc, graph=False)
        assert np.all(e >= g) and np.all(e >= ca.launch_eager_s)


def test_nvls_only_on_nvswitch_gen3_and_custom_allreduce_graph_beats_eager(a100):
    h100, a = C.IntraLink.from_node(load_node("dgx-h100")), C.IntraLink.from_node(load_node("dgx-a100"))
    assert h100.nvls and not a.nvls
    nc = T.nccl_params(a100, "all_reduce")
    _, alg = C.nccl_time("all_reduce", np.array([2.0 ** 24]), np.array([8]), h100, nc, with_algorithm=True)
    assert alg[0] == "nvls"
    _, alg = C.nccl_time("all_reduce", np.array([2.0 ** 24]), np.array([8]), a, nc, with_algorithm=True)
    assert alg[0] != "nvls"
    ca = T.custom_params(a100)
    g = C.custom_allreduce_time(65536.0, 4, a, ca, nc, graph=True)
    e = C.custom_allreduce_time(65536.0, 4, a, ca, nc, graph=False)
    assert 2e-6 < g < 15e-6 < e  # measured 5.3-6.6 us under a CUDA graph, 44-46 us eager (A100 vLLM)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(C.NCCL_OPS)), st.floats(1e3, 1e9), st.sampled_from([2, 4, 8]), st.floats(1.01, 4.0))
def test_nccl_time_grows_with_size(op, nbytes, n, f):
    p = C.NcclParams()
    for node in ("dgx-h100", "dgx-a100"):
        link = C.IntraLink.from_node(load_node(node))
        assert C.nccl_time(op, nbytes * f, n, link, p) >= C.nccl_time(op, nbytes, n, link, p) > 0


def test_serving_tp_allreduce_is_the_kernel_not_the_eager_call(a100):
    node = load_node("dgx-a100")
    links = C.CommLinks.from_node(node, a100.comm)
    nbytes = 64 * 8192 * 2  # a 64-token decode step of Llama-2-70B, bf16
    t = C.tp_all_reduce(nbytes, 4, links, 4, a100, tokens=64)
    assert t < 20e-6  # measured vLLM custom all-reduce, 1 MiB on 4 A100s under a graph: 18.3 us
    assert C.all_reduce(nbytes, 4, links, 4) > 3 * t  # the Vidur-fitted eager host call
    assert C.tp_all_reduce(nbytes, 16, links, 8, a100, tokens=64) == C.all_reduce(nbytes, 16, links, 8)


# DeepEP README (deepseek-ai/DeepEP), low-latency kernels on H800 + CX7 400 Gb/s, 128 tokens,
# hidden 7168, top-8, FP8 dispatch / BF16 combine: latency in us per #EP (16, 32, 64)
DEEPEP_LL = {"dispatch": {16: 118, 32: 155, 64: 173}, "combine": {16: 195, 32: 273, 64: 314}}


@pytest.mark.parametrize("op", ["dispatch", "combine"])
def test_deepep_low_latency_matches_published_h800(op):
    from simllm.topology import build_topology, ep_dispatch_ll

    topo = build_topology("h800-ep")
    for n, us in DEEPEP_LL[op].items():
        t = ep_dispatch_ll(topo, 128, 7168, 8, n, op=op).time_s
        assert abs(t * 1e6 / us - 1) < 0.15, (op, n, t * 1e6, us)


def test_comm_cli_prints_both_deepep_kernels(capsys):
    from simllm.cli.comm import comm

    comm("dispatch", cluster="h800-ep", devices=32, nbytes=None, tokens=128, hidden=7168, topk=8, dtype="fp8",
         experts=256, topk_groups=None, algorithm="auto", src=None, dst=None, as_json=False)
    out = capsys.readouterr().out
    assert "DeepEP RDMA bw" in out and "low-latency kernel time" in out


def test_moe_rank_counts_follow_the_collectors():
    c = M.rank_counts(1024, 256, 8, 8, "balanced")
    assert sum(c) == 1024 * 8 / 8 and len(c) == 32  # the global stride routing: T k / ep slots on E / ep experts
    assert M.rank_counts(1024, 256, 8, 256, "balanced") == (32.0,)  # one local expert keeps its T k / E slots
    # one token at EP 64: the stride-32 choices 0, 32, 64, ... leave rank 0 (experts 0-3) one expert
    assert M.rank_counts(1, 256, 8, 64, "balanced") == (1.0,)
    # power law, T k <= E: every rounded count is 0 and the shortfall goes one slot per rank in turn
    assert M.rank_counts(1, 160, 8, 8, "power_law_1.2") == (1.0,)
    assert M.rank_counts(1, 160, 8, 1, "power_law_1.2") == (1.0,) * 8  # a token picks an expert once
    assert max(M.rank_counts(64, 8, 2, 1, "power_law_1.01")) <= 64  # no expert above T
    bal = sum(M.rank_counts(4096, 256, 8, 32, "balanced"))
    skew = sum(M.rank_counts(4096, 256, 8, 32, "power_law_1.2"))
    assert skew > 1.5 * bal  # the busiest expert group sits on rank 0
    with pytest.raises(InputError):
        M.rank_counts(16, 256, 8, 8, "zipf")


@need_data
def test_moe_layer_error_on_shipped_a100_vllm(a100):
    """Measured today (see README): 17.7% median over 6,360 rows; EP 128 18%, EP 256 25% (52-75%
    before the per-rank fixed costs). A guard against regressions, not the issue's 8% target."""
    from simllm.cost.tables import read_tables

    df = read_tables(DATA / "a100_sxm" / "moe", framework="vllm")
    df = df[df["kind"] == "moe"].sample(800, random_state=3)
    acc = load_accelerator("a100-sxm-80gb")
    r = np.abs(M.price_frame(df, acc, a100) / df["latency_s"].to_numpy() - 1)
    assert np.median(r) < 0.22
    big = df["moe_ep_size"].to_numpy() >= 128
    assert np.median(r[big]) < 0.30


@need_data
def test_moe_nongated_kernel_prices_two_matrices():
    """TensorRT-LLM's ``moe_torch_flow_nongated`` rows (Nemotron-H relu^2 experts: up of width I,
    two weight matrices) were priced as gated SwiGLU (gate+up 2I, three matrices): +23% median
    signed error on H100 bf16. Priced as non-gated they sit within the gated rows' error, and a
    non-gated layer is cheaper than the same shape gated whatever the regime."""
    from simllm.cost.tables import read_tables

    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("trtllm")
    df = read_tables(DATA / "h100_sxm" / "moe", framework="trtllm")
    df = df[(df["kind"] == "moe") & (df["dtype"] == "bfloat16")]
    ng = df[df["kernel_source"].astype(str).str.contains("nongated")].sample(400, random_state=5)
    signed = M.price_frame(ng, acc, cal) / ng["latency_s"].to_numpy() - 1
    assert abs(np.median(signed)) < 0.10 and np.median(np.abs(signed)) < 0.15
    p = M.moe_params(cal, "bfloat16")
    for T in (1, 64, 4096):
        g = M.moe_time(T, 2688, 1856, 6, 128, 1, 1, "balanced", "bfloat16", acc=acc, gp=cal.gemm, p=p)
        n = M.moe_time(T, 2688, 1856, 6, 128, 1, 1, "balanced", "bfloat16", acc=acc, gp=cal.gemm, p=p, gated=False)
        assert n < g


@need_data
@pytest.mark.parametrize("dtype, med", [("bfloat16", 0.20), ("fp8", 0.20)])
def test_moe_layer_fitted_on_l40s_trtllm(dtype, med):
    """L40S had no moe sections (every L40S MoE row priced with the defaults: TRT-LLM bf16 36%
    median, +29% signed); fitted on its own tables. A regression guard on a seeded sample."""
    from simllm.cost.tables import read_tables

    acc = load_accelerator("l40s")
    cal = calibration_for(acc).for_framework("trtllm")
    assert "moe/" + dtype in cal.kernels
    df = read_tables(DATA / "l40s" / "moe", framework="trtllm")
    df = df[(df["kind"] == "moe") & (df["dtype"] == dtype)].sample(600, random_state=7)
    r = np.abs(M.price_frame(df, acc, cal) / df["latency_s"].to_numpy() - 1)
    assert np.median(r) < med


@need_data
def test_moe_per_expert_term_on_h100_vllm_fp8():
    """FlashInfer's CUTLASS fp8 MoE (H100, vLLM 0.24) costs a fixed amount per touched expert: at TP 32
    (0.15 MB of weights an expert) 44 / 141 / 246 us with 8 / 64 / 128 experts touched. Without the
    per-expert term (``expert_s``) the fitted section bent the HBM bandwidth to 18% and priced the table at
    10.0% / 40% median / p90; with it (and the latent-MoE shape priced non-gated) 7.3% / 21%.
    The touched-expert proportionality is checked on the measured rows, the fit on a seeded sample."""
    from simllm.cost.tables import read_tables

    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("vllm")
    p = M.moe_params(cal, "fp8")
    assert p.expert_s > 0
    df = read_tables(DATA / "h100_sxm" / "moe", framework="vllm")
    df = df[(df["kind"] == "moe") & (df["dtype"] == "fp8")]
    q = df[(df.hidden_size == 2048) & (df.inter_size == 768) & (df.num_experts == 128) & (df.moe_tp_size == 32)
           & (df.moe_ep_size == 1) & (df.distribution == "balanced")]
    t = q.groupby("num_tokens").latency_s.median()
    touched = {T: len(M.rank_counts(int(T), 128, 8, 1, "balanced")) for T in (1, 8, 48)}
    assert touched == {1: 8, 8: 64, 48: 128}  # the collectors' stride routing
    per = [(t[b] - t[a]) / (touched[b] - touched[a]) for a, b in ((1, 8), (8, 48))]
    assert 0.5 < per[0] / per[1] < 2.0  # the same cost per added expert, whatever the tokens
    s = df.sample(3000, random_state=11)
    r = np.abs(M.price_frame(s, acc, cal) / s["latency_s"].to_numpy() - 1)
    assert np.median(r) < 0.08 and np.quantile(r, 0.9) < 0.25


@need_data
def test_mla_bmm_heads_as_one_call_with_l2_and_quant_pass():
    """MLA's per-head BMMs (H100, SGLang) priced as ``num_heads`` GEMMs of one call with the collector's one
    operand copy in L2 and, for fp8, the activation-quantization pass: both dtypes within the targets
    (median <= 8%, p90 <= 25%; 8.9% / 29% and 13% / 47% before). Physics checked on the measured rows: the
    fp8 call (quantize + block-scaled BMM) costs more than the bf16 one once the activations dominate, and a
    call far beyond the L2 streams at no more than the HBM bandwidth."""
    from simllm.cost import kernel_models as km
    from simllm.cost.tables import read_tables

    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("sglang")
    df = read_tables(DATA / "h100_sxm" / "mla_bmm", framework="sglang")
    df = df[df["kind"] == "mla_bmm"]
    big = df[(df.op_name == "mla_gen_post") & (df.num_heads == 128) & (df.num_tokens == 8192)]
    t = big.groupby("dtype")["latency_s"].median()
    assert t["fp8"] > t["bfloat16"]  # the quantization pass reads the bf16 activations anyway
    assert 8192 * 128 * (512 + 128) * 2 / t["bfloat16"] < acc.hbm_bw  # 1.3 GB: no L2 help
    pred = km.price_mla_bmm(df, acc, cal)
    r = pred / df["latency_s"].to_numpy() - 1
    for d in ("bfloat16", "fp8"):
        e = np.abs(r[(df["dtype"] == d).to_numpy()])
        assert np.median(e) <= 0.08 and np.quantile(e, 0.9) <= 0.25, d
    pb = pd.Series(km.price_mla_bmm(big, acc, cal), index=big.index).groupby(big["dtype"]).median()
    assert pb["fp8"] > pb["bfloat16"]


def _table(tmp_path, **cols):
    d = tmp_path / "a100_sxm" / "comm" / "nccl" / "2.27.3"
    d.mkdir(parents=True)
    base = {"op_name": ["all_reduce"], "nccl_dtype": ["half"], "num_gpus": [2], "message_size": [1024],
            "latency": [0.01], "kernel_source": ["NCCL"]}
    base.update(cols)
    base = {k: v for k, v in base.items() if v is not None}
    pd.DataFrame(base).to_parquet(d / "nccl_perf.parquet")
    return d / "nccl_perf.parquet"


@pytest.mark.parametrize("cols, field", [({"message_size": None}, "message_size")])
def test_bad_comm_table_is_one_line_exit_2(tmp_path, cols, field):
    from simllm.cost.tables import read_tables

    p = _table(tmp_path, **cols)
    with pytest.raises(InputError) as e:
        read_tables(p)
    assert e.value.field == field and str(p) in str(e.value.file)
    with pytest.raises(InputError) as e:
        T.prepare(pd.DataFrame({"kind": ["nccl_broadcast"], "dtype": ["half"], "num_gpus": [2],
                                "message_size": [8.0], "source": ["x.parquet"]}))
    assert e.value.field == "op_name"


def test_unknown_collective_is_counted_unpriced_not_refused(tmp_path, capsys):
    """A table with a collective the model has no physics for (NCCL's broadcast) beside known ones: `calibrate
    check` prices what it can and counts the rest in ``unpriced`` (the issue's contract), exit 0; the whole
    folder is not refused."""
    import json

    from simllm.cli import main

    p = _table(tmp_path, op_name=["all_reduce", "broadcast", "broadcast"], nccl_dtype=["half"] * 3,
               num_gpus=[2, 2, 4], message_size=[1024, 1024, 4096], latency=[0.01, 0.012, 0.02],
               kernel_source=["NCCL"] * 3)
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "check", str(p), "--hw", "a100-sxm-80gb", "--json"])
    assert e.value.code == 0
    d = json.loads(capsys.readouterr().out)
    d = d.get("frameworks", {}).get("nccl", d)
    assert d["n"] == 3 and d["unpriced"] == {"nccl_broadcast": 2}
    assert set(d["per_op"]) == {"nccl_all_reduce/half"}


@need_data
def test_l40s_nccl_all_reduce_has_the_ll_to_simple_knee():
    """PCIe NCCL all-reduce: LL (flags halve its bandwidth) below ~0.5 MiB, a streaming protocol above; the shipped L40S
    fit (two-start simplex, comm_tables.fit_nccl) reaches the issue's targets on every all-reduce and
    all-to-all group (it had kept LL alone: p90 29-30%)."""
    cal = calibration_for(load_accelerator("l40s")).for_framework("vllm")
    sec = {"kernels": cal.kernels, "frameworks": {"vllm": {"kernels": cal.kernels}}}
    errs = T.sections_errors(DATA, sec, ["l40s"])["l40s"]
    for g in ("nccl_all_reduce/half", "nccl_all_reduce/int8", "nccl_alltoall/half", "nccl_alltoall/int8"):
        assert errs[g]["median"] <= 0.08 and errs[g]["p90"] <= 0.25, (g, errs[g])
    link, p = T.system_link("l40s"), T.nccl_params(cal, "all_reduce")
    _, alg = C.nccl_time("all_reduce", np.array([64e3, 256e3, 4e6, 64e6]), np.array([2, 2, 2, 2]), link, p,
                         with_algorithm=True)
    # one protocol below the knee, a faster-streaming one above it (the fit names it LL128 or Simple)
    assert alg[0] == alg[1] == "ll" and alg[2] == alg[3] != "ll"
    assert getattr(p, f"{alg[3]}_eff") > 1.3 * p.ll_eff


@need_data
def test_deepep_ll_few_experts_are_bound_by_their_warp_groups():
    """DeepEP low-latency kernels run one warp group per expert: with 8 or 16 experts few SMs run them
    and dispatch is 4-7x slower than the NVLink line (H100 SGLang table, one node); the shipped fit
    prices those dispatch rows within 15% at >= 256 tokens (they were 0.13-0.39x) while 128+ experts stay
    on the link line."""
    from simllm.cost import deepep as D
    from simllm.cost.tables import read_tables

    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("sglang")
    df = read_tables(DATA / "h100_sxm" / "comm" / "sglang" / "0.5.12" / "wideep_deepep_ll_perf.parquet")
    r = D.price_ll(df, acc, cal) / df["latency_s"].to_numpy() - 1
    few = (df["num_experts"].to_numpy() <= 16) & (df["num_token"].to_numpy() >= 256)
    many = (df["num_experts"].to_numpy() >= 128) & (df["num_token"].to_numpy() >= 256)
    disp = (df["kind"] == "deepep_ll_dispatch").to_numpy()
    assert (few & disp).sum() >= 9 and np.all(np.abs(r[few & disp]) < 0.15), r[few & disp]
    assert np.all(np.abs(r[few & ~disp]) < 0.25), r[few & ~disp]  # combine: the link line 13-29% fast before
    assert np.median(np.abs(r[many])) < 0.06
    assert list(C.ll_warp_groups(np.array([8, 128, 160, 288, 512]), 132)) == [8, 128, 160, 288, 512]
    assert C.ll_warp_groups(133, 132) == 134  # 2 a SM, 67 SMs

def test_moe_legacy_collector_convention():
    """Tables of the older collector runs (A100 vLLM 0.14.0) follow the largest-first power-law
    correction without the per-expert clamp and benchmarked the Nemotron-H shapes gated; a section
    with ``legacy_collector`` 1 prices them so, the default the current collectors' way."""
    new = M.rank_counts(2, 128, 8, 1, "power_law_1.2")
    old = M.rank_counts(2, 128, 8, 1, "power_law_1.2", True)
    assert sum(new) == sum(old) == 16 and max(new) <= 2
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc)
    row = pd.DataFrame({"num_tokens": [256], "hidden_size": [2688], "inter_size": [1856], "topk": [6],
                        "num_experts": [128], "moe_tp_size": [1], "moe_ep_size": [1], "distribution": ["balanced"],
                        "dtype": ["bfloat16"], "kernel_source": ["vllm_fused_moe"]})
    p0 = M.MoEParams()
    p1 = M.MoEParams(legacy_collector=1.0)
    t0 = M.price_frame(row, acc, cal, {"bfloat16": p0})[0]
    t1 = M.price_frame(row, acc, cal, {"bfloat16": p1})[0]
    gated = M.moe_time(256, 2688, 1856, 6, 128, 1, 1, "balanced", "bfloat16", acc=acc, gp=cal.gemm, p=p1)
    assert t0 < t1 and t1 == pytest.approx(gated)


def test_moe_uncalibrated_dtypes_priced_from_the_nearest_measured_section():
    """nvfp4 / w4afp8 / w4a8_mxfp4_mxfp8 have no table in ../shared/data: priced with the nearest
    measured dtype's section at the device's own fp4 / fp8 peak; finite, never above the fp8 layer
    they shrink (fewer weight bytes, same or faster peak), and a device without fp4 is refused."""
    acc = load_accelerator("b200")
    cal = calibration_for(acc)
    shape = (7168, 2048, 8, 256, 1, 8, "balanced")
    for T in (1, 128, 8192):
        t = {dt: M.moe_time(T, *shape, dt, acc=acc, gp=cal.gemm, p=M.moe_params(cal, dt))
             for dt in ("fp8", "fp8_block", "nvfp4", "w4afp8", "w4a8_mxfp4_mxfp8")}
        assert all(np.isfinite(v) and v > 0 for v in t.values()), t
        assert t["nvfp4"] <= t["fp8_block"] and t["w4a8_mxfp4_mxfp8"] <= t["fp8_block"] * 1.001
        assert t["w4afp8"] <= t["fp8"]
    assert M.moe_params(cal, "nvfp4") == M.moe_params(cal, "fp8_block")
    h100 = load_accelerator("h100-sxm")
    with pytest.raises(InputError, match="fp4"):
        M.moe_time(16, *shape, "nvfp4", acc=h100, gp=cal.gemm, p=M.moe_params(cal, "nvfp4"))
    row = pd.DataFrame({"num_tokens": [64], "hidden_size": [7168], "inter_size": [2048], "topk": [8],
                        "num_experts": [256], "moe_tp_size": [1], "moe_ep_size": [8], "distribution": ["balanced"],
                        "dtype": ["nvfp4"], "kernel_source": ["sglang_flashinfer_cutedsl_moe"]})
    assert np.isfinite(M.price_frame(row, acc, cal)).all()


def test_moe_benchmark_l2_residency_only_for_small_weight_sets():
    """The collectors replay one layer's weights: a set that fits in L2 streams faster (l2_speedup);
    the serving path (warm_l2=False) and sets far above L2 are unaffected."""
    acc = load_accelerator("l40s")
    cal = calibration_for(acc)
    p = M.MoEParams(l2_speedup=4.0)
    small = (1, 2048, 768, 8, 128, 1, 1, "balanced", "bfloat16")  # 8 experts x 9.4 MB: in the 96 MiB L2
    big = (1, 6144, 16384, 2, 8, 1, 1, "balanced", "bfloat16")  # 2 experts x 604 MB
    r = [M.moe_time(*a, acc=acc, gp=cal.gemm, p=p) / M.moe_time(*a, acc=acc, gp=cal.gemm, p=p, warm_l2=False)
         for a in (small, big)]
    assert r[0] < 0.7 and 0.99 < r[1] <= 1.0


def test_comm_cli_low_latency_prices_what_the_ep_step_cost_prices():
    """`simllm comm` prints the low-latency kernel time the expert-parallel step cost uses: with few
    experts (Mixtral's 8 over 8 GPUs) the kernel's warp groups, one per local expert, pace it, and
    the command must not drop that term (it did: 28 us where the step cost priced 82 us)."""
    import json

    from simllm.cli.comm import comm
    from simllm.cost import collectives as C
    from simllm.cost.calibration import calibration_for
    from simllm.topology import build_topology, ep_dispatch_ll

    topo = build_topology("h800-pd22")
    acc = topo.cluster.accelerator
    p = C.DeepEPLLParams(**{k: float(v) for k, v in calibration_for(acc).kernels["deepep_ll"].items()})
    node = topo.node
    want = float(C.deepep_ll_time("dispatch", 256, 4096, 2, 8, 8, node.scale_up_bw, node.scale_out_bw, p,
                                  num_experts=8, sms=float(acc.compute_units.value)))
    bare = float(C.deepep_ll_time("dispatch", 256, 4096, 2, 8, 8, node.scale_up_bw, node.scale_out_bw, p))
    assert want > 1.5 * bare  # the warp-group pace binds here
    assert ep_dispatch_ll(topo, 256, 4096, 2, 8, op="dispatch", experts=8).time_s == pytest.approx(want)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        comm("dispatch", cluster="h800-pd22", devices=8, nbytes=None, tokens=256, hidden=4096, topk=2, dtype=None,
             experts=8, topk_groups=None, algorithm="auto", src=None, dst=None, as_json=True)
    assert json.loads(buf.getvalue())["low_latency"]["time_s"] == pytest.approx(want)
