"""Reports from a real run: Perfetto trace well-formed, plots and HTML written, Pareto front correct."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simllm.cli import main
from simllm.report.plots import pareto_front

REPO = Path(__file__).resolve().parent.parent
SCN = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"


def _run(args):
    with pytest.raises(SystemExit) as ei:
        main(args)
    return ei.value.code


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _run(["run", str(SCN), "--set", "workload.limit=200", "--out", str(out), "--no-progress",
                 "--trace-out", str(out / "trace.json")]) == 0
    return out


def test_perfetto_trace_well_formed(run_dir):
    ev = json.loads((run_dir / "trace.json").read_text())["traceEvents"]
    steps = pd.read_csv(run_dir / "steps.csv")
    spans = [e for e in ev if e["ph"] == "X"]
    assert len(spans) == len(steps)
    # span durations are the steps' durations (microseconds)
    assert sum(e["dur"] for e in spans) == pytest.approx(steps.duration_s.sum() * 1e6, rel=1e-9)
    # every async begin has its end, and ends never precede begins
    begins = {(e["id"], e["name"]): e["ts"] for e in ev if e["ph"] == "b"}
    ends = {(e["id"], e["name"]): e["ts"] for e in ev if e["ph"] == "e"}
    assert begins.keys() == ends.keys() and all(ends[k] > begins[k] for k in begins)
    assert Counter(e["name"] for e in ev if e["ph"] == "b")["decode"] > 0


def test_run_report(run_dir):
    assert _run(["report", str(run_dir)]) == 0
    for name in ("index.html", "utilization_over_time.png", "batch_size_hist.svg"):
        assert (run_dir / "report" / name).exists()


def test_report_rejects_unknown_folder(tmp_path):
    assert _run(["report", str(tmp_path)]) == 2


def test_pareto_front_is_non_dominated():
    rng = np.random.default_rng(0)
    x, y = rng.random(200), rng.random(200)
    f = set(pareto_front(x, y).tolist())
    for i in range(200):
        dominated = np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i])))
        assert (i in f) == (not dominated)


def test_moe_run_writes_loads_and_heatmaps(tmp_path):
    scn = REPO / "workloads" / "scenarios" / "deepseek-v3-h800-ep32.yaml"
    out = tmp_path / "ds"
    assert _run(["run", str(scn), "--set", "workload.limit=40", "--out", str(out), "--no-progress", "--json"]) == 0
    el, dl = pd.read_csv(out / "expert_loads.csv"), pd.read_csv(out / "device_loads.csv")
    # every expert token lands on some device: per-layer totals agree
    np.testing.assert_allclose(el.groupby("layer").tokens.sum(), dl.groupby("layer").tokens.sum(), rtol=1e-5)
    assert dl.device.nunique() == 32
    assert _run(["report", str(out)]) == 0
    assert (out / "report" / "expert_load_heatmap.png").exists() and (out / "report" / "device_load_heatmap.png").exists()


def test_disaggregated_moe_run_writes_loads_per_pool(tmp_path):
    """A prefill/decode scenario with expert parallelism in both pools writes each pool's loads (the prefill pool
    the prompts' tokens x top-k, the decode pool the generated ones'), and the report draws a heatmap per pool."""
    scn = REPO / "workloads" / "scenarios" / "deepseek-r1-cloudmatrix384-pd.yaml"
    out = tmp_path / "cm"
    assert _run(["run", str(scn), "--set", "workload.generator.num_requests=60", "--out", str(out), "--no-progress",
                 "--json"]) == 0
    el, dl = pd.read_csv(out / "expert_loads.csv"), pd.read_csv(out / "device_loads.csv")
    req = pd.read_csv(out / "requests.csv")
    assert set(dl["pool"]) == {"prefill", "decode"}
    assert dl[dl.pool == "prefill"].device.nunique() == 32 and dl[dl.pool == "decode"].device.nunique() == 320
    for pool, g in el.groupby("pool"):
        np.testing.assert_allclose(g.groupby("layer").tokens.sum(),
                                   dl[dl.pool == pool].groupby("layer").tokens.sum(), rtol=1e-5)
    per_layer = el.groupby(["pool", "layer"]).tokens.sum().groupby("pool").mean()
    gen = req["generated_tokens"].sum() if "generated_tokens" in req else req["output_tokens"].sum()
    np.testing.assert_allclose(per_layer["prefill"], req["prompt_tokens"].sum() * 8, rtol=1e-5)
    np.testing.assert_allclose(per_layer["decode"], gen * 8, rtol=1e-5)
    assert _run(["report", str(out)]) == 0
    for pool in ("prefill", "decode"):
        assert (out / "report" / f"device_load_heatmap_{pool}.png").exists()


def test_pd_summary_gives_each_replica_its_kv_capacity(tmp_path):
    """Pools of different KV sizes: the summary names each replica's capacity (the report's KV% per replica reads
    it; with the first pool's for every replica the decode replica of the CloudMatrix scenario read 24x its use)."""
    import json

    scn = REPO / "workloads" / "scenarios" / "deepseek-r1-cloudmatrix384-pd.yaml"
    out = tmp_path / "cm"
    assert _run(["run", str(scn), "--set", "workload.generator.num_requests=40", "--out", str(out), "--no-progress",
                 "--json"]) == 0
    s = json.loads((out / "summary.json").read_text())
    caps = {int(k): v for k, v in s["kv_capacity_blocks"].items()}
    steps = pd.read_csv(out / "steps.csv")
    pools = steps.groupby("replica")["pool"].first()
    assert set(caps) == set(pools.index)
    assert caps[int(pools[pools == "decode"].index[0])] > 10 * caps[int(pools[pools == "prefill"].index[0])]
    assert (steps.kv_blocks_used <= steps.replica.map(caps)).all()
