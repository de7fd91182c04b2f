"""Run ``simllm validate`` on every run under ../shared/data/e2e/ and print a table and the medians.

    PYTHONPATH=$PWD python3 benchmarks/e2e_validation.py [--json] [--fit-overhead]

``--fit-overhead`` replays the runs with no front-end overhead and prints the least-squares fit of
the relative TTFT error over the sustained runs, the value behind ``simllm.validate.replay.API_OVERHEAD_S``.
The last line printed is JSON with the medians.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from simllm.cli._common import _clean
from simllm.validate import summarize_runs, validate_run

ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "e2e"


def main() -> None:
    runs = sorted(p for p in ROOT.glob("*/runs/*") if p.is_dir())
    if not runs:
        sys.exit(f"no runs under {ROOT}")
    fit = "--fit-overhead" in sys.argv
    recs = []
    for r in runs:
        t0 = time.perf_counter()
        rec = validate_run(r, api_overhead_s=0.0) if fit else validate_run(r)
        rec["wall_s"] = time.perf_counter() - t0
        recs.append(rec)
    res = summarize_runs(recs)
    if fit:
        num = den = 0.0
        for r in recs:
            if r["sustained"]:
                a = r["stages"][-1]
                m, sim = a["measured"]["ttft"]["mean"], a["simulated"]["ttft"]["mean"]
                num += (m - sim) / m ** 2
                den += 1.0 / m ** 2
        print(json.dumps({"api_overhead_s_fit": num / den if den else None}))
        return
    if "--json" in sys.argv:
        print(json.dumps(_clean(res), indent=2))
        return
    f = lambda x: "-" if x is None else f"{100 * x:5.1f}%"  # noqa: E731
    print(f"{'run':48s} sus sat   TTFT   TPOT    ITL    E2E  failM  failS  wall")
    for r in recs:
        print(f"{r['run']:48s} {'y' if r['sustained'] else 'n':>3s} {'y' if r['saturated'] else 'n':>3s} "
              f"{f(r['ttft_ape'])} {f(r['tpot_ape'])} {f(r['itl_ape'])} {f(r['e2e_ape'])} "
              f"{f(r['failed_measured'])} {f(r['failed_simulated'])} {r['wall_s']:5.1f}s")
    for k in ("median", "median_all"):
        m = res[k]
        print(f"{k:56s} {f(m['ttft_ape'])} {f(m['tpot_ape'])} {f(m['itl_ape'])} {f(m['e2e_ape'])}")
    print(json.dumps(_clean({"benchmark": "e2e_validation", "runs": len(recs), "median": res["median"],
                             "median_all": res["median_all"]})))


if __name__ == "__main__":
    main()
