"""Sweep scaling: a 48-point sweep (3 nodes x 4 TP degrees x 4 rates) with --jobs 1 and --jobs 2.

    python benchmarks/sweep_scaling.py [--requests 400]

Each point simulates Llama-3-8B on one node type (DGX-A100, DGX-H100, HGX-H200) with TP 1/2/4/8 and
Poisson re-timed arrivals from the shipped Azure conversation sample. Prints the wall time of both runs
and their ratio (target: jobs=2 at most 0.6x jobs=1); the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simllm.sweep import load_sweep, run_items, scenario_runner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per point")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="simllm-sweep-bench-"))
    sweep = tmp / "sweep.yaml"
    base = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"
    sweep.write_text(f"""
base: {base}
grid:
  hardware: [{{node: dgx-a100}}, {{node: dgx-h100}}, {{node: hgx-h200}}]
  deployment.tp: [1, 2, 4, 8]
  workload.retime: [{{process: poisson, rate: 2}}, {{process: poisson, rate: 4}}, {{process: poisson, rate: 8}}, {{process: poisson, rate: 16}}]
  workload.limit: [{args.requests}]
""")
    sw = load_sweep(sweep)
    items = sw.expand()
    assert len(items) == 48, len(items)
    fn = scenario_runner(sw.base_dir)
    walls = {}
    for jobs in (1, 2):
        out = tmp / f"jobs{jobs}"
        t0 = time.perf_counter()
        df = run_items(items, fn, out, jobs=jobs, progress=False)
        walls[jobs] = time.perf_counter() - t0
        ok = int((df.status == "ok").sum())
        print(f"jobs={jobs}: {len(df)} points ({ok} ok) in {walls[jobs]:.1f} s")
    ratio = walls[2] / walls[1]
    print(f"jobs=2 / jobs=1 wall-time ratio: {ratio:.3f} (target <= 0.6)")
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"points": 48, "requests_per_point": args.requests, "wall_s_jobs1": round(walls[1], 2),
                      "wall_s_jobs2": round(walls[2], 2), "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
