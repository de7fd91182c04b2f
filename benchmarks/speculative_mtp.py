"""DeepSeek-V3's multi-token prediction against its published speed-up.

The DeepSeek-V3 technical report (arXiv:2412.19437, section 5.4.3) gives, for MTP with one extra
token: "the acceptance rate of the second token prediction ranges between 85% and 90%", which
"enables a significantly improved decoding speed, delivering 1.8 times TPS (Tokens Per Second)".
This prices DeepSeek's published decode deployment (EP144 on 18 HGX H800 nodes, 88 sequences per GPU at
4K context: ``benchmarks/published_moe.py``'s ``ds-decode``) with the expert-parallel step cost, without
speculation and with ``{method: mtp, num_tokens: 1, acceptance: a}`` (``simllm.cost.spec_step.
SpeculativeStepCost``: verification of two tokens per sequence plus the MTP module's pass) for the ends of
that range, and prints the decode speed-up (TPOT without / with) two ways:

- at the same batch (88 sequences per GPU either way): what one step's cost says;
- at the same offered load: with MTP each sequence finishes sooner, so a server taking the same requests per
  second holds fewer of them; the batch with MTP is the one whose output tokens per second per GPU equal the
  baseline's (linear between whole batch sizes). This is the comparison a production "TPS" figure makes.

Then it replays the shipped PD scenario (``workloads/scenarios/deepseek-v3-h800-pd.yaml``: its Poisson arrivals,
its data-parallel attention ranks, each rank planning its own sequences' verification steps) without and with MTP
at each acceptance, and prints the mean TPOT ratio of the streams (``--requests``; 0 skips the replay). Nothing
is fitted: the acceptance is the published one.

    python benchmarks/speculative_mtp.py [--acceptance 0.85 0.87 0.90] [--seqs 88] [--ctx 4096] [--requests 2000]

The last line printed is JSON.

Recorded 2026-12-04 (27 s on the shared 2-core machine): step level, TPOT 68.5 ms without MTP at 88 sequences per
GPU; at the same batch 52.2 / 51.7 / 50.8 ms (1.31 / 1.33 / 1.35x) at acceptance 0.85 / 0.87 / 0.90; at the same
offered load (about 51 sequences per GPU with MTP) 1.70 / 1.72 / 1.77x. Stream replay, 2,000 requests: mean TPOT
25.7 ms without, 14.6 / 14.4 / 14.2 ms with: 1.76 / 1.78 / 1.81x (1.866 tokens a sequence-step at 0.87).
Published: 1.8x.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import published_moe as P  # noqa: E402

PUBLISHED = 1.8


SCN = Path(__file__).resolve().parent.parent / "workloads" / "scenarios" / "deepseek-v3-h800-pd.yaml"


def replay(requests: int, spec) -> dict:
    """The shipped DeepSeek-V3 PD scenario with ``requests`` requests and ``deployment.speculative`` = ``spec``."""
    from simllm.scenario import load_scenario, prepare, simulate

    sets = [f"workload.generator.num_requests={requests}"] + \
        ([f"deployment.speculative={json.dumps(spec)}"] if spec is not None else [])
    scn, f = load_scenario(SCN, sets)
    t0 = time.perf_counter()
    _req, _steps, s = simulate(prepare(scn, file=f))
    return {"acceptance": spec["acceptance"] if spec else None, "tpot_mean_s": s["tpot_s"]["mean"],
            "tokens_per_step": (s.get("speculative") or {}).get("tokens_per_step"), "wall_s": time.perf_counter() - t0}


def same_load(cost, seqs: int, ctx: float, acc: float, tokens_per_s: float) -> tuple[float, float]:
    """(sequences per GPU, TPOT) with MTP at ``acc`` where the output tokens per second per GPU equal
    ``tokens_per_s`` (the baseline's at ``seqs``): the smallest whole batch reaching it and the one below,
    interpolated linearly; the baseline batch itself where even it falls short."""
    prev = None
    for b in range(1, seqs + 1):
        r = P.decode(cost, b, ctx, acc)
        rate = b / r["tpot_s"]
        if rate >= tokens_per_s:
            if prev is None:
                return float(b), r["tpot_s"]
            pb, prate, ptpot = prev
            w = (tokens_per_s - prate) / (rate - prate)
            return pb + w * (b - pb), ptpot + w * (r["tpot_s"] - ptpot)
        prev = (b, rate, r["tpot_s"])
    r = P.decode(cost, seqs, ctx, acc)
    return float(seqs), r["tpot_s"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acceptance", type=float, nargs="*", default=[0.85, 0.87, 0.90])
    ap.add_argument("--seqs", type=int, default=88, help="decode sequences per GPU (published_moe's ds-decode)")
    ap.add_argument("--ctx", type=float, default=4096.0, help="context tokens per sequence")
    ap.add_argument("--requests", type=int, default=2000, help="requests per stream replay (0: no replay)")
    a = ap.parse_args(argv)
    for v in a.acceptance:
        if not 0.0 <= v <= 1.0:
            print(f"error: --acceptance: must be in [0, 1], got {v}", file=sys.stderr)
            raise SystemExit(2)
    if a.requests < 0:
        print("error: --requests must be >= 0", file=sys.stderr)
        raise SystemExit(2)
    if a.seqs < 1 or a.ctx < 1:
        print("error: --seqs and --ctx must be >= 1", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    cost = P.cost_for("ds-decode")
    base = P.decode(cost, a.seqs, a.ctx, None)
    rows = []
    print(f"DeepSeek-V3 decode, EP144 on 18 HGX H800, {a.seqs} sequences per GPU, {a.ctx:.0f}-token context")
    print(f"{'':>10} {'same batch':^38} {'same offered load':^28}")
    print(f"{'acceptance':>10} {'step ms':>8} {'TPOT ms':>8} {'tokens/step':>11} {'speed-up':>8} {'seqs/GPU':>9} "
          f"{'TPOT ms':>8} {'speed-up':>8} {'published':>9}")
    print(f"{'off':>10} {1e3 * base['step_s']:>8.2f} {1e3 * base['tpot_s']:>8.2f} {'1':>11} {'1':>8} {a.seqs:>9} "
          f"{1e3 * base['tpot_s']:>8.2f} {'1':>8} {'':>9}")
    for acc in a.acceptance:
        r = P.decode(cost, a.seqs, a.ctx, acc)
        b_load, tpot_load = same_load(cost, a.seqs, a.ctx, acc, a.seqs / base["step_s"])
        r = {"acceptance": acc, "step_s": r["step_s"], "tpot_s": r["tpot_s"], "tokens_per_step": r["step_s"] / r["tpot_s"],
             "speedup": base["tpot_s"] / r["tpot_s"], "seqs_same_load": b_load, "tpot_same_load_s": tpot_load,
             "speedup_same_load": base["tpot_s"] / tpot_load}
        rows.append(r)
        print(f"{acc:>10.2f} {1e3 * r['step_s']:>8.2f} {1e3 * r['tpot_s']:>8.2f} {r['tokens_per_step']:>11.3f} "
              f"{r['speedup']:>8.2f} {b_load:>9.1f} {1e3 * tpot_load:>8.2f} {r['speedup_same_load']:>8.2f} "
              f"{PUBLISHED:>9.1f}")
    stream = []
    if a.requests:
        print(f"stream replay of {SCN.name}, {a.requests} requests per run")
        print(f"{'acceptance':>10} {'TPOT mean ms':>12} {'tokens/step':>11} {'speed-up':>8} {'wall s':>7} {'published':>9}")
        off = replay(a.requests, None)
        print(f"{'off':>10} {1e3 * off['tpot_mean_s']:>12.2f} {'1':>11} {'1':>8} {off['wall_s']:>7.1f} {'':>9}")
        for acc in a.acceptance:
            r = replay(a.requests, {"method": "mtp", "num_tokens": 1, "acceptance": acc})
            r["speedup"] = off["tpot_mean_s"] / r["tpot_mean_s"]
            stream.append(r)
            print(f"{acc:>10.2f} {1e3 * r['tpot_mean_s']:>12.2f} {r['tokens_per_step']:>11.3f} {r['speedup']:>8.2f} "
                  f"{r['wall_s']:>7.1f} {PUBLISHED:>9.1f}")
        stream = [off] + stream
    out = {"benchmark": "speculative_mtp", "seqs_per_gpu": a.seqs, "ctx": a.ctx,
           "published_speedup": PUBLISHED, "baseline": {"step_s": base["step_s"], "tpot_s": base["tpot_s"]},
           "rows": rows, "requests": a.requests, "stream": stream, "wall_s": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
