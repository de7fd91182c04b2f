"""TPOT of a simulated DeepSeek-V3 EP32 decode deployment under three expert placements.

Runs ``workloads/scenarios/deepseek-v3-h800-ep32.yaml`` (Azure 2023 conversation trace,
re-timed, a few hundred requests; Zipf alpha 1.0 expert loads; 32 redundant slots) through
the scenario API with ``placement.policy`` = ilp, greedy_replicated and contiguous, and prints
a table and, as the last line, JSON. A fourth row, ``ilp-stale``, serves the same loads with
an ILP placement planned on other loads (Zipf seed 1), and prints what re-planning would move.
The routed-expert expectation of every placement is estimated from the same routing draws
(common random numbers), so differences are the placements'.
Two more rows serve drifting loads (log-popularity random walk, std ``DRIFT`` every ``EVERY_S``
simulated seconds): ``ilp-drift`` keeps the first ILP placement, ``ilp-replan`` re-places with
the ILP from the previous interval's loads at every boundary and pauses for the migration.

    python3 benchmarks/moe_placement_tpot.py [--set deployment.moe.overlap=true ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simllm.scenario import load_scenario, prepare, simulate  # noqa: E402

SCENARIO = ROOT / "workloads" / "scenarios" / "deepseek-v3-h800-ep32.yaml"
POLICIES = ("ilp", "greedy_replicated", "contiguous", "ilp-stale", "ilp-drift", "ilp-replan")
DRIFT, EVERY_S = 0.4, 5


def run(policy: str, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    extra = []
    if policy.endswith("-stale"):  # planned on other loads (seed 1) than served (seed 0)
        policy = policy[:-len("-stale")]
        extra = ["deployment.placement.plan_loads={alpha: 1.0, seed: 1}"]
    suffix = ""
    for sfx, ov in (("-drift", f"deployment.expert_loads.drift_every_s={EVERY_S}"),
                    ("-replan", f"deployment.placement.replan_every_s={EVERY_S}")):
        if policy.endswith(sfx):
            policy, suffix = policy[:-len(sfx)], sfx
            overrides = [*overrides, f"deployment.expert_loads.drift={DRIFT}", ov]
    scn, path = load_scenario(SCENARIO, [f"deployment.placement.policy={policy}", *overrides, *extra])
    prep = prepare(scn, file=path)
    t1 = time.perf_counter()
    _, _, s = simulate(prep)
    t2 = time.perf_counter()
    c = prep.cost
    imb = c.placement.imbalance()
    tab = c.expert_table()
    i = min(range(len(tab["tokens"])), key=lambda j: abs(tab["tokens"][j] - 1024))
    mig = c.replan(c.popularity * 1e4, {"policy": policy, "redundant": 32} if policy == "ilp" else policy)[1] \
        if extra else None
    rp = s.get("replacement")
    return {"policy": policy + ("-stale" if extra else suffix), "migration_to_fresh": mig,
            "replacement": {k: v for k, v in rp.items() if k != "events"} if rp else None,
            "tpot_p50_s": s["tpot_s"]["p50"], "tpot_mean_s": s["tpot_s"]["mean"],
            "tpot_p90_s": s["tpot_s"]["p90"], "ttft_p50_s": s["ttft_s"]["p50"],
            "output_tokens_per_s": s["output_tokens_per_s"], "completed": s["completed"],
            "planned_max_mean": float(imb.mean()),
            "sampled_max_mean_at_1024_tokens": tab["max_device_slots"][i] / tab["mean_device_slots"][i],
            "slots_per_device": c.slots_used, "weight_gib_per_device": c.weight_bytes_per_device / 2**30,
            "kv_blocks": prep.num_blocks, "prepare_s": t1 - t0, "simulate_s": t2 - t1}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="scenario override A.B=VALUE")
    args = ap.parse_args(argv)
    rows = [run(p, args.overrides) for p in POLICIES]
    hdr = f"{'placement':<18} {'TPOT p50 ms':>11} {'mean ms':>8} {'p90 ms':>8} {'TTFT p50 ms':>11} {'out tok/s':>9} " \
          f"{'plan max/mean':>13} {'max/mean@1024':>13} {'slots':>5} {'W GiB':>6} {'wall s':>6}"
    print(hdr)
    for r in rows:
        print(f"{r['policy']:<18} {1e3 * r['tpot_p50_s']:>11.2f} {1e3 * r['tpot_mean_s']:>8.2f} "
              f"{1e3 * r['tpot_p90_s']:>8.2f} {1e3 * r['ttft_p50_s']:>11.1f} {r['output_tokens_per_s']:>9.0f} "
              f"{r['planned_max_mean']:>13.3f} {r['sampled_max_mean_at_1024_tokens']:>13.3f} "
              f"{r['slots_per_device']:>5d} {r['weight_gib_per_device']:>6.1f} "
              f"{r['prepare_s'] + r['simulate_s']:>6.1f}")
    for r in rows:
        if r["migration_to_fresh"]:
            m = r["migration_to_fresh"]
            print(f"{r['policy']}: re-planning on the served loads moves {m['moved_replicas']:.0f} expert replicas, "
                  f"{m['moved_bytes'] / 2**30:.1f} GiB ({m['max_device_bytes'] / 2**30:.2f} GiB on the busiest device, "
                  f"{m['migration_s']:.2f} s over its NIC)")
    for r in rows:
        if r["replacement"]:
            m = r["replacement"]
            print(f"{r['policy']}: {m['count']} interval boundaries every {m['every_s']:g} s (drift {m['drift']:g}), "
                  f"moved {m['moved_bytes'] / 2**30:.0f} GiB, paused {m['migration_s']:.2f} s in all")
    out = {"scenario": SCENARIO.name, "overrides": args.overrides, "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
