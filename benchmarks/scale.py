"""Scale: a million requests through ``simllm run``, wall time and peak memory.

Llama-3-8B on 6 x H100 SXM (6 replicas of TP1, vLLM V0 batching, round-robin), replaying a
1,000,000-request trace in the Azure 2023 format. The trace is the Azure 2023 conversation
trace resampled (prompt/output pairs and inter-arrival gaps drawn with replacement), its time
scaled so that the arrivals come at ``--load`` (default 0.8) of the cluster's capacity, measured
first as in ``sim_speed.py`` (one replica, 3,000 requests at t = 0). The trace and the scenario
are written to a temporary folder (or ``--work``), then

    python -m simllm run SCENARIO --out OUT --json [--format F]

runs as a child process: the wall time is the child's whole life (start-up, reading the trace,
the simulation, the summary, writing every output file), the peak RSS the child's
``ru_maxrss`` (``resource.getrusage(RUSAGE_CHILDREN)``), its CPU time user + system (on a machine
shared with other jobs the CPU time is the figure that does not depend on their load).

    python benchmarks/scale.py                      # 1,000,000 requests
    python benchmarks/scale.py --requests 100000 --profile   # cProfile of the run, in-process

Prints requests per wall second, peak RSS and the files written (with sizes); the last line is
JSON. Figures are recorded in the README ("Scale").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simllm.cost import make_step_cost  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402
from simllm.model import load_model  # noqa: E402
from simllm.policies import make_batching, make_router  # noqa: E402
from simllm.sim import SimConfig, Simulation, kv_capacity_blocks  # noqa: E402
from simllm.workload import Request  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from sim_speed import workload  # noqa: E402  (the same resampled Azure conversation requests)

SCENARIO = """\
# written by benchmarks/scale.py
name: scale-llama3-8b-6xh100
model: llama-3-8b
hardware: {{accelerator: h100-sxm}}
deployment:
  replicas: {replicas}
  tp: 1
  batching: {{policy: {policy}, max_num_seqs: 256, max_num_batched_tokens: 8192}}
  kv: {{block_size: 16, gpu_memory_utilization: 0.9, activation_reserve: 0.02, preemption: recompute}}
  router: {{policy: round_robin}}
workload:
  trace: {trace}
  format: azure
slo: {{ttft_s: 1.0, tpot_s: 0.05}}
seed: 0
"""


def capacity(policy: str, prompt: np.ndarray, output: np.ndarray) -> float:
    """Requests per second of one replica on a saturated batch of these requests."""
    acc = load_accelerator("h100-sxm")
    cost = make_step_cost(load_model("llama-3-8b"), acc, tp=1)
    blocks = kv_capacity_blocks(device_memory_bytes=acc.hbm_bytes, n_devices=1, gpu_memory_utilization=0.9,
                                weight_bytes_per_device=float(cost.weight_bytes_per_device),
                                activation_reserve_bytes=0.02 * acc.hbm_bytes,
                                kv_bytes_per_token_per_device=float(cost.kv_bytes_per_token_per_device), block_size=16)
    k = min(3000, len(prompt))
    reqs = [Request(i, 0.0, int(prompt[i]), int(output[i])) for i in range(k)]
    sim = Simulation(reqs, cost=cost, num_blocks=blocks, router=make_router("round_robin"),
                     batching=lambda: make_batching({"policy": policy, "max_num_seqs": 256,
                                                     "max_num_batched_tokens": 8192}),
                     config=SimConfig(record_breakdown=False, max_model_len=8192))
    return k / sim.run().end_s


def write_trace(path: Path, n: int, replicas: int, load: float, policy: str, seed: int) -> dict:
    src, prompt, output, g = workload(n, seed)  # the resampling of sim_speed.py
    cap = capacity(policy, prompt, output) * replicas
    rate = load * cap
    arrival = np.cumsum(g) * (len(g) / g.sum() / rate)
    arrival -= arrival[0]
    ts = pd.Timestamp("2023-11-16 18:00:00") + pd.to_timedelta(np.round(arrival * 1e7).astype(np.int64) * 100)
    pd.DataFrame({"TIMESTAMP": ts.strftime("%Y-%m-%d %H:%M:%S.%f"), "ContextTokens": prompt,
                  "GeneratedTokens": output}).to_csv(path, index=False)
    return {"source_trace": src.name, "capacity_req_per_s": cap, "arrival_rate_per_s": rate,
            "trace_span_s": float(arrival[-1])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=6)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--policy", default="vllm-v0")
    ap.add_argument("--format", default=None, help="csv | parquet (default: simllm run's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the trace, scenario and outputs")
    ap.add_argument("--profile", action="store_true", help="run in-process under cProfile (RSS then not the child's)")
    a = ap.parse_args()

    work = a.work or Path(tempfile.mkdtemp(prefix="simllm-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    trace = work / f"trace-{a.requests}.csv"
    info = write_trace(trace, a.requests, a.replicas, a.load, a.policy, a.seed)
    scn = work / "scenario.yaml"
    scn.write_text(SCENARIO.format(replicas=a.replicas, policy=a.policy, trace=trace))
    out = work / "out"
    argv = ["run", str(scn), "--out", str(out), "--json", "--no-progress"]
    if a.format:
        argv += ["--format", a.format]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    if a.profile:
        import cProfile
        import pstats

        from simllm.cli import run_cli

        prof = cProfile.Profile()
        prof.enable()
        rc = run_cli(argv)
        prof.disable()
        wall = time.perf_counter() - t0
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        rss = ru.ru_maxrss * 1024
        cpu = ru.ru_utime + ru.ru_stime
        summary = {}
    else:
        p = subprocess.run([sys.executable, "-m", "simllm", *argv], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rc = p.returncode
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss = ru.ru_maxrss * 1024
        cpu = ru.ru_utime + ru.ru_stime
        sys.stderr.write(p.stderr)
        if rc != 0:
            raise SystemExit(f"simllm run failed ({rc})")
        summary = json.loads(p.stdout)
    files = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if not f.name.startswith(".")}
    print(f"{a.requests:,} requests in {wall:.1f} s wall ({cpu:.1f} s CPU): {a.requests / wall:,.0f} requests / wall s")
    print(f"peak RSS {rss / 2**30:.2f} GiB ({rss / 1e9:.2f} GB)")
    for name, size in files.items():
        print(f"  {out / name}: {size / 1e6:.1f} MB")
    res = {"benchmark": "scale", "model": "llama-3-8b", "accelerator": "h100-sxm", "replicas": a.replicas, "tp": 1,
           "policy": a.policy, "requests": a.requests, **info, "rc": rc, "wall_s": wall,
           "requests_per_wall_s": a.requests / wall, "cpu_s": cpu, "peak_rss_bytes": rss, "files": files,
           "completed": summary.get("completed"), "saturated": summary.get("saturated"),
           "simulated_s": summary.get("duration_s"), "cpu": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
