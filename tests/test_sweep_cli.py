"""End-to-end `simllm sweep` on shipped data: real simulations, small sizes."""

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from simllm.cli import main

REPO = Path(__file__).resolve().parent.parent


def _write_sweep(tmp_path: Path, extra: str = "") -> Path:
    base = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(f"""
        base: {base}
        grid:
          hardware.accelerator: [h100-sxm, a100-sxm-80gb]
          workload.retime: [{{process: poisson, rate: 2}}, {{process: poisson, rate: 6}}]
        points:
          - {{workload.trace: no-such-trace.csv}}
        {extra}
    """))
    # keep each point small
    text = p.read_text().replace("grid:", "grid:\n  workload.limit: [150]", 1)
    p.write_text(text)
    return p


def _run(args):
    with pytest.raises(SystemExit) as ei:
        main(args)
    return ei.value.code


def test_sweep_validates_every_point_before_running(tmp_path, capsys):
    sw = _write_sweep(tmp_path)
    sw.write_text(sw.read_text().replace("workload.trace: no-such-trace.csv", "hardware.accelerator: no-such-gpu"))
    out = tmp_path / "out"
    assert _run(["sweep", str(sw), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "point 5 of 5" in err and "no-such-gpu" in err and str(sw) in err
    assert not (out / "results.jsonl").exists()  # nothing ran


def test_sweep_runs_records_failure_and_reports(tmp_path, capsys):
    sw = _write_sweep(tmp_path)
    out = tmp_path / "out"
    assert _run(["sweep", str(sw), "--out", str(out), "--jobs", "2", "--no-progress"]) == 1  # one point failed
    assert "1 of 5 points failed" in capsys.readouterr().err
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 5
    bad = df[df.status == "failed"]
    assert len(bad) == 1 and "no-such-trace" in bad.error.iloc[0]
    good = df[df.status == "ok"]
    assert (good.completed == 150).all()
    # units in column names, one row per point, swept fields as columns
    for c in ("param.hardware.accelerator", "param.workload.retime.rate", "ttft_s.p99", "tpot_s.p50",
              "request_throughput_per_s", "config_hash", "wall_s"):
        assert c in df.columns, c
    # H100 is faster than A100 at the same rate: lower p50 TTFT
    g = good.set_index(["param.hardware.accelerator", "param.workload.retime.rate"])["ttft_s.p50"]
    assert g[("h100-sxm", 2)] < g[("a100-sxm-80gb", 2)]
    for name in ("index.html", "latency_vs_rate.png", "latency_vs_rate.svg", "slo_attainment_vs_rate.png"):
        assert (out / "report" / name).exists(), name
    # rerun: nothing new runs, nothing duplicated (the recorded failure still counts)
    assert _run(["sweep", str(sw), "--out", str(out), "--no-progress", "--no-report"]) == 1
    assert len(pd.read_csv(out / "results.csv")) == 5
    assert len((out / "results.jsonl").read_text().splitlines()) == 5


def test_ray_backend_matches_local(tmp_path):
    pytest.importorskip("ray")
    from simllm.sweep import load_sweep, run_items, scenario_runner

    sw = load_sweep(_write_sweep(tmp_path))
    items = sw.expand()[:2]
    fn = scenario_runner(sw.base_dir)
    local = run_items(items, fn, tmp_path / "local", jobs=1, progress=False)
    ray_df = run_items(items, fn, tmp_path / "ray", jobs=2, backend="ray", progress=False)
    cols = [c for c in local.columns if c != "wall_s"]
    a = local[cols].sort_values("config_hash").reset_index(drop=True)
    b = ray_df[cols].sort_values("config_hash").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_find_max_rate_cli(tmp_path):
    """Capacity search: the H100 sustains a higher SLO-meeting rate than the A100 for the same model."""
    base = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"
    p = tmp_path / "cap.yaml"
    p.write_text(textwrap.dedent(f"""
        base: {base}
        grid:
          hardware.accelerator: [h100-sxm, a100-sxm-80gb]
          workload.limit: [120]
          workload.retime: [{{process: poisson, rate: 1.0}}]
        find_max_rate: {{field: workload.retime.rate, lo: 0.5, hi: 64, attainment: 0.9}}
    """))
    out = tmp_path / "out"
    assert _run(["sweep", str(p), "--out", str(out), "--no-progress", "--no-report"]) == 0
    df = pd.read_csv(out / "results.csv").set_index("param.hardware.accelerator")
    assert (df.status == "ok").all()
    h100, a100 = df.loc["h100-sxm", "max_rate_rps"], df.loc["a100-sxm-80gb", "max_rate_rps"]
    assert 0.5 <= a100 < h100 <= 64
    # at the reported rate the target holds
    assert (df.slo_attainment >= 0.9).all()
