"""Simulator speed: simulated requests per wall-clock second.

Llama-3-70B, 4 replicas of TP4 on H100 SXM, 50,000 requests resampled from the Azure 2023
conversation trace (the empirical joint distribution of prompt and output lengths, and of the
inter-arrival gaps), time-scaled so that the cluster runs at about 80% of its capacity
(capacity measured first: one replica's throughput on a saturated batch of the same requests).

    python benchmarks/sim_speed.py                 # jumping (default)
    python benchmarks/sim_speed.py --no-jump       # one SimPy event per iteration (before)
    python benchmarks/sim_speed.py --requests 5000 --profile

The last line printed is JSON with ``requests_per_wall_s`` and ``simulated_s``. The wall time
counts the simulation itself (``Simulation`` construction and ``run``), not reading the trace
or the capacity probe. Uses ``simllm.cost.make_step_cost`` when it is available, otherwise a
small built-in roofline (said in the JSON as ``cost_model``).

Recorded 2026-12-02 (later) on the same machine, nearly idle (load 1.7), back to back: ``vllm`` 11,576-11,702
requests / wall s (median of 3: 11,604), ``--policy vllm-v0`` 16,851; that session's starting commit 5fcbd19 ran
6,599-6,736 (median 6,627) and 8,545 there, so 1.75x / 1.97x, with byte-identical outputs (the running set a dict
whose entries do not move while it decodes, with a heap of finishing steps and its aggregates kept incrementally;
short decode segments priced in plain floats through ``decode_step_times``; no policy call when nothing waits).

Earlier the same day, idle, back to back: ``vllm`` (vLLM's V1 scheduler:
every iteration with a prefill is a mixed chunked-prefill step) 5,690-5,930 requests / wall s (median of 3: 5,815),
``--policy vllm-v0`` 7,720; the session's starting commit ab2710e ran 4,130-4,240 (V1) there, so 1.43x, with
bit-identical outputs (GEMM and TP all-reduce seconds as tables over the step's token count, filled by the
vectorised kernels; the running sequences' KV blocks kept incrementally). The 15,000 figure of the issues was
measured on a faster machine; this one runs the same code ~3.2x slower. ``requests_per_cpu_s`` in the JSON
counts process CPU time, steadier than wall time on a shared machine.

2026-12-01: ``vllm`` 3,950-4,270; ``--policy vllm-v0`` 5,610-5,660 (5,470-5,630 before that session's engine refactor).

Earlier record (2 CPU cores shared with other jobs, Python 3.11, 2026-11-23; +-15% run to run):

==================  ==========  ================  ==========================================
cost model          mode        requests / wall s  notes
==================  ==========  ================  ==========================================
simllm.cost         jump        6,460 - 7,770     101,851 step rows for 153,190 iterations
simllm.cost         --no-jump   3,920             one row per iteration, same timestamps
simllm.cost         jump, old   2,040             before: step_cost per row, interrupts
builtin roofline    jump        7,900             (before skipping idle yields)
==================  ==========  ================  ==========================================

At this load (24 req/s on 4 replicas, about 1.5 iterations between arrivals on a replica) an
arrival ends nearly every decode jump (vLLM runs a prefill-only step for it), so rows scale
with requests: two per request. The rest of the wall time is SimPy dispatch, the cost model
pricing new prefill token counts, and the memoized per-row breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simllm.cost.interface import BatchShape, StepCost  # noqa: E402
from simllm.policies import make_batching, make_router  # noqa: E402
from simllm.sim import SimConfig, Simulation, kv_capacity_blocks  # noqa: E402
from simllm.workload import Request, read_trace  # noqa: E402

TRACES = [REPO.parent / "shared" / "data" / "traces" / "azure2023_conv.csv", REPO / "traces" / "azure2023_conv_sample.csv"]


class _Roofline:
    """Fallback: dense GQA transformer roofline (used only when simllm.cost has no factory yet)."""

    def __init__(self, params=70.6e9, layers=80, hidden=8192, kv_heads=8, head_dim=128, tp=4,
                 peak=989e12, bw=3.35e12, link_bw=450e9, mfu=0.6, mbu=0.8, overhead=2e-3):
        self.w = params * 2 / tp
        self.weight_bytes_per_device = self.w
        self.kv_bytes_per_token_per_device = layers * 2 * kv_heads * head_dim * 2 / tp
        self.flop_tok = 2 * params / tp
        self.attn = 4 * layers * (hidden / tp)  # flops per (query, key) pair per device
        self.peak, self.bw, self.mfu, self.mbu = peak * mfu, bw * mbu, mfu, mbu
        self.ar = 2 * layers * hidden * 2 * (tp - 1) / tp / link_bw  # per token: 2 all-reduces/layer, ring
        self.overhead = overhead

    def step_time(self, P, W, m, n, ctx):
        flops = self.flop_tok * (P + n) + self.attn * (W + ctx)
        byts = self.w + self.kv_bytes_per_token_per_device * (ctx + P)
        return np.maximum(flops / self.peak, byts / self.bw) + self.ar * (P + n) + self.overhead

    def step_cost(self, s: BatchShape) -> StepCost:
        t = float(self.step_time(s.prefill_tokens, s.prefill_attn_work, s.prefill_seqs, s.decode_seqs,
                                 s.decode_ctx_tokens))
        flops = self.flop_tok * (s.prefill_tokens + s.decode_seqs) + self.attn * (s.prefill_attn_work + s.decode_ctx_tokens)
        byts = self.w + self.kv_bytes_per_token_per_device * (s.decode_ctx_tokens + s.prefill_tokens)
        comm = self.ar * (s.prefill_tokens + s.decode_seqs)
        return StepCost(t, flops / self.peak, byts / self.bw, comm, self.overhead, flops, byts)


def make_cost(tp: int):
    try:
        from simllm.cost import make_step_cost
        from simllm.hardware import load_accelerator, load_node
        from simllm.model import load_model

        try:
            node = load_node("dgx-h100")
        except Exception:
            node = None
        return make_step_cost(load_model("llama-3-70b"), load_accelerator("h100-sxm"), tp=tp, node=node), "simllm.cost"
    except ImportError:
        return _Roofline(tp=tp), "builtin-roofline (simllm.cost.make_step_cost not available)"


def workload(n: int, seed: int):
    path = next((p for p in TRACES if p.is_file()), None)
    if path is None:
        raise SystemExit("no Azure conversation trace found")
    df = read_trace(path).df
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(df), n)
    prompt = df["prompt_tokens"].to_numpy()[rows]
    output = df["output_tokens"].to_numpy()[rows]
    gaps = np.diff(df["arrival_s"].to_numpy())
    g = gaps[rng.integers(0, len(gaps), n)]
    return path, prompt, output, g


def build(prompt, output, arrival):
    return [Request(i, float(arrival[i]), int(prompt[i]), int(output[i])) for i in range(len(prompt))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--tp", type=int, default=4)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-jump", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--policy", default="vllm", help="batching policy (vllm = V1 scheduler; vllm-v0 = the V0 one)")
    a = ap.parse_args()

    cost, cost_name = make_cost(a.tp)
    blocks = kv_capacity_blocks(device_memory_bytes=80e9, n_devices=a.tp, gpu_memory_utilization=0.9,
                                weight_bytes_per_device=float(cost.weight_bytes_per_device),
                                activation_reserve_bytes=0.02 * 80e9,
                                kv_bytes_per_token_per_device=float(cost.kv_bytes_per_token_per_device), block_size=16)
    path, prompt, output, gaps = workload(a.requests, a.seed)
    cfg = SimConfig(jump=not a.no_jump, record_breakdown=not a.no_breakdown, max_model_len=8192)

    def batching():
        return make_batching({"policy": a.policy, "max_num_seqs": 256, "max_num_batched_tokens": 8192})

    # capacity probe: one replica, 3000 requests all at t=0
    k = min(3000, a.requests)
    probe = Simulation(build(prompt[:k], output[:k], np.zeros(k)), cost=cost, num_blocks=blocks, batching=batching,
                       router=make_router("round_robin"), config=SimConfig(record_breakdown=False, max_model_len=8192))
    pr = probe.run()
    cap = k / pr.end_s * a.replicas
    rate = a.load * cap
    arrival = np.cumsum(gaps) * (len(gaps) / gaps.sum() / rate)
    reqs = build(prompt, output, arrival)

    t0 = time.perf_counter()
    c0 = time.process_time()
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    sim = Simulation(reqs, cost=cost, num_blocks=blocks, batching=batching, router=make_router("round_robin"),
                     replicas=a.replicas, config=cfg)
    res = sim.run()
    wall = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    if a.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)

    done = np.isfinite(res.completion_s)
    from simllm.metrics import saturation

    sat = saturation(res.arrival_s, res.completion_s, np.array([bool(r) for r in res.rejected_reason]))
    out = {
        "benchmark": "sim_speed",
        "model": "llama-3-70b", "accelerator": "h100-sxm", "replicas": a.replicas, "tp": a.tp,
        "trace": str(path.name), "requests": a.requests, "completed": int(done.sum()),
        "rejected": int(sum(1 for r in res.rejected_reason if r)),
        "jump": cfg.jump, "record_breakdown": cfg.record_breakdown, "cost_model": cost_name,
        "kv_blocks_per_replica": blocks, "capacity_req_per_s": cap, "arrival_rate_per_s": rate,
        "steps_rows": len(res.steps["n_steps"]), "iterations": int(sum(res.steps["n_steps"])),
        "preemptions": int(res.preemptions.sum()), "saturated": sat["saturated"],
        "mean_e2e_s": float(np.nanmean(res.completion_s - res.arrival_s)),
        "busy_fraction": float(sum(res.steps["duration_s"]) / (a.replicas * res.end_s)),
        "wall_s": wall, "simulated_s": res.end_s, "requests_per_wall_s": a.requests / wall,
        "cpu_s": cpu_s, "requests_per_cpu_s": a.requests / cpu_s,  # steadier than wall on a busy machine
        "cpu": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
