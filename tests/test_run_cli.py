"""``simllm run``: outputs, determinism, overrides and errors (with a stand-in cost model)."""

import json
from pathlib import Path

import pytest

import simllm.cost
from simllm.cli import main
from simllm.sim.fakes import AffineCost

REPO = Path(__file__).resolve().parent.parent
SCN = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"


def _fake_factory(model, accelerator, *, tp=1, pp=1, node=None, weight_dtype="bf16", kv_dtype="bf16",
                  act_dtype="bf16", framework="vllm"):
    return AffineCost(weight_bytes_per_device=16e9 / (tp * pp), kv_bytes_per_token_per_device=131072.0 / (tp * pp))


@pytest.fixture
def fake_cost(monkeypatch):
    monkeypatch.setattr(simllm.cost, "make_step_cost", _fake_factory, raising=False)


def _run(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


def test_run_writes_identical_files_for_the_same_seed(tmp_path, fake_cost, capsys):
    sets = ["--set", "workload.limit=400", "--set", "workload.rate_scale=1"]
    assert _run(["run", str(SCN), "--out", str(tmp_path / "a"), *sets]) == 0
    assert _run(["run", str(SCN), "--out", str(tmp_path / "b"), *sets]) == 0
    for f in ("requests.csv", "steps.csv", "summary.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["num_requests"] == 400 and s["completed"] + s["rejected"] == 400
    assert s["ttft_s"]["p99"] >= s["ttft_s"]["p50"] > 0
    assert s["cost_per_million_output_tokens_usd"] > 0 and s["energy_per_output_token_j"] > 0
    assert s["saturated"] is False
    out = capsys.readouterr().out
    assert "TTFT" in out and "goodput" in out
    # stepping one iteration at a time writes the same per-request table
    assert _run(["run", str(SCN), "--out", str(tmp_path / "c"), *sets, "--set", "sim.jump=false"]) == 0
    assert (tmp_path / "a" / "requests.csv").read_bytes() == (tmp_path / "c" / "requests.csv").read_bytes()


def test_run_flags_saturation(tmp_path, fake_cost, capsys):
    code = _run(["run", str(SCN), "--json", "--set", "workload.limit=1500", "--set", "workload.rate_scale=40",
                 "--set", "deployment.batching.max_num_seqs=8"])
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["saturated"] is True


def test_bad_override_names_file_and_field(fake_cost, capsys):
    assert _run(["run", str(SCN), "--set", "deployment.batching.policy=fifo"]) == 2
    err = capsys.readouterr().err
    assert "llama3-8b-h100-azure-conv.yaml" in err and "deployment.batching" in err and "vllm" in err
    assert _run(["run", str(SCN), "--set", "deployment.kv.block_size=-1"]) == 2
    assert "deployment.kv.block_size" in capsys.readouterr().err
    assert _run(["run", str(SCN), "--set", "nonsense"]) == 2


def test_shipped_scenarios_validate():
    from simllm.scenario import load_scenario

    files = sorted((REPO / "workloads" / "scenarios").glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        load_scenario(f)


def test_tp_must_shard_heads(tmp_path):
    """tp=3 cannot split Llama-3-8B's 32 heads: exit 2 naming the scenario file and deployment.tp."""
    import subprocess
    import sys

    scn = Path(__file__).resolve().parent.parent / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"
    r = subprocess.run([sys.executable, "-m", "simllm.cli", "run", str(scn), "--set", "deployment.tp=3",
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "deployment.tp" in line and "llama3-8b-h100-azure-conv.yaml" in line


def test_every_shipped_accelerator_runs_or_says_why():
    """Each accelerator descriptor works end to end: a small run completes, or the scenario is refused
    with an InputError (e.g. the weights do not fit); energy is null (with a note) where no TDP is known."""
    from simllm.errors import InputError
    from simllm.hardware import list_hardware, load_accelerator
    from simllm.scenario import prepare, scenario_from_dict, simulate

    ran = 0
    for name in list_hardware()["accelerators"]:
        cfg = {"name": f"smoke-{name}", "model": "llama-3-8b", "hardware": {"accelerator": name},
               "workload": {"trace": "traces/azure2023_conv_sample.csv", "limit": 30}, "seed": 0}
        try:
            summary = simulate(prepare(scenario_from_dict(cfg)))[2]
        except InputError:
            continue
        ran += 1
        assert summary["completed"] + summary["rejected"] == 30
        if load_accelerator(name).tdp is None:
            assert summary["energy_j"] is None and summary["energy_note"]
    assert ran >= 8
