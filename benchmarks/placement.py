"""Benchmark: expert placement for DeepSeek-V3 (256 experts, 58 MoE layers) on 32 devices in 4 nodes
with 32 redundant slots, Zipf alpha=1.0 loads; every policy side by side.

    python benchmarks/placement.py [--jobs 2] [--solver auto] [--always-solve]

Runs ``simllm place --compare --json`` in a subprocess and prints, as its last line, one JSON
object: ILP vs greedy max/mean load (average and worst layer), the ILP's gap to the LP-relaxation
bound, and wall time (whole command and the ILP's place() call, with time per layer).
Targets: ILP max/mean <= greedy on every layer, gap <= 1 %, 58 layers <= 60 s with 2 jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--always-solve", action="store_true",
                    help="call the MIP solver even when the warm start already meets the gap")
    a = ap.parse_args()
    cmd = [sys.executable, "-c", "from simllm.cli import main; main()", "place", "--model", "deepseek-v3",
           "--devices", "32", "--nodes", "4", "--redundant", "32", "--alpha", "1.0", "--compare", "--json",
           "--jobs", str(a.jobs), "--solver", a.solver, "--time-limit", str(a.time_limit), "--seed", str(a.seed)]
    if a.always_solve:
        cmd += ["--set", "always_solve=true"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.stderr.write(r.stderr)
        sys.exit(r.returncode)
    rep = json.loads(r.stdout)
    by = {p["policy"]: p for p in rep["policies"]}
    ilp, gr = by["ilp"], by["greedy_replicated"]
    out = {
        "benchmark": "placement", "command": " ".join(cmd[3:]), "cpu_count": os.cpu_count(),
        "layers": rep["config"]["layers"], "experts": rep["config"]["experts"], "devices": rep["config"]["devices"],
        "slots_per_device": rep["config"]["slots_per_device"],
        "greedy_max_mean_avg": gr["max_mean_avg"], "greedy_max_mean_worst": gr["max_mean_worst"],
        "greedy_hierarchical_max_mean_avg": by.get("greedy_hierarchical", {}).get("max_mean_avg"),
        "contiguous_max_mean_avg": by.get("contiguous", {}).get("max_mean_avg"),
        "ilp_max_mean_avg": ilp["max_mean_avg"], "ilp_max_mean_worst": ilp["max_mean_worst"],
        "ilp_bound_kind": ilp.get("bound_kind"), "ilp_gap_avg": ilp.get("gap_avg"), "ilp_gap_worst": ilp.get("gap_worst"),
        "ilp_status_counts": ilp.get("status_counts"),
        "ilp_le_greedy_every_layer": rep["ilp_vs_greedy"]["ilp_le_greedy_every_layer"],
        "ilp_solve_s": ilp["solve_s"], "ilp_solve_s_per_layer": ilp["solve_s_per_layer"],
        "command_wall_s": wall, "jobs": a.jobs, "solver": a.solver, "always_solve": a.always_solve,
    }
    out["pass"] = bool(out["ilp_le_greedy_every_layer"] and (out["ilp_gap_worst"] or 0) <= 0.01
                       and ilp["solve_s"] <= 60.0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
