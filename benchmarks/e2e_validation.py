"""Run ``simllm validate`` on every run under ../shared/data/e2e/ and print a table and the medians.

    PYTHONPATH=$PWD python3 benchmarks/e2e_validation.py [--json] [--fit-overhead] [--measured-step] [--stage-drain]

``--stage-drain`` starts each stage once the previous stage's requests have all ended (+ interval + 1 s), as
inference-perf's multi-process load generator does (``simllm.validate.replay.simulate_run``); off by default.

``--fit-overhead`` replays the runs with no front-end overhead and prints the least-squares fit of
the relative TTFT error over the sustained runs, the value behind ``simllm.validate.replay.API_OVERHEAD_S``,
and the same fit of a host time per engine step on the time per output token (``step_overhead_s_fit``;
``host_step_s_fit`` + ``host_per_seq_s_fit`` x batch, the two-parameter form behind
``simllm.validate.replay.HOST_STEP_S`` / ``HOST_PER_SEQ_S``): near zero or negative means the sustained
runs show no host time per step outside the GPU's.
``--measured-step`` is a diagnostic, not a prediction: it replays every run a second time with each
step's cost scaled by that run's measured / simulated time per output token, which separates the
error of the step cost from that of the rest (queueing, the client timeout and the server's aborts);
its table has the failed fractions with the step cost as measured.
The last line printed is JSON with the medians.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import simllm.validate.replay as replay
from simllm.cli._common import _clean
from simllm.validate import summarize_runs, validate_run

ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "e2e"


class _Scaled:
    """A step cost model times a constant (the --measured-step diagnostic)."""

    def __init__(self, base, f: float):
        self.base, self.f = base, f

    def step_time(self, *a):
        return self.base.step_time(*a) * self.f

    def __getattr__(self, name):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def _measured_step(run, rec) -> dict:
    a = rec["stages"][-1]
    f = a["measured"]["tpot"]["mean"] / a["simulated"]["tpot"]["mean"]
    prepare = replay.prepare

    def scaled(scn, **kw):
        p = prepare(scn, **kw)
        for pp in p.pools:
            pp.cost = _Scaled(pp.cost, f)
        return p

    replay.prepare = scaled
    try:
        r = validate_run(run)
    finally:
        replay.prepare = prepare
    return {"run": rec["run"], "step_scale": f, "failed_measured": r["failed_measured"],
            "failed_simulated": r["failed_simulated"], "saturated": r["saturated"], "ttft_ape": r["ttft_ape"],
            "e2e_ape": r["e2e_ape"]}


def main() -> None:
    runs = sorted(p for p in ROOT.glob("*/runs/*") if p.is_dir())
    if not runs:
        sys.exit(f"no runs under {ROOT}")
    fit = "--fit-overhead" in sys.argv
    drain = "--stage-drain" in sys.argv
    recs = []
    for r in runs:
        t0 = time.perf_counter()
        rec = validate_run(r, api_overhead_s=0.0, host_step_s=0.0, host_per_seq_s=0.0) if fit else \
            validate_run(r, stage_drain=drain)
        rec["wall_s"] = time.perf_counter() - t0
        recs.append(rec)
    res = summarize_runs(recs)
    if "--measured-step" in sys.argv:
        rows = [_measured_step(r, rec) for r, rec in zip(runs, recs)]
        for d in rows:
            print(f"{d['run']:48s} step x{d['step_scale']:.3f}  failed measured {100 * d['failed_measured']:5.1f}% "
                  f"simulated {100 * d['failed_simulated']:5.1f}%  TTFT {100 * d['ttft_ape']:5.1f}%  "
                  f"E2E {100 * d['e2e_ape']:5.1f}%")
        print(json.dumps(_clean({"benchmark": "e2e_validation_measured_step", "runs": rows})))
        return
    if fit:
        num = den = snum = sden = 0.0
        rows = []
        for r in recs:
            if r["sustained"]:
                a = r["stages"][-1]
                m, sim = a["measured"]["ttft"]["mean"], a["simulated"]["ttft"]["mean"]
                num += (m - sim) / m ** 2
                den += 1.0 / m ** 2
                # time per output token the engine's step gives (k client timestamps per token)
                k = r["timestamps_per_token"]
                m, sim = k * a["measured"]["tpot"]["mean"], k * a["simulated"]["tpot"]["mean"]
                snum += (m - sim) / m ** 2
                sden += 1.0 / m ** 2
                rows.append((m, sim, r["mean_batch"]))
        # api_overhead_s: per request, in TTFT and E2E; step_overhead_s: what a host time added to every
        # engine step (not hidden behind the GPU) would have to be, fitted the same way on the time per token
        # host_step_s + host_per_seq_s x batch: weighted least squares of the relative per-token error
        A = np.array([[1.0 / m, b / m] for m, _s, b in rows])
        y = np.array([(m - s) / m for m, s, _b in rows])
        two = np.linalg.lstsq(A, y, rcond=None)[0] if len(rows) >= 2 else [None, None]
        print(json.dumps({"api_overhead_s_fit": num / den if den else None,
                          "step_overhead_s_fit": snum / sden if sden else None,
                          "host_step_s_fit": float(two[0]), "host_per_seq_s_fit": float(two[1])}))
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
