"""Fit the MoE layer kernel (``simllm.cost.moe_layer``) on AIConfigurator moe tables and print errors.

    python benchmarks/moe_calibration.py GPU DEVICE FRAMEWORK [--write] [--rows N]
    python benchmarks/moe_calibration.py a100_sxm a100-sxm-80gb vllm --write

Fits one parameter set per moe dtype on a seeded subsample (``--rows`` per dtype, default 400),
then checks on up to 20,000 rows: median / p90 |pred/meas - 1| per dtype, per EP size and per
distribution. ``--write`` merges ``kernels.moe/<dtype>`` (and ``frameworks.<fw>.kernels``) into
hardware/calibration/DEVICE.yaml when it exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simllm.cost import moe_layer as M, tables as T  # noqa: E402
from simllm.cost.calibration import calibration_for  # noqa: E402
from simllm.hardware import load_accelerator  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gpu")
    ap.add_argument("device")
    ap.add_argument("framework")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    acc = load_accelerator(a.device)
    cal = calibration_for(acc)
    df = T.read_tables(DATA / a.gpu / "moe", framework=a.framework)
    df = df[df["kind"] == "moe"]
    k = M.fit_frame(df, acc, cal, max_rows=a.rows, iters=200)
    c2 = replace(cal, kernels={**cal.kernels, **k})
    ev = df.sample(min(20000, len(df)), random_state=2)
    ev = ev.assign(pred=M.price_frame(ev, acc, c2))
    ev["r"] = ev["pred"] / ev["latency_s"] - 1
    res = {"gpu": a.gpu, "framework": a.framework, "params": k, "per_dtype": {}, "per_ep": {}, "per_distribution": {}}
    for col, key in (("dtype", "per_dtype"), ("moe_ep_size", "per_ep"), ("distribution", "per_distribution")):
        for v, g in ev.groupby(col):
            e = np.abs(g["r"].to_numpy())
            res[key][str(v)] = {"n": int(e.size), "median": round(float(np.median(e)), 4),
                                "p90": round(float(np.percentile(e, 90)), 4)}
    print(json.dumps(res, indent=1))
    p = ROOT / "hardware" / "calibration" / f"{a.device}.yaml"
    if a.write and p.is_file():
        text = p.read_text()
        head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
        data = yaml.safe_load(text) or {}
        data.setdefault("kernels", {}).update(k)
        data.setdefault("frameworks", {}).setdefault(a.framework, {}).setdefault("kernels", {}).update(k)
        data.setdefault("fit", {})[f"moe_{a.framework}"] = {"tables": f"{a.gpu}/moe/{a.framework} (newest)",
                                                            "per_dtype": res["per_dtype"], "per_ep": res["per_ep"]}
        p.write_text(head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))
        print("wrote", p)


if __name__ == "__main__":
    main()
