"""Measured collective kernels (AIConfigurator layout): read, price, fit, check.

Tables: ``<gpu>/comm/nccl/<version>/nccl_perf.parquet`` (``op_name``, ``nccl_dtype``,
``num_gpus``, ``message_size`` in *elements* of ``nccl_dtype``, ``latency`` ms) and
``<gpu>/comm/<framework>/<version>/custom_allreduce_perf.parquet`` (``allreduce_dtype``,
``num_gpus``, ``message_size`` in elements, ``backend`` ``*_graph`` / ``*_eager``; TensorRT-LLM's
tables have no backend: its all-reduce runs inside its CUDA-graph engine). Framework and version
come from the folder names (the tables' own columns are not always right).

One table form (``read_comm_table``): columns ``kind`` (``nccl_all_reduce``, ``nccl_all_gather``,
``nccl_reduce_scatter``, ``nccl_alltoall``, ``custom_allreduce``), ``dtype``, ``framework``,
``version``, ``gpu``, ``source``, ``latency_s`` and the native shape columns ``num_gpus``,
``message_size`` (elements), ``nbytes``, ``graph`` (bool).

Systems: the GPU folders map to node descriptors (``a100_sxm`` -> ``dgx-a100``, ``h100_sxm`` ->
``dgx-h100``); ``l40s`` has no NVLink: PCIe 4.0 x16 (NVIDIA L40S datasheet) between the GPUs,
link ``pcie4``, through the host (no switch, no NVLS).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from .collectives import (DTYPE_SIZE, NCCL_OPS, CustomARParams, IntraLink, NcclParams, custom_allreduce_time,
                          nccl_time)

NCCL_COLS = ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency")
CUSTOM_COLS = ("allreduce_dtype", "num_gpus", "message_size", "latency")
GPU_NODES = {"a100_sxm": "dgx-a100", "h100_sxm": "dgx-h100"}
# L40S: no NVLink; GDDR6 864 GB/s (NVIDIA L40S datasheet), PCIe 4.0 x16 to the host
L40S_HBM_BW = 864e9
FRAMEWORKS = ("vllm", "sglang", "trtllm")


# --------------------------------------------------------------------------- reading
def _parts(path: Path) -> tuple[str, str, str]:
    """(gpu, framework, version) from ``.../<gpu>/comm/<framework>/<version>/<table>``."""
    p = Path(path).resolve().parts
    try:
        i = len(p) - 1 - p[::-1].index("comm")
    except ValueError:
        return "unknown", "unknown", "unknown"
    gpu = p[i - 1] if i >= 1 else "unknown"
    fw = p[i + 1] if i + 1 < len(p) - 1 else "unknown"
    ver = p[i + 2] if i + 2 < len(p) - 1 else "unknown"
    return gpu, fw, ver


def _read_parquet(path):
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError("measured table not found", file=p)
    try:
        return pd.read_parquet(p)
    except Exception as e:  # pyarrow raises many kinds
        raise InputError(f"cannot read as parquet: {str(e).splitlines()[0]}", file=p) from None


def read_comm_table(path, df=None):
    """One NCCL or custom all-reduce table in the common form (see the module docstring)."""
    import pandas as pd

    path = Path(path)
    df = _read_parquet(path) if df is None else df
    gpu, fw, ver = _parts(path)
    cols = set(df.columns)
    if "nccl_dtype" in cols or "nccl" in path.name:
        need, dtc = NCCL_COLS, "nccl_dtype"
    elif "allreduce_dtype" in cols or "custom_allreduce" in path.name:
        need, dtc = CUSTOM_COLS, "allreduce_dtype"
    else:
        raise InputError("not a collective table: expected nccl_dtype or allreduce_dtype columns", file=path)
    for c in need:
        if c not in cols:
            raise InputError(f"missing column {c!r}", file=path, field=c)
    bad_dt = sorted(set(df[dtc].astype(str)) - set(DTYPE_SIZE))
    if bad_dt:
        raise InputError(f"unknown dtype {bad_dt[0]!r} (expected one of {', '.join(DTYPE_SIZE)})", file=path,
                         field=dtc)
    out = pd.DataFrame({"dtype": df[dtc].astype(str).to_numpy()})
    if dtc == "nccl_dtype":
        ops = df["op_name"].astype(str)
        bad = sorted(set(ops) - set(NCCL_OPS))
        if bad:
            raise InputError(f"unknown op_name {bad[0]!r} (expected one of {', '.join(NCCL_OPS)})", file=path,
                             field="op_name")
        out["kind"] = ops.map(NCCL_OPS).to_numpy()
        out["graph"] = True
        fw = "nccl"
    else:
        out["kind"] = "custom_allreduce"
        b = df["backend"].astype(str).str.lower() if "backend" in cols else pd.Series(["graph"] * len(df))
        bad = sorted({v for v in b if not (v.endswith("graph") or v.endswith("eager"))})
        if bad:
            raise InputError(f"unknown backend {bad[0]!r} (expected *_graph or *_eager)", file=path, field="backend")
        out["graph"] = b.str.endswith("graph").to_numpy()
    try:
        out["num_gpus"] = df["num_gpus"].astype(int).to_numpy()
        out["message_size"] = df["message_size"].astype(float).to_numpy()
        out["latency_s"] = df["latency"].astype(float).to_numpy() * 1e-3
    except (TypeError, ValueError) as e:
        raise InputError(f"non-numeric value: {e}", file=path, field="num_gpus") from None
    out["nbytes"] = out["message_size"] * out["dtype"].map(DTYPE_SIZE).astype(float)
    out["framework"], out["version"], out["gpu"], out["source"] = fw, ver, gpu, str(path)
    ok = np.isfinite(out["latency_s"]) & (out["latency_s"] > 0)
    return out[ok].reset_index(drop=True)


def _vkey(v: str):
    import re

    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"[.\-_]", v) if t) + ((2, ""),)


def newest(gpu_dir, framework: str, table: str) -> Path | None:
    """The newest version folder of ``framework`` under ``<gpu_dir>/comm`` holding ``table``."""
    base = Path(gpu_dir) / "comm" / framework
    if not base.is_dir():
        return None
    vers = sorted((d for d in base.iterdir() if (d / table).is_file()), key=lambda d: _vkey(d.name))
    return vers[-1] / table if vers else None


def gpu_tables(gpu_dir, frameworks: Iterable[str] = FRAMEWORKS):
    """{"nccl": df, "<framework>": df} of one GPU folder (newest version of each)."""
    out = {}
    p = newest(gpu_dir, "nccl", "nccl_perf.parquet")
    if p is not None:
        out["nccl"] = read_comm_table(p)
    for fw in frameworks:
        p = newest(gpu_dir, fw, "custom_allreduce_perf.parquet")
        if p is not None:
            out[fw] = read_comm_table(p)
    return out


def system_link(gpu: str) -> IntraLink:
    """The :class:`IntraLink` of an AIConfigurator GPU folder name."""
    from ..hardware import load_link, load_node

    if gpu in GPU_NODES:
        return IntraLink.from_node(load_node(GPU_NODES[gpu]))
    if gpu == "l40s":
        link = load_link("pcie4")
        return IntraLink(name="pcie4", bw=link.bw, alpha=link.alpha, switched=False, nvls=False, hbm_bw=L40S_HBM_BW)
    raise InputError(f"no system description for GPU folder {gpu!r} (known: a100_sxm, h100_sxm, l40s)", field="gpu")


# --------------------------------------------------------------------------- pricing
def price(df, link: IntraLink, nccl: NcclParams, custom: CustomARParams | None = None) -> np.ndarray:
    """Predicted seconds of every row of a common-form comm table."""
    out = np.full(len(df), np.nan)
    kinds = df["kind"].to_numpy()
    S, n = df["nbytes"].to_numpy(float), df["num_gpus"].to_numpy(float)
    for op, kind in NCCL_OPS.items():
        m = kinds == kind
        if m.any():
            out[m] = nccl_time(op, S[m], n[m], link, nccl)
    m = kinds == "custom_allreduce"
    if m.any():
        out[m] = custom_allreduce_time(S[m], n[m], link, custom or CustomARParams(), nccl,
                                       graph=df["graph"].to_numpy(bool)[m])
    return out


# --------------------------------------------------------------------------- fitting
def _loss(pred, t):
    v = np.mean(np.abs(np.log(pred / t)))
    return v if np.isfinite(v) else np.inf


def _nm(f, x0, iters, step=0.15):
    from .fit import nelder_mead

    x, fx = nelder_mead(f, x0, iters=iters, step=step)
    for _ in range(2):  # restarts: the simplex collapses early on piecewise (min-of) models
        x, fx = nelder_mead(f, x, iters=iters, step=step / 2)
    return x


def _nccl_ok(x) -> bool:
    return (0 <= x[0] < 200 and all(0 <= a < 200 for a in (x[1], x[3], x[5], x[7]))
            and all(0.01 < e <= 1.5 for e in (x[2], x[4], x[6], x[8])) and 0 <= x[9] <= 4 and 0.01 < x[10] <= 1.5)


def fit_nccl(groups: Sequence[tuple], start: NcclParams | None = None, iters: int = 1500) -> NcclParams:
    """Fit one :class:`NcclParams` on ``[(df, link), ...]`` (NCCL rows of one or more systems)."""
    groups = [(d[d["kind"].str.startswith("nccl_")], l) for d, l in groups]
    groups = [(d, l) for d, l in groups if len(d)]
    if not groups:
        raise InputError("no NCCL rows to fit")
    t = np.concatenate([d["latency_s"].to_numpy() for d, _ in groups])

    def f(x):
        if not _nccl_ok(x):
            return np.inf
        p = NcclParams.from_vector(x)
        return _loss(np.concatenate([price(d, l, p) for d, l in groups]), t)

    return NcclParams.from_vector(_nm(f, (start or NcclParams()).vector(), iters))


def _custom_ok(x) -> bool:
    return 0 <= x[0] < 100 and 0 <= x[1] < 1000 and 0 <= x[2] < 200 and 0.01 < x[3] <= 1.5 and 0.05 < x[4] <= 1.5


def fit_custom(groups: Sequence[tuple], start: CustomARParams | None = None, iters: int = 800) -> CustomARParams:
    """Fit one framework's :class:`CustomARParams` on ``[(df, link, nccl_params), ...]``."""
    groups = [(d[d["kind"] == "custom_allreduce"], l, p) for d, l, p in groups]
    groups = [g for g in groups if len(g[0])]
    if not groups:
        raise InputError("no custom all-reduce rows to fit")
    t = np.concatenate([d["latency_s"].to_numpy() for d, _, _ in groups])

    def f(x):
        if not _custom_ok(x):
            return np.inf
        c = CustomARParams.from_vector(x)
        return _loss(np.concatenate([price(d, l, p, c) for d, l, p in groups]), t)

    return CustomARParams.from_vector(_nm(f, (start or CustomARParams()).vector(), iters))


# --------------------------------------------------------------------------- errors
def group_errors(df, pred) -> dict:
    """``{"<kind>/<dtype>": {n, median, p90, median_signed}}`` of |pred/measured - 1|."""
    r = np.asarray(pred) / df["latency_s"].to_numpy() - 1.0
    out = {}
    keys = (df["kind"] + "/" + df["dtype"]).to_numpy()
    for k in sorted(set(keys)):
        e = r[keys == k]
        out[k] = {"n": int(e.size), "median": float(np.median(np.abs(e))), "p90": float(np.percentile(np.abs(e), 90)),
                  "median_signed": float(np.median(e))}
    return out
