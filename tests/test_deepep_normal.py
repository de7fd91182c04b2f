"""DeepEP normal (prefill) dispatch/combine kernels: the measured H100 tables, DeepEP's published H800
figures (not fitted on), the exact expectation of ranks reached against the router's own Monte Carlo."""

import numpy as np
import pandas as pd
import pytest

from simllm.cost import deepep_normal as dn
from simllm.cost.calibration import calibration_for
from simllm.errors import InputError
from simllm.hardware import load_accelerator, load_node
from simllm.topology import ep_routing


def test_ranks_reached_is_the_router_expectation():
    for ranks, experts, topk in ((8, 256, 8), (8, 16, 2), (8, 128, 1), (8, 512, 22)):
        rt = ep_routing(20000, experts, topk, ranks, ranks, seed=3)
        mc = rt.rank_deliveries / rt.tokens
        assert float(dn.ranks_reached(ranks, experts, topk)) == pytest.approx(mc, rel=0.01)
    assert float(dn.ranks_reached(8, 8, 8)) == pytest.approx(8.0)
    assert float(dn.ranks_reached(8, 256, 1)) == pytest.approx(1.0)


def test_h100_tables_within_targets(shared_data):
    from simllm.cost import tables
    from simllm.cost.pricing import error_summary

    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc).for_framework("sglang")
    df = tables.read_tables(shared_data / "calibration/aiconfigurator/h100_sxm/comm/sglang/0.5.12/"
                            "wideep_deepep_normal_perf.parquet")
    s = error_summary(df, dn.price(df, acc, cal))
    assert not s["unpriced"]
    for op in dn.OPS:
        g = s["per_op"][f"deepep_normal_{op}/unspecified"]
        assert g["n"] == 2484
        assert g["median"] <= 0.08 and g["p90"] <= 0.25, (op, g)


@pytest.mark.parametrize("op,published", [("dispatch", 153e9), ("combine", 158e9)])
def test_deepep_published_h800_intranode_within_20pct(op, published):
    """DeepEP README, normal kernels, H800 8 GPUs over NVLink: 4,096 tokens, hidden 7,168, top-8 of 256
    experts, FP8 dispatch / BF16 combine, 24 SMs: 153 / 158 GB/s (received bytes / time). Not in the fit."""
    node = load_node("hgx-h800")
    p = dn.params(calibration_for(node.accelerator), op)
    t = float(dn.normal_time(op, 4096, 7168, 8, 256, 8, 24, node.scale_up_bw, p))
    bw = 4096 * float(dn.ranks_reached(8, 256, 8)) * float(dn.copy_bytes(7168, op)) / t
    assert bw == pytest.approx(published, rel=0.20)


def test_fewer_sms_slower_until_the_link_binds():
    p = dn.params(calibration_for(load_accelerator("h100-sxm")), "dispatch")
    t = [float(dn.normal_time("dispatch", 65536, 7168, 8, 256, 8, s, 450e9, p)) for s in (4, 8, 16, 24, 48)]
    assert t[0] > 1.8 * t[1] > 1.8 * 1.5 * t[2]
    assert all(a > b for a, b in zip(t, t[1:]))
    assert t[3] / t[4] < 0.7 * (t[0] / t[1])  # doubling SMs past ~20 buys far less: NVLink binds


def test_multi_node_rows_unpriced_and_bad_input():
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc)
    row = {"hidden_size": 7168, "num_token": 128, "num_topk": 8, "num_experts": 256, "dispatch_sms": 24,
           "kind": "deepep_normal_dispatch", "latency_s": 1e-4, "source": "x.parquet"}
    df = pd.DataFrame([row, {**row, "node_num": 2}])
    df.loc[0, "node_num"] = 1
    out = dn.price(df, acc, cal)
    assert np.isfinite(out[0]) and out[0] > 0 and np.isnan(out[1])
    with pytest.raises(InputError) as e:
        dn.price(df.drop(columns=["num_topk"]), acc, cal)
    assert e.value.field == "num_topk"
    with pytest.raises(InputError):
        dn.ranks_reached(8, 100, 8)  # 100 experts do not divide over 8 ranks
