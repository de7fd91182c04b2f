"""Refit the MLA per-head BMM sections (``mla_bmm/<dtype>``) of one shipped calibration and framework.

    python benchmarks/mla_bmm_refit.py GPU DEVICE FRAMEWORK [--iters N] [--write]
    python benchmarks/mla_bmm_refit.py l40s l40s sglang --write

Fits :func:`simllm.cost.kernel_models.fit_mla_bmm` (the GEMM tile model with ``num_heads`` GEMMs per call, the
collector's single operand copy in L2, the fp8 activation-quantization pass) on the framework's newest mla_bmm
tables of ``../shared/data``, from the shipped section, keeps a refitted section only where it lowers the mean
|log(pred / measured)| over that dtype's rows, and prints the ``calibrate check`` figures (median / p90 per
dtype) before and after. ``--write`` puts the kept sections in ``frameworks.<F>.kernels`` (and the top-level
``kernels`` for vLLM), the new figures in ``frameworks.<F>.fit.per_op`` and a note in ``fit.mla_bmm_<F>``.
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

from simllm.cost import kernel_models as km, tables as T  # noqa: E402
from simllm.cost.calibration import calibration_for  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402

from _calibration_yaml import group_figures, write_sections  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework", choices=["vllm", "sglang", "trtllm"])
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    acc = load_accelerator(a.device)
    cal = calibration_for(acc).for_framework(a.framework)
    df = T.read_tables(DATA / a.gpu / "mla_bmm", framework=a.framework)
    df = df[df["kind"] == "mla_bmm"]
    before = km.price_mla_bmm(df, acc, cal)
    new = km.fit_mla_bmm(df, acc, cal, iters=a.iters)
    kern, kept = dict(cal.kernels), {}
    t = df["latency_s"].to_numpy(float)
    dts = df["dtype"].astype(str).to_numpy()
    for name in sorted(new):
        m = dts == name.split("/")[1]
        old = km.price_mla_bmm(df[m], acc, replace(cal, kernels=kern))
        trial = {**kern, name: new[name]}
        fresh = km.price_mla_bmm(df[m], acc, replace(cal, kernels=trial))
        lo, ln = (float(np.mean(np.abs(np.log(x / t[m])))) for x in (old, fresh))
        print(f"  {name:30s} {m.sum():6d} rows  mean|log| {lo:.4f} -> {ln:.4f} {'kept' if ln < lo else 'dropped'}",
              flush=True)
        if ln < lo:
            kern, kept[name] = trial, new[name]
    after = km.price_mla_bmm(df, acc, replace(cal, kernels=kern))
    fb, fa = group_figures(df, before, "mla_bmm"), group_figures(df, after, "mla_bmm")
    for k in fa:
        print(f"{a.gpu} {a.framework} {k}: {fb[k]['median']:.3f}/{fb[k]['p90']:.3f} -> {fa[k]['median']:.3f}/"
              f"{fa[k]['p90']:.3f}")
    res = {"benchmark": "mla_bmm_refit", "gpu": a.gpu, "framework": a.framework, "kept": kept, "before": fb,
           "after": fa, "wall_s": time.perf_counter() - t0}
    p = ROOT / "hardware" / "calibration" / f"{a.device}.yaml"
    if a.write and kept and p.is_file():
        write_sections(p, a.framework, kept, fa, f"mla_bmm_{a.framework}", f"{a.gpu}/mla_bmm/{a.framework} (newest)",
                       "refit by benchmarks/mla_bmm_refit.py (heads as GEMMs of one call, the collector's one operand "
                       "copy in L2, the fp8 quantization pass): sections kept where they lower the mean |log error| "
                       "over their rows; per_op figures of calibrate check")
        print("wrote", p)
    print(json.dumps({k: v for k, v in res.items() if k != "kept"}))
    return res


if __name__ == "__main__":
    main()
