"""Fit the collective kernels (NCCL per op, frameworks' custom all-reduce) on the AIConfigurator
comm tables of ../shared/data and print their errors and the leave-one-GPU-out figure.

    python benchmarks/comm_calibration.py            # fit, print (about 2 min on 2 cores)
    python benchmarks/comm_calibration.py --write    # also merge the sections into the device files

``--write`` merges ``kernels.nccl_*``, ``kernels.custom_allreduce`` (vLLM's, the default) and
``frameworks.<fw>.kernels.custom_allreduce`` into hardware/calibration/<device>.yaml for each
device whose file exists (a100-sxm-80gb, h100-sxm, l40s), keeping every other section. A100 and
L40S have no NVLS: their files take NVLS's two parameters from the H100 fit (the only NVLS system
measured), the rest from their own tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simllm.cost import comm_tables as T  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "calibration" / "aiconfigurator"
DEVICES = {"a100_sxm": "a100-sxm-80gb", "h100_sxm": "h100-sxm", "l40s": "l40s"}


def merge_into(path: Path, sec: dict, note: str) -> None:
    text = path.read_text()
    head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text) or {}
    data.setdefault("kernels", {}).update(sec["kernels"])
    fws = data.setdefault("frameworks", {})
    for fw, v in sec["frameworks"].items():
        fws.setdefault(fw, {}).setdefault("kernels", {}).update(v["kernels"])
    groups = [v for kind in sec["fit"].values() for v in kind.values()]
    rows = sum(g["rows"] for g in groups)
    data.setdefault("fit", {})["comm_kernels"] = {
        "tables": f"{DATA.name}/<gpu>/comm (newest NCCL and framework versions)", "note": note,
        "rows": rows, "median_abs_rel_error": round(sum(g["median_abs_rel_error"] * g["rows"] for g in groups) / rows, 4),
        "p90_abs_rel_error": max(g["p90_abs_rel_error"] for g in groups),
        "summary": "row-weighted median of the groups; p90 is the worst group", "errors": sec["fit"]}
    path.write_text(head + yaml.safe_dump(_round(data), sort_keys=False, default_flow_style=None, width=110))


def _round(o):
    if isinstance(o, float):
        return float(f"{o:.6g}")
    if isinstance(o, dict):
        return {k: _round(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_round(v) for v in o]
    return o


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--no-loo", action="store_true")
    a = ap.parse_args()
    h = T.fit_sections([DATA / "h100_sxm"])
    secs = {"h100_sxm": h}
    for g in ("a100_sxm", "l40s"):
        secs[g] = T.fit_sections([DATA / g], start=h["kernels"])
    print("comm kinds, fitted on each GPU's own tables: median / p90 |pred/meas - 1|")
    for g, s in secs.items():
        for grp, v in T.sections_errors(DATA, s, [g])[g].items():
            print(f"  {g:9s} {grp:32s} n={v['n']:4d}  {v['median'] * 100:6.1f}% / {v['p90'] * 100:6.1f}%")
    if not a.no_loo:
        T.print_leave_one_gpu_out(DATA)
    if a.write:
        for g, dev in DEVICES.items():
            p = ROOT / "hardware" / "calibration" / f"{dev}.yaml"
            if p.is_file():
                note = ("fitted on this GPU's tables" + ("" if g == "h100_sxm" else
                        "; nvls_alpha/nvls_eff from the H100 fit (no NVLS on this system)"))
                merge_into(p, secs[g], note)
                print("wrote", p)


if __name__ == "__main__":
    main()
