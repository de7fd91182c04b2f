"""simllm validate: readers of measured runs, the inference-perf load, bad input (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from simllm.cli import main
from simllm.errors import InputError
from simllm.validate import read_run
from simllm.workload.inference_perf import arrivals, build_requests, read_config

E2E = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "e2e" / "vllm-h100-inference-perf"
RUN = E2E / "runs" / "20260217-155451-llama-2-7b-tp1-codegen"

needs_data = pytest.mark.skipif(not RUN.is_dir(), reason="../shared/data/e2e is absent")


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


@needs_data
def test_reads_inference_perf_run_as_measured():
    r = read_run(RUN)
    assert r.model == "meta-llama/Llama-2-7b-hf" and r.tp == 1 and r.server["max_num_batched_tokens"] == 2048
    assert r.summary.count == 9000 and r.summary.failed == 0 and len(r.stages) == 2
    assert r.stages[0].offered_rate == 5.0 and r.model_config is not None
    ld = r.load
    assert (ld.num_groups, ld.prompts_per_group, ld.system_prompt_len, ld.question_len) == (10, 10, 100, 466)
    assert ld.timeout_s == 300.0  # request_timeout: null -> inference-perf's default


@needs_data
def test_constant_stages_count_and_span_as_inference_perf():
    ld = read_config(RUN / "results" / "config.yaml")
    a, s = arrivals(ld, np.random.default_rng(0))
    assert (s == 0).sum() == 3000 and (s == 1).sum() == 6000  # int(rate * duration) per stage
    assert a[s == 0].max() == pytest.approx(600.0) and a[-1] == pytest.approx(1200.0)
    reqs, _ = build_requests(ld, seed=0)
    # request k sends prompt k % 100: the same prefix keys come back every 100 requests
    assert reqs[0].prefix_blocks == reqs[100].prefix_blocks and reqs[0].output_tokens == 247


@needs_data
def test_bad_run_folders_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "run"
    shutil.copytree(RUN, bad)
    (bad / "exp-config.yaml").unlink()
    code, cap = _run(["validate", str(bad)], capsys)
    assert code == 2 and "exp-config.yaml" in cap.err and len(cap.err.strip().splitlines()) == 1
    shutil.copytree(RUN, tmp_path / "r2")
    cfg = tmp_path / "r2" / "results" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("type: shared_prefix", "type: sharegpt"))
    code, cap = _run(["validate", str(tmp_path / "r2")], capsys)
    assert code == 2 and "data.type" in cap.err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    code, cap = _run(["validate", str(other)], capsys)
    assert code == 2 and "vllm bench" in cap.err


def test_vllm_bench_reader(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"num_prompts": 10, "completed": 9, "request_rate": 2.0, "burstiness": 1.0,
                             "max_concurrency": None, "mean_ttft_ms": 50.0, "median_ttft_ms": 40.0, "p99_ttft_ms": 90.0,
                             "mean_tpot_ms": 10.0, "mean_itl_ms": 10.0, "mean_e2el_ms": 1000.0,
                             "total_input_tokens": 900, "total_output_tokens": 450, "model_id": "x/y"}))
    r = read_run(p)
    assert r.kind == "vllm-bench" and r.summary.failed == 1
    assert r.summary.latency["ttft"]["mean"] == pytest.approx(0.05) and r.summary.prompt_len_mean == 100
    with pytest.raises(InputError):
        read_run(tmp_path / "missing")


def _llama4_cfg(tmp_path, experts, step, quant=None):
    # Llama-4 Scout / Maverick text_config values as published in their config.json
    text = {"hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
            "head_dim": 128, "intermediate_size": 8192, "intermediate_size_mlp": 16384, "num_local_experts": experts,
            "num_experts_per_tok": 1, "interleave_moe_layer_step": step, "vocab_size": 202048,
            "max_position_embeddings": 10485760, "hidden_act": "silu", "torch_dtype": "bfloat16"}
    d = {"architectures": ["Llama4ForConditionalGeneration"], "text_config": text}
    if quant:
        d["quantization_config"] = quant
    p = tmp_path / f"l4-{experts}" / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(d))
    return p


def test_llama4_import_params_near_published(tmp_path):
    from simllm.config import validate
    from simllm.hf_import import import_hf_config
    from simllm.model import ModelSpec

    scout = validate(ModelSpec, import_hf_config(_llama4_cfg(tmp_path, 16, 1)))
    # Meta: Scout 109B total / 17B active, Maverick 400B total / 17B active (text + vision; vision ~1B)
    assert scout.total_params == pytest.approx(108e9, rel=0.03) and scout.active_params == pytest.approx(17e9, rel=0.06)
    mav = validate(ModelSpec, import_hf_config(_llama4_cfg(tmp_path, 128, 2, {"quant_method": "fp8"})))
    assert mav.num_moe_layers == 24 and not mav.is_moe_layer(0) and mav.is_moe_layer(1)
    assert mav.total_params == pytest.approx(400e9, rel=0.03) and mav.dtype == "fp8"
    with pytest.raises(InputError, match="quant_method"):
        import_hf_config(_llama4_cfg(tmp_path, 8, 1, {"quant_method": "gptq"}))


def test_poisson_stage_as_inference_perf_timer():
    """PoissonLoadTimer: a Poisson count per second, each second's arrivals spread to end exactly at its end."""
    from simllm.workload.inference_perf import InferencePerfLoad, Stage

    ld = InferencePerfLoad(10, 10, 100, 400, 200, False, "poisson", (Stage(5.0, 200.0),), 300.0, True, True)
    a, s = arrivals(ld, np.random.default_rng(2))
    assert abs(len(a) - 1000) < 4 * np.sqrt(1000) and (s == 0).all() and np.all(np.diff(a) > 0)
    sec = np.floor(a - 1e-9).astype(int)
    last = np.r_[sec[1:] != sec[:-1], True]
    np.testing.assert_allclose(a[last], sec[last] + 1.0)
    counts = np.bincount(sec, minlength=200)
    assert 0.5 < counts.var() / counts.mean() < 1.6  # Poisson: variance = mean


def _bench_json(tmp_path, **kw):
    n = kw.pop("n", 60)
    d = {"backend": "vllm", "model_id": "meta-llama/Meta-Llama-3-8B", "num_prompts": n, "completed": n,
         "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 4, "mean_ttft_ms": 50.0,
         "median_ttft_ms": 45.0, "p99_ttft_ms": 90.0, "mean_tpot_ms": 8.0, "mean_itl_ms": 8.0,
         "mean_e2el_ms": 1500.0, "total_input_tokens": 512 * n, "total_output_tokens": 200 * n,
         "input_lens": [512] * n, "output_lens": [200] * n}
    d.update(kw)
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(d))
    return p


def test_vllm_bench_max_concurrency_is_a_closed_loop(tmp_path):
    """vllm bench --max-concurrency N: N slots, each request sent once one is free. With every request
    queued at t=0 the slots never idle, so Little's law holds: throughput x mean latency = N."""
    from simllm.validate import validate_run
    from simllm.validate.replay import simulate_run
    from simllm.validate.measured import with_server

    p = _bench_json(tmp_path)
    run = with_server(read_run(p), tp=1)
    sim = simulate_run(run, model="llama-3-8b")
    req = sim["requests"]
    e2e = req["e2e_s"].to_numpy()
    arr = req["arrival_s"].to_numpy()
    done = arr + e2e
    assert len(req) == 60 and np.isfinite(e2e).all()
    # at most 4 in flight at any time: at each send, fewer than 4 earlier requests are still running
    for a in arr:
        assert ((arr < a) & (done > a + 1e-9)).sum() <= 3
    thr = len(req) / done.max()
    assert thr * e2e.mean() == pytest.approx(4, rel=0.08)
    rec = validate_run(p, model="llama-3-8b")
    assert any("tensor parallelism" in a for a in rec["assumptions"]) and rec["tp"] == 1


def test_vllm_bench_server_options(tmp_path):
    from simllm.validate import validate_run

    p = _bench_json(tmp_path, n=20, max_concurrency=None, request_rate=5.0, tensor_parallel_size=2)
    with pytest.raises(InputError, match="contradicts"):
        validate_run(p, model="llama-3-8b", server={"tp": 4})
    rec = validate_run(p, model="llama-3-8b", server={"tp": 2, "max_num_seqs": 8})
    assert rec["tp"] == 2 and not any("tensor" in a for a in rec["assumptions"])
    assert any("max_num_batched_tokens" in a for a in rec["assumptions"])
    assert rec["mean_batch"] <= 8
    bad = _bench_json(tmp_path, max_concurrency=0)
    with pytest.raises(InputError, match="max_concurrency"):
        read_run(bad)


def test_vllm_bench_infinite_rate_spellings(tmp_path):
    """vllm bench writes "inf"; a result re-dumped by Python's json writes Infinity: both are the
    all-at-once load (no offered rate), a zero or negative rate is an error naming the field."""
    p = tmp_path / "b.json"
    base = {"num_prompts": 4, "completed": 4, "burstiness": 1.0, "max_concurrency": None, "mean_ttft_ms": 50.0,
            "mean_tpot_ms": 10.0, "mean_itl_ms": 10.0, "total_input_tokens": 400, "total_output_tokens": 40}
    for rate in ("inf", float("inf")):
        p.write_text(json.dumps({**base, "request_rate": rate}))
        r = read_run(p)
        assert r.load["request_rate"] == "inf" and r.summary.offered_rate is None
    p.write_text(json.dumps({**base, "request_rate": 0}))
    with pytest.raises(InputError, match="request_rate|request rate"):
        read_run(p)
