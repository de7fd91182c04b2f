"""Fidelity of the cost model against measured A100 kernels (Vidur's profiling tables).

Prints, for every GEMM row of every shipped ``*_mlp.csv``: the calibrated model's median and
p90 absolute relative error per op and overall, next to a single-constant-efficiency baseline
(``max(F/(peak e_c), B/(bw e_m)) + o``, its three constants fitted on the same rows); the
all_reduce / send_recv errors (intra- and inter-node); and a held-out figure: the GEMM
parameters refitted from a neutral start on half of the model files (alternate files) and
checked on the other half, both ways.

Then, for every shipped calibration of a GPU with AIConfigurator tables (a100-sxm-80gb, h100-sxm,
l40s) and every framework it has: the fit error per (kernel class, dtype) on that GPU's tables
(what `simllm calibrate check <gpu folder> --hw <device> --framework F --json` prints), and a
leave-one-GPU-out figure: the held-out GPU's tables priced on its own descriptor with each of the
two other GPUs' calibrations (fitted without it), the two predictions combined by their geometric
mean (a fit on two GPUs as an ensemble of the two one-GPU fits). The last line is JSON.

    python benchmarks/cost_model_error.py [--data DIR] [--skip-vidur] [--frameworks vllm,trtllm,sglang]
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

from simllm.cost.calibration import GemmParams, calibration_for  # noqa: E402
from simllm.cost.fit import (comm_rows, constant_efficiency_baseline, elementwise_rows, error_stats,  # noqa: E402
                             fit_gemm, gemm_rows, predict_comm, predict_elementwise, predict_gemm)
from simllm.hardware import load_accelerator, load_node  # noqa: E402

NEUTRAL = GemmParams(tile_efficiency=(0.7,) * 6, tile_k_overhead=50.0, partial_wave_cost=0.5, tile_softmin_q=8.0,
                     overlap_exponent=3.0, memory_efficiency=0.8, kernel_overhead_s=5e-6)


def _sub(rows, mask):
    return {k: v[mask] for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("SIMLLM_SHARED", str(REPO.parent / "shared")) + "/data")
    ap.add_argument("--iters", type=int, default=1200, help="simplex iterations of each held-out fit")
    ap.add_argument("--skip-vidur", action="store_true", help="only the AIConfigurator part")
    ap.add_argument("--frameworks", default="vllm,trtllm,sglang")
    args = ap.parse_args()
    aic = aiconfigurator_part(Path(args.data) / "calibration" / "aiconfigurator", args.frameworks.split(","))
    if args.skip_vidur:
        print(json.dumps({"aiconfigurator": aic}))
        return
    base = Path(args.data) / "calibration" / "vidur-a100"
    files = sorted(base.glob("*_mlp.csv"))
    if not files:
        print(f"no measured tables under {base}")
        sys.exit(1)
    t0 = time.time()
    acc = load_accelerator("a100-sxm-80gb")
    cal = calibration_for(acc)
    rows = gemm_rows(files)
    model = error_stats(predict_gemm(rows, acc, cal), rows["t"], rows["op"])
    baseline = error_stats(constant_efficiency_baseline(rows, acc), rows["t"], rows["op"])
    print(f"GEMM, {model['n']} rows of {len(files)} files (A100, fp16), |pred/meas - 1|")
    print(f"{'op':16s} {'model med':>9s} {'model p90':>9s} {'const med':>9s} {'const p90':>9s}")
    for op in model["per_op"]:
        m, b = model["per_op"][op], baseline["per_op"][op]
        print(f"{op:16s} {m['median']:9.4f} {m['p90']:9.4f} {b['median']:9.4f} {b['p90']:9.4f}")
    print(f"{'all':16s} {model['median_abs_rel_error']:9.4f} {model['p90_abs_rel_error']:9.4f} "
          f"{baseline['median_abs_rel_error']:9.4f} {baseline['p90_abs_rel_error']:9.4f}")

    # held-out: fit on alternate model files, check on the others (both ways)
    names = sorted({str(s) for s in rows["src"]})
    halves = (names[0::2], names[1::2])
    held = []
    for train, test in (halves, halves[::-1]):
        tr = np.isin(rows["src"], train)
        sub = _sub(rows, tr)
        sub = _sub(sub, np.arange(len(sub["t"])) % 2 == 0)  # every other row: faster, same shapes
        gp = fit_gemm(sub, acc, NEUTRAL, iters=args.iters)
        te = _sub(rows, ~tr)
        st = error_stats(predict_gemm(te, acc, None, gp), te["t"])
        st_tr = error_stats(predict_gemm(_sub(rows, tr), acc, None, gp), rows["t"][tr])
        held.append({"train": train, "test": test, "train_median": st_tr["median_abs_rel_error"],
                     "train_p90": st_tr["p90_abs_rel_error"], "test_median": st["median_abs_rel_error"],
                     "test_p90": st["p90_abs_rel_error"]})
        print(f"held-out: fit on {', '.join(train)}\n          test on {', '.join(test)}: "
              f"median {st['median_abs_rel_error']:.4f} p90 {st['p90_abs_rel_error']:.4f} "
              f"(train {st_tr['median_abs_rel_error']:.4f} / {st_tr['p90_abs_rel_error']:.4f})")

    ew = elementwise_rows(files)
    ew_st = error_stats(predict_elementwise(ew, acc, cal.elementwise), ew["t"], ew["op"])
    print("elementwise (one bandwidth fraction + overhead for norm/act/add; PyTorch-native kernels differ a lot):")
    for op, v in ew_st["per_op"].items():
        print(f"  {op:16s} median {v['median']:.4f} p90 {v['p90']:.4f}")

    comm = {}
    cfiles = [base / "a100_dgx_all_reduce.csv", base / "a100_dgx_send_recv.csv"]
    if all(f.is_file() for f in cfiles):
        node = load_node("dgx-a100")
        cr = comm_rows(cfiles)
        e = np.abs(predict_comm(cr, node, cal) / cr["t"] - 1)
        intra = cr["g"] == cr["n"]
        for op in ("all_reduce", "send_recv"):
            for scope, m in (("intra", intra), ("inter", ~intra), ("all", np.ones_like(intra))):
                sel = (cr["op"] == op) & m
                comm[f"{op}_{scope}"] = {"n": int(sel.sum()), "median": float(np.median(e[sel])),
                                         "p90": float(np.percentile(e[sel], 90))}
        print("collectives (dgx-a100), |pred/meas - 1|")
        for k, v in comm.items():
            print(f"  {k:20s} n={v['n']:5d} median {v['median']:.4f} p90 {v['p90']:.4f}")
    out = {"gemm": {"n": model["n"], "median": model["median_abs_rel_error"], "p90": model["p90_abs_rel_error"],
                    "per_op": model["per_op"]},
           "gemm_constant_baseline": {"median": baseline["median_abs_rel_error"],
                                      "p90": baseline["p90_abs_rel_error"]},
           "gemm_held_out": held, "collectives": comm,
           "elementwise": {"median": ew_st["median_abs_rel_error"], "p90": ew_st["p90_abs_rel_error"]},
           "aiconfigurator": aic, "wall_s": round(time.time() - t0, 2)}
    print(json.dumps(out))


GPUS = {"a100_sxm": "a100-sxm-80gb", "h100_sxm": "h100-sxm", "l40s": "l40s"}


def _groups_line(r):
    return ", ".join(f"{k} {v['median']:.3f}/{v['p90']:.3f} (n={v['n']})" for k, v in r["per_op"].items())


def older_labels_check(gpu_dir: Path, fw: str, newest, acc, cal) -> dict:
    """The shipped calibration on the rows of kernel labels that only older version folders carry (each label
    from the newest version holding it, as `simllm calibrate fit` fits them): median / p90 per label."""
    from simllm.cost import older_labels, pricing, tables as T
    from simllm.cost.kernel_models import MIN_GROUP

    rows = older_labels.older_label_rows(newest, T.older_tables(gpu_dir, fw))
    out = {}
    for k, (ver, sub) in sorted(rows.items()):
        if len(sub) < MIN_GROUP:
            continue
        e = np.abs(pricing.price(sub, acc, cal) / sub["latency_s"].to_numpy(float) - 1)
        e = e[np.isfinite(e)]
        if len(e):
            out[older_labels.section_name(k)] = {"n": int(len(e)), "version": ver, "median": float(np.median(e)),
                                               "p90": float(np.percentile(e, 90))}
    return out


def aiconfigurator_part(root: Path, frameworks) -> dict:
    from simllm.cost import pricing, tables as T

    out = {}
    if not root.is_dir():
        print(f"no AIConfigurator tables under {root}")
        return out
    accs = {g: load_accelerator(h) for g, h in GPUS.items()}
    cals = {g: calibration_for(a) for g, a in accs.items()}
    for fw in frameworks:
        frames = {}
        for g in GPUS:
            if (root / g).is_dir():
                df = T.read_tables(root / g, fw)
                frames[g] = df
        for g, df in frames.items():
            if df.empty:
                continue
            cal = cals[g].for_framework(fw)
            pred = pricing.price(df, accs[g], cal)
            fit_r = pricing.error_summary(df, pred)
            # leave this GPU out: the other two GPUs' calibrations, geometric mean of their predictions
            others = [o for o in GPUS if o != g]
            logs = [np.log(pricing.price(df, accs[g], cals[o].for_framework(fw))) for o in others]
            held = pricing.error_summary(df, np.exp(np.mean(logs, axis=0)))
            older = older_labels_check(root / g, fw, df, accs[g], cal)
            out[f"{g}/{fw}"] = {"fit": fit_r, "leave_one_gpu_out": held, "calibration": cals[g].device,
                                "older_labels": older}
            print(f"[{fw}] {g} on {GPUS[g]} (calibration {cals[g].device}): fit median "
                  f"{fit_r['median_abs_rel_error']:.4f} p90 {fit_r['p90_abs_rel_error']:.4f} "
                  f"(unpriced {sum(fit_r['unpriced'].values())} of {fit_r['n']})")
            print(f"    per kind/dtype (median/p90): {_groups_line(fit_r)}")
            print(f"    leave-one-GPU-out (fit on {', '.join(others)}): median {held['median_abs_rel_error']:.4f} "
                  f"p90 {held['p90_abs_rel_error']:.4f}; {_groups_line(held)}")
            if older:
                print("    labels of older versions only (newest version holding each): " + ", ".join(
                    f"{k} {v['median']:.3f}/{v['p90']:.3f} (n={v['n']}, {v['version']})" for k, v in older.items()))
    return out


if __name__ == "__main__":
    main()
