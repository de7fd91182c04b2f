"""Refit the GEMM sections (``gemm/<dtype>[/<family>]``) of one shipped calibration, framework and dtype.

    python benchmarks/gemm_refit.py GPU DEVICE FRAMEWORK DTYPE [--dispatch NAME] [--rows N] [--write]
    python benchmarks/gemm_refit.py l40s l40s vllm fp8 --dispatch cutlass_sm89_fp8 --write

Fits :func:`simllm.cost.kernel_models.fit_gemm_kind` on the framework's newest gemm tables of ``../shared/data``
(seeded subsample of ``--rows`` per dtype and kernel family), from the shipped section; ``--dispatch`` prices the
sections with a library's own tile choice by shape (:data:`simllm.cost.kernels.GEMM_DISPATCH`) instead of the best
of their tiles. A refitted section is kept only where it lowers the mean |log(pred / measured)| over all of its
rows; prints the ``calibrate check`` figures (median / p90) before and after. ``--write`` puts the kept sections in
``frameworks.<F>.kernels`` (and the top-level ``kernels`` for vLLM), the figures in ``frameworks.<F>.fit.per_op``
and a note in ``fit.gemm_<F>_<DTYPE>_refit``.
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

from simllm.cost import kernel_models as km, pricing, tables as T  # noqa: E402
from simllm.cost.calibration import calibration_for  # noqa: E402
from simllm.cost.kernels import GEMM_DISPATCH  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402

from _calibration_yaml import group_figures, write_sections  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework", choices=["vllm", "sglang", "trtllm"])
    ap.add_argument("dtype")
    ap.add_argument("--dispatch", choices=sorted(GEMM_DISPATCH), default=None)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    acc = load_accelerator(a.device)
    cal = calibration_for(acc).for_framework(a.framework)
    df = T.read_tables(DATA / a.gpu / "gemm", framework=a.framework)
    df = df[(df["kind"] == "gemm") & (df["dtype"].astype(str) == a.dtype)]
    if df.empty:
        raise SystemExit(f"no {a.dtype} gemm rows for {a.framework} under {DATA / a.gpu / 'gemm'}")
    before = pricing.price(df, acc, cal)
    new = km.fit_gemm_kind(df, acc, cal, iters=a.iters, max_rows=a.rows, dispatch=a.dispatch)
    kern, kept = dict(cal.kernels), {}
    t = df["latency_s"].to_numpy(float)
    for name in sorted(new, key=lambda n: n.count("/")):  # dtype sections before family sections
        parts = name.split("/")
        m = np.ones(len(df), bool)
        if len(parts) > 2:
            m = (df["kernel_source"].astype(str) == parts[2]).to_numpy()
        old = pricing.price(df[m], acc, replace(cal, kernels=kern))
        trial = {**kern, name: new[name]}
        fresh = pricing.price(df[m], acc, replace(cal, kernels=trial))
        lo, ln = (float(np.mean(np.abs(np.log(x / t[m])))) for x in (old, fresh))
        print(f"  {name:50s} {m.sum():6d} rows  mean|log| {lo:.4f} -> {ln:.4f} {'kept' if ln < lo else 'dropped'}",
              flush=True)
        if ln < lo:
            kern, kept[name] = trial, new[name]
    after = pricing.price(df, acc, replace(cal, kernels=kern))
    fb, fa = group_figures(df, before, "gemm"), group_figures(df, after, "gemm")
    for k in fa:
        print(f"{a.gpu} {a.framework} {k}: {fb[k]['median']:.3f}/{fb[k]['p90']:.3f} -> {fa[k]['median']:.3f}/"
              f"{fa[k]['p90']:.3f}")
    res = {"benchmark": "gemm_refit", "gpu": a.gpu, "framework": a.framework, "dtype": a.dtype,
           "dispatch": a.dispatch, "before": fb, "after": fa, "kept": sorted(kept), "wall_s": time.perf_counter() - t0}
    p = ROOT / "hardware" / "calibration" / f"{a.device}.yaml"
    if a.write and kept and p.is_file():
        write_sections(p, a.framework, kept, fa, f"gemm_{a.framework}_{a.dtype}_refit",
                       f"{a.gpu}/gemm/{a.framework} (newest), {a.dtype}",
                       "refit by benchmarks/gemm_refit.py" + (f" with the {a.dispatch} tile dispatch" if a.dispatch
                                                               else "") +
                       ": sections kept where they lower the mean |log error| over their rows; per_op figures of "
                       "calibrate check")
        print("wrote", p)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
