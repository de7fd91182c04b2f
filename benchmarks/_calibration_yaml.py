"""Shared by the refit benchmarks (``moe_refit.py``, ``attention_refit.py``): per-dtype error figures of one kernel
class and the merge of refitted sections into a shipped calibration file."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simllm.atomic import write_text
from simllm.cost.calibration import _round


def group_figures(df: pd.DataFrame, pred: np.ndarray, kind: str) -> dict:
    """``calibrate check``'s per_op entries (``<kind>/<dtype>``: n, median, p90, median_signed) of ``df``'s rows."""
    r = pred / df["latency_s"].to_numpy(float) - 1
    dts = df["dtype"].astype(str).to_numpy()
    out = {}
    for d in sorted(set(dts.tolist())):
        m = (dts == d) & np.isfinite(r)
        if m.any():
            e = np.abs(r[m])
            out[f"{kind}/{d}"] = {"n": int(m.sum()), "median": round(float(np.median(e)), 4),
                                  "p90": round(float(np.quantile(e, 0.9)), 4),
                                  "median_signed": round(float(np.median(r[m])), 4)}
    return out


def write_sections(path: Path, framework: str, kept: dict, per_op: dict, note_key: str, tables: str,
                   note: str) -> None:
    """Merge ``kept`` sections (rounded as the calibration files keep them) into ``frameworks.<framework>.kernels``
    of ``path`` (and the top-level ``kernels`` for vLLM, whose sections those are), ``per_op`` into
    ``frameworks.<framework>.fit.per_op``, and a note ``fit.<note_key>`` whose ``sections`` lists every section
    refitted so far; the header comments are kept, the file replaced atomically."""
    text = path.read_text()
    head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text) or {}
    kept = _round(kept)
    fw = data.setdefault("frameworks", {}).setdefault(framework, {})
    fw.setdefault("kernels", {}).update(kept)
    if framework == "vllm":
        data.setdefault("kernels", {}).update(kept)
    fw.setdefault("fit", {}).setdefault("per_op", {}).update(per_op)
    rec = data.setdefault("fit", {}).setdefault(note_key, {})
    rec.update({"tables": tables, "note": note, "sections": sorted(set(rec.get("sections", [])) | set(kept))})
    write_text(path, head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))


def refit_and_keep(*, df: pd.DataFrame, cal, acc, kind: str, new: dict, price, section_rows, gpu: str, framework: str,
                   device: str, write: bool, note_key: str, tables: str, note: str, t0: float, extra=None) -> dict:
    """The refit benchmarks' common tail: for each refitted section of ``new`` (dtype sections before kernel-family
    ones) keep it only where it lowers the mean |log(pred / measured)| over its rows (``section_rows(name)``: a row
    mask of ``df``), priced with ``price(frame, calibration)``; print the ``calibrate check`` figures of ``kind``
    before and after, write the kept sections with :func:`write_sections` when ``write``, and return (and print as
    the last line) the JSON record."""
    t = df["latency_s"].to_numpy(float)
    before = price(df, cal)
    kern, kept = dict(cal.kernels), {}
    for name in sorted(new, key=lambda n: n.count("/")):
        m = section_rows(name)
        if not m.any():
            continue
        old = price(df[m], replace(cal, kernels=kern))
        trial = {**kern, name: new[name]}
        fresh = price(df[m], replace(cal, kernels=trial))
        lo, ln = (float(np.mean(np.abs(np.log(x / t[m])))) for x in (old, fresh))
        print(f"  {name:60s} {int(m.sum()):6d} rows  mean|log| {lo:.4f} -> {ln:.4f} {'kept' if ln < lo else 'dropped'}",
              flush=True)
        if ln < lo:
            kern, kept[name] = trial, new[name]
    after = price(df, replace(cal, kernels=kern))
    fb, fa = group_figures(df, before, kind), group_figures(df, after, kind)
    for k in fa:
        print(f"{gpu} {framework} {k}: {fb[k]['median']:.3f}/{fb[k]['p90']:.3f} -> {fa[k]['median']:.3f}/"
              f"{fa[k]['p90']:.3f}")
    res = {"benchmark": f"{kind}_refit", "gpu": gpu, "framework": framework, **(extra or {}), "before": fb,
           "after": fa, "kept": sorted(kept), "wall_s": time.perf_counter() - t0}
    p = Path(__file__).resolve().parents[1] / "hardware" / "calibration" / f"{device}.yaml"
    if write and kept and p.is_file():
        write_sections(p, framework, kept, fa, note_key, tables, note)
        print("wrote", p)
    print(json.dumps(res))
    return res


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "calibration" / "aiconfigurator"


def refit_setup(doc: str, argv, family: str, kind: str, options=()):
    """The refit benchmarks' command line and inputs: ``GPU DEVICE FRAMEWORK`` (+ ``options``: (flags, kwargs)
    pairs for ``add_argument``) and ``--write``; returns (args, accelerator, the framework's shipped calibration,
    the framework's newest ``family`` tables of ``kind`` under ``../shared/data``, start time)."""
    import argparse
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from simllm.cost import tables
    from simllm.cost.calibration import calibration_for
    from simllm.hardware import load_accelerator

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework", choices=["vllm", "sglang", "trtllm"])
    for flags, kw in options:
        ap.add_argument(*flags, **kw)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    acc = load_accelerator(a.device)
    cal = calibration_for(acc).for_framework(a.framework)
    df = tables.read_tables(DATA / a.gpu / family, framework=a.framework)
    return a, acc, cal, df[df["kind"] == kind], t0
