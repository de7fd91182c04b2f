"""Refit the fused-MoE kernel sections (``moe/<dtype>[/<family>]``) of one shipped calibration and framework.

    python benchmarks/moe_refit.py GPU DEVICE FRAMEWORK [--rows N] [--iters N] [--write]
    python benchmarks/moe_refit.py h100_sxm h100-sxm vllm --write

Fits :func:`simllm.cost.moe_layer.fit_frame` (seeded subsample of ``--rows`` per dtype and kernel family) on
the framework's newest moe tables of ``../shared/data`` (starting from the shipped section), keeps a refitted
section only where it lowers the mean |log(pred / measured)| over all of that section's rows, and prints the
``calibrate check`` figures (median / p90 per dtype) before and after. ``--write`` puts the kept sections in
``frameworks.<F>.kernels`` (and the top-level ``kernels`` for vLLM, whose sections they are), the new figures
in ``frameworks.<F>.fit.per_op`` and a note in ``fit.moe_<F>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simllm.cost import moe_layer as M, tables as T  # noqa: E402
from simllm.cost.calibration import calibration_for  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402

from _calibration_yaml import group_figures, write_sections  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework", choices=["vllm", "sglang", "trtllm"])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    acc = load_accelerator(a.device)
    cal = calibration_for(acc).for_framework(a.framework)
    df = T.read_tables(DATA / a.gpu / "moe", framework=a.framework)
    df = df[df["kind"] == "moe"]
    before = M.price_frame(df, acc, cal)
    new = M.fit_frame(df, acc, cal, max_rows=a.rows, iters=a.iters)
    kern = dict(cal.kernels)
    kept = {}
    t = df["latency_s"].to_numpy(float)
    for name in sorted(new, key=lambda n: n.count("/")):  # dtype sections before family sections
        parts = name.split("/")
        m = (df["dtype"].astype(str) == parts[1]).to_numpy()
        if len(parts) > 2:
            m = m & np.array([M.source_key(v) == parts[2] for v in df["kernel_source"].astype(str)])
        if not m.any():
            continue
        sub = df[m]
        old = M.price_frame(sub, acc, replace(cal, kernels=kern))
        trial = {**kern, name: new[name]}
        fresh = M.price_frame(sub, acc, replace(cal, kernels=trial))
        lo, ln = (float(np.mean(np.abs(np.log(x / t[m])))) for x in (old, fresh))
        print(f"  {name:70s} {m.sum():6d} rows  mean|log| {lo:.4f} -> {ln:.4f} {'kept' if ln < lo else 'dropped'}",
              flush=True)
        if ln < lo:
            kern = trial
            kept[name] = new[name]
    after = M.price_frame(df, acc, replace(cal, kernels=kern))
    fb, fa = group_figures(df, before, "moe"), group_figures(df, after, "moe")
    for k in fa:
        print(f"{a.gpu} {a.framework} {k}: {fb[k]['median']:.3f}/{fb[k]['p90']:.3f} -> {fa[k]['median']:.3f}/"
              f"{fa[k]['p90']:.3f}")
    res = {"benchmark": "moe_refit", "gpu": a.gpu, "framework": a.framework, "kept": kept, "before": fb,
           "after": fa, "wall_s": time.perf_counter() - t0}
    p = ROOT / "hardware" / "calibration" / f"{a.device}.yaml"
    if a.write and kept and p.is_file():
        write_sections(p, a.framework, kept, fa, f"moe_{a.framework}", f"{a.gpu}/moe/{a.framework} (newest)",
                       "refit with the per-expert term (expert_s) by benchmarks/moe_refit.py: sections kept where they "
                       "lower the mean |log error| over their rows; per_op figures of calibrate check")
        print("wrote", p)
    print(json.dumps({k: v for k, v in res.items() if k != "kept"}))
    return res


if __name__ == "__main__":
    main()
