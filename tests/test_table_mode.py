"""Measured-table mode (simllm.cost.table_mode): interpolation exact on table points, fallbacks
counted and reported once per run, bad PATH refused with one line and exit 2."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from simllm.cost import make_step_cost
from simllm.cost.calibration import calibration_for, cost_spec, load_calibration
from simllm.cost.layer_kernels import LayerKernels
from simllm.cost.table_mode import GridTable, TableKernels, with_table_mode
from simllm.errors import InputError
from simllm.hardware import load_accelerator
from simllm.model import load_model

REPO = Path(__file__).resolve().parents[1]
MS = [1, 4, 16, 64, 256, 1024]
NS = [1024, 4096, 6144, 16384]
KS = [1024, 4096, 14336]
B = [1, 4, 16, 64, 256]
ISL = [16, 128, 1024, 8192]


def _gemm_ms(m, n, k):  # an affine roofline in ms (any positive function would do)
    return 2e-3 + 2.0 * m * n * k / 700e12 * 1e3 + (m * k + k * n + m * n) * 2 / 3e12 * 1e3


def _layout(tmp_path: Path) -> Path:
    """A small AIConfigurator GPU folder for H100: a bf16 GEMM grid and Llama-3-8B TP1 attention."""
    g = tmp_path / "h100_sxm"
    rows = [dict(framework="VLLM", version="0.1.0", device="NVIDIA H100 80GB HBM3", kernel_source="x",
                 gemm_dtype="bfloat16", m=m, n=n, k=k, latency=_gemm_ms(m, n, k)) for m in MS for n in NS for k in KS]
    d = g / "gemm" / "vllm" / "0.1.0"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(d / "gemm_perf.parquet")
    att = dict(framework="VLLM", version="0.1.0", device="NVIDIA H100 80GB HBM3", kernel_source="fa3",
               num_heads=32, num_key_value_heads=8, head_dim=128, attn_dtype="bfloat16", kv_cache_dtype="bfloat16")
    dec = [dict(att, batch_size=b, isl=s, step=1, latency=0.01 + 1e-6 * b * s) for b in B for s in ISL]
    pre = [dict(att, batch_size=b, isl=s, step=0, latency=0.012 + 2e-8 * b * s * s) for b in B for s in ISL]
    d = g / "attention" / "vllm" / "0.1.0"
    d.mkdir(parents=True)
    pd.DataFrame(dec).to_parquet(d / "generation_attention_perf.parquet")
    pd.DataFrame(pre).to_parquet(d / "context_attention_perf.parquet")
    return g


def _kernels(tmp_path):
    acc = load_accelerator("h100-sxm")
    spec = cost_spec({"mode": "table", "tables": str(_layout(tmp_path))}, None)
    cost = make_step_cost(load_model("llama-3-8b"), acc, calibration=with_table_mode(calibration_for(acc), spec))
    return cost, cost.ops.k


# --------------------------------------------------------------------------- the grid
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 10 ** 6), min_size=2, max_size=5, unique=True),
       st.lists(st.integers(1, 10 ** 6), min_size=2, max_size=5, unique=True),
       st.floats(1e-7, 1.0), st.data())
def test_grid_exact_on_points_none_outside(xs, ys, scale, data):
    pts = np.array([(x, y) for x in xs for y in ys], float)
    t = scale * (1.0 + np.arange(len(pts)) % 7)
    g = GridTable(pts, t)
    for (x, y), v in zip(pts, t):
        assert g(x, y) == v  # exactly the measured value
    assert g(max(xs) + 1, min(ys)) is None and g(min(xs) - 0.5, min(ys)) is None
    # an interpolated value lies between its bracketing points' extremes
    x = data.draw(st.floats(min(xs), max(xs)))
    v = g(x, min(ys))
    assert v is not None and t.min() * (1 - 1e-12) <= v <= t.max() * (1 + 1e-12)


def test_grid_power_law_exact_and_missing_corner():
    pts = np.array([(m, n) for m in (16, 64, 256) for n in (1024, 4096)], float)
    t = 3e-9 * pts[:, 0] * pts[:, 1] ** 0.5
    g = GridTable(pts, t)
    assert g(32, 2048) == pytest.approx(3e-9 * 32 * 2048 ** 0.5, rel=1e-12)
    g2 = GridTable(pts[1:], t[1:])  # (16, 1024) not measured
    assert g2(20, 2000) is None and g2(64, 1024) == t[2]


# --------------------------------------------------------------------------- serving kernels
def test_gemm_from_table_and_fallback_counted(tmp_path):
    cost, k = _kernels(tmp_path)
    assert isinstance(k, TableKernels)
    for m, n, kk in [(1, 1024, 1024), (64, 6144, 4096), (1024, 16384, 14336)]:
        lo, body = k.gemm(m, kk, n)
        assert lo + body == pytest.approx(_gemm_ms(m, n, kk) * 1e-3, rel=1e-12)
        assert 0 < lo <= lo + body
    assert k.fallbacks == 0 and k.lookups == 3
    plain = LayerKernels(cost.model, cost.acc, k.cal, tp=1, weight_dtype="bf16", act_dtype="bf16", kv_dtype="bf16",
                         kv_bytes=2.0)
    assert k.gemm(4096, 4096, 4096) == plain.gemm(4096, 4096, 4096)  # M above the table: analytic
    assert k.gemm(64, 4096, 128256) == plain.gemm(64, 4096, 128256)  # N above the table
    assert k.gemm(64, 4096, 4096, groups=8.0) == plain.gemm(64, 4096, 4096, groups=8.0)  # grouped
    assert k.fallbacks == 3
    k.gemm(4096, 4096, 4096)  # the same shape again: still one distinct fallback
    assert k.fallbacks == 3


def test_attention_from_table(tmp_path):
    _, k = _kernels(tmp_path)
    lo, body = k.decode(16.0, 16.0 * 1025)  # isl 1024 + step 1
    assert lo + body == pytest.approx((0.01 + 1e-6 * 16 * 1024) * 1e-3, rel=1e-12)
    # the memoized decode grid agrees with the table on its points
    assert k.decode_time(16, 16.0 * 1025.0) == pytest.approx((0.01 + 1e-6 * 16 * 1024) * 1e-3, rel=1e-3)
    lo, body = k.prefill(8 * 128.0, 8 * 128.0 * 129 / 2, 8.0)  # 8 prompts of 128 tokens, no prefix
    assert lo + body == pytest.approx(k._pre(8, 128.0), rel=1e-12)
    assert k._pre(4, 128.0) == pytest.approx((0.012 + 2e-8 * 4 * 128 ** 2) * 1e-3, rel=1e-12)
    n = k.fallbacks
    k.prefill(1024.0, 1024.0 * 4096, 1.0)  # a 1024-token chunk behind a 3.5k cached prefix: analytic
    k.decode(512.0, 512.0 * 100)  # batch 512 above the table
    assert k.fallbacks == n + 2


def test_scenario_table_mode_reports_once(tmp_path, caplog):
    from simllm.scenario import prepare, scenario_from_dict, simulate

    g = _layout(tmp_path)
    cfg = {"name": "table-mode", "model": "llama-3-8b", "hardware": {"accelerator": "h100-sxm"},
           "workload": {"trace": str(REPO / "traces" / "azure2023_conv_sample.csv"), "limit": 40},
           "cost": {"mode": "table", "tables": str(g)}, "seed": 0}
    with caplog.at_level(logging.WARNING, logger="simllm.cost.table_mode"):
        s = simulate(prepare(scenario_from_dict(cfg)))[2]
    rep = s["cost_table"]
    assert rep["tables"] == str(g.resolve()) and rep["lookups"] > 0 and rep["fallbacks"] > 0
    lines = [r for r in caplog.records if r.name == "simllm.cost.table_mode"]
    assert len(lines) == 1 and str(rep["fallbacks"]) in lines[0].getMessage()
    cfg.pop("cost")
    assert "cost_table" not in simulate(prepare(scenario_from_dict(cfg)))[2]


def test_calibration_file_table_mode(tmp_path):
    g = _layout(tmp_path)
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump({"device": "h100-sxm", "cost": {"mode": "table",
                                                                                      "tables": "h100_sxm"}}))
    cal = load_calibration(tmp_path / "cal.yaml")
    assert cal.cost["tables"] == str(g.resolve())
    cost = make_step_cost(load_model("llama-3-8b"), load_accelerator("h100-sxm"), calibration=cal)
    assert isinstance(cost.ops.k, TableKernels)


def _cli(argv, capsys):
    from simllm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("cost, field", [({"mode": "table", "tables": "no/such/folder"}, "cost.tables"),
                                         ({"mode": "table"}, "cost.tables"),
                                         ({"mode": "tables", "tables": "."}, "cost.mode")])
def test_bad_table_mode_one_line_exit_2(tmp_path, capsys, cost, field):
    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump({"model": "llama-3-8b", "hardware": {"accelerator": "h100-sxm"},
                                   "workload": {"trace": str(REPO / "traces" / "azure2023_conv_sample.csv"),
                                                "limit": 5}, "cost": cost}))
    code, err = _cli(["run", str(scn)], capsys)
    assert code == 2 and "\n" not in err and str(scn) in err and field in err, err


def test_tables_of_another_gpu_refused(tmp_path):
    g = _layout(tmp_path)
    l40 = g.rename(tmp_path / "l40s")
    spec = cost_spec({"mode": "table", "tables": str(l40)}, None)
    acc = load_accelerator("h100-sxm")
    with pytest.raises(InputError, match="not on --hw h100-sxm"):
        make_step_cost(load_model("llama-3-8b"), acc, calibration=with_table_mode(calibration_for(acc), spec))
