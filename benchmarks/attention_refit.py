"""Refit the attention / MLA kernel sections of one shipped calibration and framework, from their shipped values.

    python benchmarks/attention_refit.py GPU DEVICE FRAMEWORK KIND [--restarts N] [--rows N] [--only K,..] [--qo-flat]
        [--write]
    python benchmarks/attention_refit.py h100_sxm h100-sxm sglang generation_mla --write

KIND: context_attention, generation_attention, context_mla or generation_mla. For every (dtype, kernel family)
group of the framework's newest table of that kind in ``../shared/data`` (families as
:func:`simllm.cost.kernel_models._attn_groups` makes them), minimises the mean |log(pred / measured)| of a seeded
subsample of ``--rows`` rows over the section's roofline parameters with Nelder-Mead in a logistic transform of
their bounds (a parameter on a bound no longer freezes the simplex), from the shipped values and from
``--restarts`` perturbed starts. A dtype served by one family keeps its generic section (the one the serving step
reads). ``--only K1,K2`` refits just those keys, in the sections the rows read now, each on all of its rows
(``--only window_tile``: the sliding-window excess alone, the serving step's sections otherwise unchanged). A
refitted section is kept only where it lowers the mean |log error| over all of its rows. Prints the
``calibrate check`` figures before and after (``--qo-flat``: decode sections price the query / output bytes at the
device-wide rate, the section key ``qo_flat``; the sections' own kernel-path keys, FA2's ``combine_s`` /
``swap_copy_s`` and ``reread_gbps``, join the fit where their rows are); ``--write`` puts the kept sections in
``frameworks.<F>.kernels`` (and the top-level ``kernels`` for vLLM), the new figures in
``frameworks.<F>.fit.per_op`` and a note in ``fit.<KIND>_<F>_refit``.
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

from simllm.cost import kernel_models as km, pricing, tables  # noqa: E402
from simllm.cost.calibration import _round, calibration_for  # noqa: E402
from simllm.cost.fit import nelder_mead  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402

from _calibration_yaml import group_figures, write_sections  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"
KINDS = ("context_attention", "generation_attention", "context_mla", "generation_mla")


def _keys(kind: str) -> list[str]:
    return km.roof_keys(kind)


def _jobs(df, kind, fw, cal, kern, only):
    """(dtype, target section, row mask, shipped values) per section to refit: each kernel family its own section
    (a large family gets one), or with ``only`` (a subset of keys) the section every row reads now, refitted on
    all of its rows together (the serving step keeps reading the same sections)."""
    jobs = {}
    dts = km._dtype_key(df)
    for d, src, m in km._attn_groups(df, kind, fw):
        if km._base_dtype(d) not in km.ATTN_DTYPES:
            continue
        shipped, key = km._sec(replace(cal, kernels=kern), kind, d, src)
        own = src and m.sum() >= km.MIN_GROUP and (dts == d).sum() > m.sum()
        target = (key or f"{kind}/{d}") if only else (f"{kind}/{d}/{src}" if own else f"{kind}/{d}")
        if target in jobs:
            jobs[target] = (d, jobs[target][1] | m, shipped)
        else:
            jobs[target] = (d, m, shipped)
    return [(d, t, m, sh) for t, (d, m, sh) in jobs.items()]


def refit(gpu, device, fw, kind, restarts=6, rows=8000, iters=1500, seed=0, only=None, qo_flat=False):
    acc = load_accelerator(device)
    cal = calibration_for(acc).for_framework(fw)
    df = tables.read_tables(DATA / gpu / ("mla" if "mla" in kind else "attention") / fw, fw)
    df = df[df["kind"] == kind]
    t_all = df["latency_s"].to_numpy(float)
    before = pricing.price(df, acc, cal)
    keys0 = _keys(kind)
    rng = np.random.default_rng(seed)
    kern = dict(cal.kernels)
    kept = {}
    for d, target, m, shipped in _jobs(df, kind, fw, cal, kern, only):
        sub = df[m].iloc[km._subsample(int(m.sum()), rows, seed)]
        keys = keys0 + list(km.window_keys(sub, kind)) + list(km.reread_keys(sub, kind, fw)) + \
            list(km.fa2_keys(sub, kind))
        if only:
            keys = [k for k in keys if k in only]
            if not keys:
                continue
        lo = np.array([km._BOUNDS[k][0] for k in keys])
        hi = np.array([km._BOUNDS[k][1] for k in keys])
        t = sub["latency_s"].to_numpy(float)
        shp = km._shapes(sub, kind, fw)
        hd = km._col(sub, "head_dim", km.HD_REF)
        peak = km.strict_peak(acc, km.ATTN_DTYPES[km._base_dtype(d)])
        s0 = {**km.ROOF_DEFAULT, **shipped}
        if "window_tile" in keys and not s0.get("window_tile", 0.0):
            s0["window_tile"] = 64.0  # off the bound (half a 128-token KV tile)
        if qo_flat and kind in ("generation_mla", "generation_attention"):
            s0["qo_flat"] = 1.0  # the query / output bytes at the device-wide rate (kernel_models._roof's flat)
        if "combine_s" in keys and not s0.get("combine_s", 0.0):
            s0["combine_s"] = 4e-6  # a start: one more kernel launch (kernel_models.fa2_combine_time)
        if "swap_copy_s" in keys and not s0.get("swap_copy_s", 0.0):
            s0["swap_copy_s"] = 5e-6  # a start: two copy kernels (kernel_models.fa2_swap_copies)
        if "reread_gbps" in keys and not s0.get("reread_gbps", 0.0):
            s0["reread_gbps"] = 40.0  # a start: 5.3 TB/s over H100's 132 SMs (kernel_models.reread_time)

        def to_z(s):
            u = np.clip((np.array([s[k] for k in keys], float) - lo) / (hi - lo), 1e-4, 1 - 1e-4)
            return np.log(u / (1 - u))

        def from_z(z):
            return dict(s0, **{k: float(v) for k, v in zip(keys, lo + (hi - lo) / (1 + np.exp(-z)))})

        def f(z):
            a, b = km._roof_predict(shp, acc, peak, km._hd_scaled(from_z(z), hd, kind), hd=hd)
            return km._loss(a + b, t)

        z0 = to_z(s0)
        best, bz = f(z0), z0
        for r in range(restarts):
            start = bz if r % 2 == 0 else z0 + rng.normal(0.0, 1.0, len(z0))
            z, fz = nelder_mead(f, start, iters=iters, step=0.6)
            if fz < best:
                best, bz = fz, z
        sec = _round(from_z(bz))
        if only:  # the section as shipped with the refitted keys only
            sec = {**shipped, **{k: sec[k] for k in keys}}
        trial = {**kern, target: sec}
        sel = m
        old = pricing.price(df[sel], acc, replace(cal, kernels=kern))
        new = pricing.price(df[sel], acc, replace(cal, kernels=trial))
        lo_, ln_ = (float(np.mean(np.abs(np.log(x / t_all[sel])))) for x in (old, new))
        print(f"  {target:60s} {int(sel.sum()):6d} rows  mean|log| {lo_:.4f} -> {ln_:.4f} "
              f"{'kept' if ln_ < lo_ else 'dropped'}", flush=True)
        if ln_ < lo_:
            kern, kept[target] = trial, sec
    after = pricing.price(df, acc, replace(cal, kernels=kern))
    return kept, group_figures(df, before, kind), group_figures(df, after, kind)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework", choices=["vllm", "sglang", "trtllm"])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--restarts", type=int, default=6)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--only", default="", help="comma-separated keys: refit just these, in the sections the rows "
                                                "read now (e.g. window_tile)")
    ap.add_argument("--qo-flat", action="store_true", help="decode sections: the query and output bytes stream at the "
                                                            "device-wide rate, not the per-CTA one (section key qo_flat)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    only = tuple(k for k in a.only.split(",") if k)
    allowed = set(_keys(a.kind)) | ({"window_tile"} if a.kind in ("generation_attention", "context_attention")
                                    else set())
    bad = sorted(set(only) - allowed)
    if bad:  # a key this kind's sections do not have would be accepted and never fitted
        ap.error(f"--only: {bad[0]!r} is not a {a.kind} key (expected one of {', '.join(sorted(allowed))})")
    if a.qo_flat and a.kind not in ("generation_attention", "generation_mla"):
        ap.error(f"--qo-flat: decode sections only (a {a.kind} section has no bulk query / output load)")
    t0 = time.perf_counter()
    kept, fb, fa = refit(a.gpu, a.device, a.framework, a.kind, restarts=a.restarts, rows=a.rows, only=only,
                         qo_flat=a.qo_flat)
    for k in fa:
        print(f"{a.gpu} {a.framework} {k}: {fb[k]['median']:.4f}/{fb[k]['p90']:.4f} -> {fa[k]['median']:.4f}/"
              f"{fa[k]['p90']:.4f}")
    p = ROOT / "hardware" / "calibration" / f"{a.device}.yaml"
    if a.write and kept and p.is_file():
        family = "mla" if "mla" in a.kind else "attention"
        note_key = "_".join((a.kind, a.framework) + only + ("refit",))
        write_sections(p, a.framework, kept, fa, note_key,
                       f"{a.gpu}/{family}/{a.framework} (newest), {a.kind}, {a.rows} rows per group",
                       (f"only {', '.join(only)} refitted (--only), the sections' other values as shipped; " if only
                        else "") +
                       "sections refitted from their shipped values by benchmarks/attention_refit.py (bounded "
                       "Nelder-Mead with restarts), kept where the mean |log error| over their rows fell; per_op "
                       "figures of calibrate check")
        print("wrote", p)
    res = {"benchmark": "attention_refit", "gpu": a.gpu, "framework": a.framework, "kind": a.kind, "before": fb,
           "after": fa, "kept": sorted(kept), "wall_s": time.perf_counter() - t0}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
