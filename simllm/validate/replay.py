"""Build a measured run's scenario, simulate it, and compare what the client measured.

The simulated client view follows the client: TTFT = first token - send, E2E = last token - send;
TPOT = (last - first) / (k N - 1) and ITL the mean gap between the client's token timestamps,
where k is how many timestamps the client records per streamed token: inference-perf versions that
re-tokenise every streamed chunk with special tokens count two per one-token chunk (BOS + token,
its issue #564). k is read from the run itself, ((E2E - TTFT) / TPOT + 1) / N rounded to 1 or 2.
The client's timeout (inference-perf's ``request_timeout``, 300 s when its config gives none) is
simulated in the engine: a request unfinished then is aborted (the client disconnects; vLLM frees
its KV and drops it from its queues), and counts as failed, as inference-perf counts it.
``sustained``: fewer than 1% of the requests failed and completions reached 95% of the offered
rate (inference-perf's throughput: successes over first send to last success); ``saturated`` is
the same test failed by the simulated client view, or the engine's own saturation test.
``*_ape``: |simulated mean - measured mean| / measured mean.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from ..errors import InputError
from ..hardware import load_accelerator
from ..hf_import import import_hf_config
from ..policies.batching import vllm_server_defaults
from ..scenario import prepare, scenario_from_dict, simulate
from ..workload.inference_perf import (build_requests, chat_prompt_scale, chat_sessions, configured_output_mean,
                                       SlotPool, configured_prompt_mean, replay_per_request)
from ..workload.request import Request
from .measured import METRICS, SERVER_OPTIONS, Measured, MeasuredRun, read_run, with_server

VLLM_BLOCK_TOKENS = 16
"""vLLM's default KV block size (``--block-size`` 16 on CUDA); its prefix cache hashes every full block."""

API_OVERHEAD_S = 0.0055
"""Per-request time of vLLM's OpenAI-compatible front end that the engine's steps do not contain:
HTTP parsing, tokenization, the hand-off to the engine core and the streaming of the first chunk back
(the client sees every token this much later than the engine emits it, so TTFT and E2E grow by it and
TPOT / ITL do not). One constant for every run, model and TP degree, fitted on the five sustained runs of
../shared/data/e2e/ as the least-squares fit of the relative TTFT error with the overhead at 0
(``python benchmarks/e2e_validation.py --fit-overhead`` recomputes it: 18.2 ms on 2026-12-01 with a
synchronous scheduler; 5.5 ms on 2026-12-02 once the one-step delay of async scheduling is counted,
``ASYNC_SCHEDULING``, and decode attention paced by the longest context). A constant
shift of every arrival leaves the engine's own timeline unchanged, so adding it to what the client sees is
exact; the scenario carries it as ``deployment.api_overhead_s`` (the engine's requests table and summary
include it in TTFT and E2E, and the engine's abort deadline is the client timeout less it).
An assumption that it does not grow with the prompt: the sustained runs' residuals do not resolve that."""


ASYNC_SCHEDULING = True
"""vLLM V1's async scheduling, which the v0.15 servers of ../shared/data/e2e ran (the assumption is stated where the
option is defined, ``simllm.scenario.DeploymentSpec.async_scheduling``): the scheduler decides step k+1 while step k
runs, so a request that arrives (or a slot that frees) during step k is seen for step k+2, one step later than a
synchronous scheduler. The engine applies it (``deployment.async_scheduling``): every token of a request comes one
engine iteration later, the one that emitted its first token, in TTFT and E2E (TPOT and ITL unchanged); the
engine's own timeline is kept (assumption: one step of admission delay, 10-30 ms against seconds of residency,
does not change the batches; a request already queued is admitted at a later step anyway). ``validate`` sets the
option, so ``simllm run`` of the scenario it builds gives the same client view."""


HOST_STEP_S = 0.0
HOST_PER_SEQ_S = 0.0
"""Host time per engine step outside the GPU's (``simllm.cost.host_overhead``): scheduling, input
preparation, sampling bookkeeping, detokenization and streaming, per step and per sequence. vLLM V1
overlaps them with the GPU's step (it schedules the next step while one runs; the front end
detokenizes); ``benchmarks/e2e_validation.py --fit-overhead`` fits both on the sustained runs' time per
output token, and gets them about zero or negative (2026-12-02: 0.23 ms per step and -12 us per sequence;
one constant alone: -0.08 ms), so both are 0 here: a negative host time is not physical."""


def _model_ref(run: MeasuredRun, model: Optional[str], tmp: Path) -> str:
    if model:
        if model.endswith(".json") or Path(model).is_dir():
            desc = import_hf_config(model)
        else:
            return model
    elif run.model_config is not None:
        desc = import_hf_config(run.model_config, name=run.model.split("/")[-1].lower())
    else:
        raise InputError(f"no config.json for model {run.model!r} (in the run folder or model_configs/<name>/); "
                         f"give --model", file=run.path)
    p = tmp / "model.yaml"
    p.write_text(yaml.safe_dump(desc))
    return str(p)


def _timestamps_per_token(m: Measured, n_out: int) -> int:
    lat = m.latency
    try:
        k = ((lat["e2e"]["mean"] - lat["ttft"]["mean"]) / lat["tpot"]["mean"] + 1) / n_out
    except (TypeError, KeyError, ZeroDivisionError):
        return 1
    return 2 if k > 1.5 else 1


def _requests(run: MeasuredRun, seed: int):
    """(workload, stage of each request of the run's sequence, client timeout, output tokens per request for
    the timestamps-per-token test, offered rate of each stage). The workload is a request list or, for
    multi-turn chat, :class:`~simllm.workload.inference_perf.ChatSessions` (its ``sent`` maps the simulator's
    requests to the run's sequence)."""
    if run.kind == "inference-perf":
        load = run.load
        # offered rate of each stage (a concurrent stage has none: its load is its concurrency)
        rates = [None if s.concurrency else s.rate for s in load.stages]
        mml = run.server.get("max_model_len")
        if load.data_type not in ("shared_prefix", "random", "synthetic"):  # dataset-backed: measured requests
            reqs, stage = replay_per_request(load)  # sent as measured: the client's cap is in the send times
            return reqs, stage, load.timeout_s, max(1, round(float(np.mean([r.output_tokens for r in reqs])))), rates
        pm, om = run.summary.prompt_len_mean, run.summary.output_len_mean
        constant_out = load.output_dist is None
        out = scale_out = None
        if not load.ignore_eos:
            if constant_out:
                out = max(1, round(om or load.output_len))
            elif om:
                scale_out = om / configured_output_mean(load, seed=seed)
        if load.multi_turn:
            scale = chat_prompt_scale(load, pm, seed=seed, output_len=out, output_scale=scale_out,
                                      max_model_len=mml) if pm else 1.0
            ses, stage = chat_sessions(load, seed=seed, prompt_scale=scale, output_len=out, output_scale=scale_out,
                                       unit_tokens=VLLM_BLOCK_TOKENS, max_model_len=mml)
            n_out = max(1, round(om)) if om else max(1, load.output_len)
            return ses, stage, load.timeout_s, n_out, rates
        scale = (pm / configured_prompt_mean(load, seed=seed)) if pm else 1.0
        reqs, stage = build_requests(load, seed=seed, prompt_scale=scale, output_len=out, output_scale=scale_out,
                                     unit_tokens=VLLM_BLOCK_TOKENS, max_model_len=mml)
        if constant_out:
            n_out = reqs[0].output_tokens if reqs else 1
        else:
            n_out = max(1, round(om)) if om else max(1, round(float(np.mean([r.output_tokens for r in reqs]))))
        if load.max_in_flight is not None and load.max_in_flight < len(reqs):  # the client's slots bind
            reqs = SlotPool(reqs, load.max_in_flight)
        return reqs, stage, load.timeout_s, n_out, rates
    d = run.load
    n = d["num_prompts"]
    rng = np.random.default_rng(seed)
    rate = d["request_rate"]
    if rate == "inf":
        arr = np.zeros(n)
    else:
        shape = d["burstiness"]
        arr = np.cumsum(rng.gamma(shape, 1.0 / (float(rate) * shape), n))
    il, ol = d["input_lens"], d["output_lens"]
    pm = max(1, round(run.summary.prompt_len_mean or 1))
    om = max(1, round(run.summary.output_len_mean or 1))
    reqs = [Request(i, float(arr[i]), int(il[i]) if il else pm, max(1, int(ol[i])) if ol else om) for i in range(n)]
    if d["max_concurrency"] and d["max_concurrency"] < n:
        # vllm bench's --max-concurrency: a semaphore of that many slots; a request scheduled at its
        # (Poisson / gamma, or all-at-once) time is sent once a slot is free, as inference-perf's workers do
        reqs = SlotPool(reqs, int(d["max_concurrency"]))
    return reqs, np.zeros(n, dtype=int), float("inf"), om, [None if rate == "inf" else float(rate)]


def _stats(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}


def _client_view(req, stage: np.ndarray, timeout: float, k: int, n_stages: int) -> list[dict]:
    arr = req["arrival_s"].to_numpy()
    # the client's times: the engine's plus the front end's (api_overhead_s) and async scheduling's iteration
    ft = arr + req["ttft_s"].to_numpy()
    done = arr + req["e2e_s"].to_numpy()
    n = req["output_tokens"].to_numpy().astype(float)
    e2e = done - arr
    ok = np.isfinite(e2e) & (e2e <= timeout)  # aborted requests (server side, at the timeout) have no completion
    gaps = np.maximum(k * n - 1, 1)
    tpot = (done - ft) / gaps
    out = []
    for s in list(range(n_stages)) + [None]:
        sel = ok if s is None else ok & (stage == s)
        tot = len(arr) if s is None else int((stage == s).sum())
        # inference-perf's throughput: successes over first send to last success (of the stage)
        pool = arr if s is None else arr[stage == s]
        first = pool.min() if len(pool) else 0.0  # a stage of no request (rate x duration < 1) has no figures
        span = float(done[sel].max() - first) if sel.any() else None
        itl = float(((done - ft)[sel]).sum() / gaps[sel].sum()) if sel.any() else None
        d = {"count": tot, "failed": tot - int(sel.sum()),
             "ttft": _stats((ft - arr)[sel]), "tpot": _stats(tpot[sel]), "e2e": _stats(e2e[sel]),
             "itl": {"mean": itl, "p50": None, "p90": None, "p99": None},
             "requests_per_s": float(sel.sum() / span) if span else None}
        out.append(d)
    return out


def _mean_batch(steps) -> Optional[float]:
    """Sequences per step, weighted by step time (what a per-sequence host time scales with)."""
    d = steps["duration_s"].to_numpy()
    return float((steps["batch_size"].to_numpy() * d).sum() / d.sum()) if len(d) and d.sum() > 0 else None


def _kept_up(failed: int, count: int, requests_per_s: Optional[float], offered: Optional[float]) -> bool:
    """``sustained``: fewer than 1% of the requests failed and completions reached 95% of the offered rate."""
    return failed < 0.01 * count and (offered is None or (requests_per_s or 0.0) >= 0.95 * offered)


def _ape(sim, meas) -> Optional[float]:
    if sim is None or meas is None or not meas:
        return None
    return abs(sim - meas) / meas


def simulate_run(run: MeasuredRun, *, hw: str = "h100-sxm", model: Optional[str] = None, seed: int = 0,
                 api_overhead_s: float = API_OVERHEAD_S, host_step_s: float = HOST_STEP_S,
                 host_per_seq_s: float = HOST_PER_SEQ_S, stage_drain: bool = False) -> dict:
    """Simulate a measured run's load on its server: the engine's requests / steps tables and summary, the
    workload, the stage of every simulated request (the tables' order), the client timeout, the output tokens
    per request and offered rate of each stage.

    ``stage_drain`` (off by default; the figures of README are without it): start each stage as inference-perf's
    multi-process load generator does, once every request of the previous stage has ended, ``load.interval``
    + 1 s later (its ``run_stage`` waits for them, then schedules from one second on); the stages are simulated
    one after another, each with those before it, to find when the previous one ended. Request lists only."""
    reqs, stage, timeout, n_out, rates = _requests(run, seed)
    with tempfile.TemporaryDirectory() as tmp:
        mref = _model_ref(run, model, Path(tmp))
        acc = load_accelerator(hw)
        defaults = vllm_server_defaults(acc.hbm_bytes, acc.name)
        batching = {"policy": "vllm",
                    "max_num_batched_tokens": run.server.get("max_num_batched_tokens") or defaults["max_num_batched_tokens"],
                    "max_num_seqs": run.server.get("max_num_seqs") or defaults["max_num_seqs"]}
        scn = scenario_from_dict({
            "name": run.name, "model": mref, "hardware": {"accelerator": hw},
            "deployment": {"tp": run.tp or 1, "batching": batching, "max_model_len": run.server.get("max_model_len"),
                           "cuda_graphs": "auto",  # vLLM's default: graphs of its default capture sizes
                           "api_overhead_s": api_overhead_s, "async_scheduling": ASYNC_SCHEDULING,
                           "host_step_s": host_step_s, "host_per_seq_s": host_per_seq_s,
                           "kv": {"gpu_memory_utilization": 0.9, "watermark": 0.0, "prefix_caching": True,
                                  "block_size": VLLM_BLOCK_TOKENS, "prefix_unit_tokens": VLLM_BLOCK_TOKENS}},
            "workload": {"generator": {"num_requests": 1, "arrivals": {"rate": 1.0}},
                         "request_timeout_s": timeout if math.isfinite(timeout) else None},
            "sim": {"record_breakdown": False}, "seed": seed}, file=run.path)
        prep = prepare(scn, file=run.path)
        if stage_drain and run.kind == "inference-perf" and isinstance(reqs, list) and len(run.load.stages) > 1:
            reqs = _drained(prep, reqs, np.asarray(stage), run.load, timeout)
        prep.workload = reqs
        req, steps, summary = simulate(prep)
    if hasattr(reqs, "sent"):  # multi-turn: the simulator numbers requests in the order it sent them
        stage = np.asarray(stage)[np.asarray(reqs.sent, dtype=int)] if len(reqs.sent) else np.zeros(0, dtype=int)
    return {"requests": req, "steps": steps, "summary": summary, "workload": reqs, "stage": stage,
            "timeout": timeout, "n_out": n_out, "rates": rates}


def _drained(prep, reqs: list, stage: np.ndarray, load, timeout: float) -> list:
    """``reqs`` with each stage after the first moved to start ``load.interval_s`` + 1 s after the client saw the
    last request of the previous stage end (completed, aborted at the timeout, or refused)."""
    import dataclasses

    starts = np.concatenate([[0.0], np.cumsum([s.duration_s for s in load.stages])])
    for k in range(len(load.stages) - 1):
        upto = [r for r, s in zip(reqs, stage) if s <= k]
        if not upto or not (stage == k).any():
            continue
        prep.workload = upto
        req, _steps, _summary = simulate(prep)
        arr = req["arrival_s"].to_numpy()
        end = arr + req["e2e_s"].to_numpy()
        end = np.where(np.isfinite(end), end, np.where(np.isfinite(req["aborted_s"].to_numpy()),
                                                       arr + timeout, arr))
        sel = stage[:len(upto)] == k
        new_start = float(end[sel].max()) + load.interval_s + 1.0
        shift = new_start - starts[k + 1]
        if shift > 0:
            reqs = [dataclasses.replace(r, arrival_s=r.arrival_s + shift) if s > k else r
                    for r, s in zip(reqs, stage)]
            starts[k + 1:] += shift
    return reqs


def validate_run(path: str | Path, *, hw: str = "h100-sxm", model: Optional[str] = None, seed: int = 0,
                 api_overhead_s: float = API_OVERHEAD_S, host_step_s: float = HOST_STEP_S,
                 host_per_seq_s: float = HOST_PER_SEQ_S, stage_drain: bool = False,
                 server: Optional[dict] = None) -> dict:
    """Replay one measured run; the per-run record of ``simllm validate --json``. ``server``: settings the
    run's files may not record (``tp``, ``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``;
    :func:`~simllm.validate.measured.with_server`); ``assumptions`` lists what was assumed instead."""
    run = with_server(read_run(path), **(server or {}))
    assumptions = []
    if run.tp is None:
        assumptions.append("tensor parallelism not recorded in the run's files: 1 (give --tp)")
    if run.kind == "vllm-bench":
        for key, opt in SERVER_OPTIONS.items():
            if key != "tp" and run.server.get(key) is None:
                assumptions.append(f"{key} not recorded in the run's files: vLLM's online-server default "
                                   f"(give {opt})")
    sim = simulate_run(run, hw=hw, model=model, seed=seed, api_overhead_s=api_overhead_s, host_step_s=host_step_s,
                       host_per_seq_s=host_per_seq_s, stage_drain=stage_drain)
    req, steps, summary, stage = sim["requests"], sim["steps"], sim["summary"], sim["stage"]
    timeout, n_out, rates = sim["timeout"], sim["n_out"], sim["rates"]
    k = _timestamps_per_token(run.summary, n_out)
    if run.kind == "inference-perf":
        durations = [s.duration_s for s in run.load.stages]
    else:
        durations = [float(np.nanmax(req["completion_s"].to_numpy()))]
    sims = _client_view(req, stage, timeout, k, len(durations))
    meas = run.stages + [run.summary] if run.stages else [run.summary]
    if not run.stages:
        sims = sims[-1:]
    m = run.summary
    offered = sum(r * d for r, d in zip(rates, durations) if r) / sum(durations) if rates[0] else None
    sustained = _kept_up(m.failed, m.count, m.requests_per_s, offered)
    ssum = sims[-1]
    rec = {"run": run.name, "kind": run.kind, "model": run.model, "tp": run.tp or 1, "hw": hw,
           "sustained": bool(sustained),
           # the same test on the simulated client view, or the engine's own saturation test
           "saturated": bool(summary.get("saturated"))
           or not _kept_up(ssum["failed"], ssum["count"], ssum["requests_per_s"], offered),
           "aborted_simulated": int(summary.get("aborted", 0)),
           "failed_measured": m.failed / m.count if m.count else 0.0,
           "failed_simulated": ssum["failed"] / ssum["count"] if ssum["count"] else 0.0,
           "timestamps_per_token": k, "api_overhead_s": api_overhead_s,
           "mean_batch": _mean_batch(steps), "assumptions": assumptions}
    for met in METRICS:
        mm = (m.latency.get(met) or {}).get("mean")
        rec[f"{met}_ape"] = _ape(ssum[met]["mean"], mm)
    stages = []
    for i, (s, me) in enumerate(zip(sims, meas)):
        if me is None:
            continue
        row = {"stage": "all" if i == len(sims) - 1 else i, "measured": {}, "simulated": {}}
        for met in METRICS:
            row["measured"][met] = me.latency.get(met)
            row["simulated"][met] = s[met]
            row[f"{met}_ape"] = _ape(s[met]["mean"], (me.latency.get(met) or {}).get("mean"))
        row["measured"]["requests_per_s"] = me.requests_per_s
        row["simulated"]["requests_per_s"] = s["requests_per_s"]
        row["measured"]["failed"] = me.failed
        row["simulated"]["failed"] = s["failed"]
        stages.append(row)
    rec["stages"] = stages
    return rec


def _median(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(v) if v else None


def summarize_runs(records: list[dict]) -> dict:
    keys = [f"{m}_ape" for m in METRICS]
    sus = [r for r in records if r["sustained"]]
    return {"runs": records, "median": {k: _median(sus, k) for k in keys},
            "median_all": {k: _median(records, k) for k in keys}}
