"""Fitting and checking the calibration against measured kernel tables (Vidur format).

GEMM tables (``*_mlp.csv``): ops ``attn_pre_proj`` (fused QKV), ``attn_post_proj``, ``mlp_up_proj``
(fused gate+up when ``use_gated_mlp``), ``mlp_down_proj``; shapes per tensor-parallel rank as in
Vidur's profiler, fp16; the measured ``time_stats.<op>.median`` (ms) is the target.
Collective tables: ``collective`` in {all_reduce, send_recv}, ``size`` bytes, ``num_workers``,
``devices_per_node``.

Fitting is scipy-free: a Nelder-Mead simplex on the mean absolute log error (robust to the
few outliers), in numpy. Errors are reported as |predicted / measured - 1|.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from . import collectives as C
from .calibration import Calibration, CommParams, GemmParams
from .kernels import gemm_time

ALPHA_MAX = 2.0  # latency multipliers stay near the descriptors (small-message data are noisy)
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
_SHAPE_COLS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
               "num_tensor_parallel_workers")
_COMM_COLS = ("size", "num_workers", "devices_per_node", "collective")


# --------------------------------------------------------------------------- reading
def _read(path) -> "object":
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError("measured table not found", file=p)
    try:
        return pd.read_csv(p)
    except Exception as e:  # pandas raises many kinds
        raise InputError(f"cannot read as CSV: {str(e).splitlines()[0]}", file=p) from None


def table_kind(df) -> str:
    cols = set(df.columns)
    if set(_COMM_COLS) <= cols:
        return "collective"
    if set(_SHAPE_COLS) <= cols and any(f"time_stats.{op}.median" in cols for op in GEMM_OPS):
        return "gemm"
    return "unknown"


def gemm_rows(paths: Sequence) -> dict:
    """Arrays M, K, N, t (s), op, source over all GEMM rows of the given tables."""
    out = {k: [] for k in ("M", "K", "N", "t", "op", "src")}
    for path in paths:
        df = _read(path)
        if table_kind(df) != "gemm":
            missing = [c for c in _SHAPE_COLS if c not in df.columns]
            raise InputError("not a GEMM table: needs columns " + ", ".join(_SHAPE_COLS) +
                             " and time_stats.<op>.median" + (f" (missing {missing[0]})" if missing else ""),
                             file=path)
        H = df["n_embd"].to_numpy(float)
        hd = H / df["n_head"].to_numpy(float)
        kv = df["n_kv_head"].to_numpy(float)
        F = df["n_expanded_embd"].to_numpy(float)
        tp = df["num_tensor_parallel_workers"].to_numpy(float)
        T = df["num_tokens"].to_numpy(float)
        gated = np.array([str(v).strip().lower() in ("true", "1") for v in df["use_gated_mlp"]])
        k = np.where(gated, 2.0, 1.0)
        shapes = {"attn_pre_proj": (H, np.floor((H + 2 * kv * hd) / tp)),
                  "attn_post_proj": (np.floor(H / tp), H),
                  "mlp_up_proj": (H, np.floor(k * F / tp)),
                  "mlp_down_proj": (np.floor(F / tp), H)}
        for op, (Kd, Nd) in shapes.items():
            col = f"time_stats.{op}.median"
            if col not in df.columns:
                continue
            t = df[col].to_numpy(float) * 1e-3
            ok = np.isfinite(t) & (t > 0)
            out["M"].append(T[ok]); out["K"].append(Kd[ok]); out["N"].append(Nd[ok]); out["t"].append(t[ok])
            out["op"].append(np.full(ok.sum(), op, dtype=object))
            out["src"].append(np.full(ok.sum(), Path(path).name, dtype=object))
    if not out["t"]:
        raise InputError("no GEMM rows in the given tables")
    return {k: np.concatenate(v) for k, v in out.items()}


EW_OPS = ("input_layernorm", "mlp_act", "add")


def elementwise_rows(paths: Sequence) -> dict:
    """Bytes moved and measured time of the memory-bound elementwise ops of GEMM tables:
    RMSNorm (read + write T x H), activation (read k x I/tp, write I/tp per token, k = 2 gated),
    residual add (two reads, one write of T x H); fp16."""
    out = {k: [] for k in ("bytes", "t", "op")}
    for path in paths:
        df = _read(path)
        if table_kind(df) != "gemm":
            continue
        H = df["n_embd"].to_numpy(float)
        F = df["n_expanded_embd"].to_numpy(float)
        tp = df["num_tensor_parallel_workers"].to_numpy(float)
        T = df["num_tokens"].to_numpy(float)
        gated = np.array([str(v).strip().lower() in ("true", "1") for v in df["use_gated_mlp"]])
        k = np.where(gated, 2.0, 1.0)
        nbytes = {"input_layernorm": 2 * T * H * 2, "mlp_act": T * (k + 1) * np.floor(F / tp) * 2,
                  "add": 3 * T * H * 2}
        for op, by in nbytes.items():
            col = f"time_stats.{op}.median"
            if col not in df.columns:
                continue
            t = df[col].to_numpy(float) * 1e-3
            ok = np.isfinite(t) & (t > 0)
            out["bytes"].append(by[ok]); out["t"].append(t[ok]); out["op"].append(np.full(ok.sum(), op, dtype=object))
    if not out["t"]:
        return {"bytes": np.zeros(0), "t": np.zeros(0), "op": np.zeros(0, dtype=object)}
    return {k: np.concatenate(v) for k, v in out.items()}


def predict_elementwise(rows: dict, acc, ep) -> np.ndarray:
    from .kernels import elementwise_time

    return elementwise_time(rows["bytes"], bw=acc.hbm_bw, ep=ep)


def fit_elementwise(rows: dict, acc, start=None, iters: int = 400):
    from .calibration import ElementwiseParams

    start = start or ElementwiseParams()

    def f(x):
        if not (0.01 < x[0] <= 1.2 and 0 <= x[1] < 1000):
            return np.inf
        return _loss(predict_elementwise(rows, acc, ElementwiseParams(x[0], x[1] * 1e-6)), rows["t"])

    x, _ = nelder_mead(f, [start.memory_efficiency, start.kernel_overhead_s * 1e6], iters=iters, step=0.1)
    return ElementwiseParams(float(x[0]), float(x[1]) * 1e-6)


def comm_rows(paths: Sequence) -> dict:
    out = {k: [] for k in ("size", "n", "g", "t", "op")}
    for path in paths:
        df = _read(path)
        if table_kind(df) != "collective":
            raise InputError("not a collective table: needs columns " + ", ".join(_COMM_COLS) +
                             " and time_stats.<collective>.median", file=path)
        for op, grp in df.groupby("collective"):
            col = f"time_stats.{op}.median"
            if col not in grp.columns:
                raise InputError(f"missing column {col}", file=path)
            t = grp[col].to_numpy(float) * 1e-3
            ok = np.isfinite(t) & (t > 0)
            out["size"].append(grp["size"].to_numpy(float)[ok])
            out["n"].append(grp["num_workers"].to_numpy(int)[ok])
            out["g"].append(grp["devices_per_node"].to_numpy(int)[ok])
            out["t"].append(t[ok])
            out["op"].append(np.full(ok.sum(), str(op), dtype=object))
    if not out["t"]:
        raise InputError("no collective rows in the given tables")
    return {k: np.concatenate(v) for k, v in out.items()}


# --------------------------------------------------------------------------- predicting
def predict_gemm(rows: dict, acc, cal: Calibration, gp: GemmParams | None = None) -> np.ndarray:
    gp = gp or cal.gemm
    return gemm_time(rows["M"], rows["K"], rows["N"], peak=acc.peak("fp16"), bw=acc.hbm_bw,
                     cus=int(acc.compute_units.value), gp=gp)


def constant_efficiency_baseline(rows: dict, acc, iters: int = 600) -> np.ndarray:
    """The baseline the model must beat: max(F/(peak e_c), B/(bw e_m)) + o, three constants fitted."""
    M, K, N, t = rows["M"], rows["K"], rows["N"], rows["t"]
    fl = 2 * M * K * N
    by = 2 * (M * K + K * N + M * N)
    P, B = acc.peak("fp16"), acc.hbm_bw

    def f(x):
        return np.maximum(fl / (P * x[0]), by / (B * x[1])) + x[2] * 1e-6

    x, _ = nelder_mead(lambda x: _loss(f(x), t) if min(x[:2]) > 0 else np.inf, [0.7, 0.7, 5.0], iters=iters)
    return f(x)


def predict_comm(rows: dict, node, cal: Calibration, comm: CommParams | None = None) -> np.ndarray:
    links = C.CommLinks.from_node(node, comm or cal.comm)
    out = np.empty(len(rows["t"]))
    for i, (s, n, g, op) in enumerate(zip(rows["size"], rows["n"], rows["g"], rows["op"])):
        if op == "send_recv":
            out[i] = C.p2p(s, links, cross_node=g < n)
        else:
            out[i] = C.collective_time(op, s, int(n), links, int(g))
    return out


# --------------------------------------------------------------------------- fitting
def _loss(pred, t):
    r = np.log(pred / t)
    v = np.mean(np.abs(r))
    return v if np.isfinite(v) else np.inf


def nelder_mead(f: Callable, x0, iters: int = 2000, step: float = 0.1, tol: float = 1e-10):
    """Minimise ``f`` from ``x0`` (numpy only)."""
    x0 = np.asarray(x0, float)
    n = len(x0)
    S = np.array([x0] + [x0 + step * np.eye(n)[i] * max(abs(x0[i]), 1e-3) for i in range(n)])
    F = np.array([f(s) for s in S])
    for it in range(iters):
        o = np.argsort(F)
        S, F = S[o], F[o]
        c = S[:-1].mean(0)
        xr = c + (c - S[-1])
        fr = f(xr)
        if fr < F[0]:
            xe = c + 2 * (c - S[-1])
            fe = f(xe)
            S[-1], F[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < F[-2]:
            S[-1], F[-1] = xr, fr
        else:
            xc = c + 0.5 * (S[-1] - c)
            fc = f(xc)
            if fc < F[-1]:
                S[-1], F[-1] = xc, fc
            else:
                S[1:] = S[0] + 0.5 * (S[1:] - S[0])
                F[1:] = [f(s) for s in S[1:]]
        # converged once every vertex is finite and they agree (an infeasible vertex, inf, is not converged;
        # inf - inf would warn)
        if it > 100 and np.isfinite(F).all() and np.ptp(F) < tol:
            break
    i = int(np.argmin(F))
    return S[i], float(F[i])


def _gemm_valid(x, ntiles):
    em, o, kh, p, a = x[:5]
    effs = x[5:5 + ntiles]
    q = x[5 + ntiles]
    return (0.05 < em <= 1.2 and 0 <= o < 100 and 0 <= kh < 50 and 1.0 <= p <= 30 and 0 <= a <= 1
            and all(0.05 < e <= 1.0 for e in effs) and 1.0 <= q <= 40)


def fit_gemm(rows: dict, acc, start: GemmParams | None = None, iters: int = 3000) -> GemmParams:
    start = start or GemmParams()
    t = rows["t"]

    def f(x):
        if not _gemm_valid(x, len(start.tiles)):
            return np.inf
        return _loss(predict_gemm(rows, acc, None, GemmParams.from_vector(x, start.tiles)), t)

    x, _ = nelder_mead(f, start.vector(), iters=iters, step=0.05)
    return GemmParams.from_vector(x, start.tiles)


def _comm_vec(c: CommParams):
    return [c.scale_up_efficiency, c.scale_out_efficiency, c.scale_out_node_efficiency, c.collective_efficiency,
            c.scale_up_alpha_scale, c.scale_out_alpha_scale, c.launch_overhead_s * 1e6, c.p2p_overhead_s * 1e6]


def _comm_from(x) -> CommParams:
    return CommParams(scale_up_efficiency=float(x[0]), scale_out_efficiency=float(x[1]),
                      scale_out_node_efficiency=float(x[2]), collective_efficiency=float(x[3]),
                      scale_up_alpha_scale=float(x[4]), scale_out_alpha_scale=float(x[5]),
                      launch_overhead_s=float(x[6]) * 1e-6, p2p_overhead_s=float(x[7]) * 1e-6)


def fit_comm(rows: dict, node, start: CommParams | None = None, iters: int = 1500) -> CommParams:
    """Fit the collective parameters. Link descriptors' own ``efficiency`` fields are ignored
    while fitting (the fit measures them)."""
    start = replace(start or CommParams(), scale_up_alpha_scale=min((start or CommParams()).scale_up_alpha_scale, ALPHA_MAX),
                    scale_out_alpha_scale=min((start or CommParams()).scale_out_alpha_scale, ALPHA_MAX))
    node = _node_without_link_eff(node)
    t = rows["t"]

    def f(x):
        if not (0.01 < x[0] <= 1.0 and 0.01 < x[1] <= 1.0 and 0.001 < x[2] <= 1.0 and 0.05 < x[3] <= 1.0
                and 0 <= x[4] <= ALPHA_MAX and 0 <= x[5] <= ALPHA_MAX and 0 <= x[6] < 1000 and 0 <= x[7] < 1000):
            return np.inf
        return _loss(predict_comm(rows, node, None, _comm_from(x)), t)

    x, _ = nelder_mead(f, _comm_vec(start), iters=iters, step=0.2)
    return _comm_from(x)


def _node_without_link_eff(node):
    from ..hardware import Node

    up = node.scale_up_link.model_copy(update={"efficiency": None})
    out = node.scale_out_link.model_copy(update={"efficiency": None}) if node.scale_out_link else None
    return Node(node.spec, node.accelerator, up, out, node.path)


# --------------------------------------------------------------------------- errors
def error_stats(pred, t, groups=None) -> dict:
    e = np.abs(np.asarray(pred) / np.asarray(t) - 1.0)
    out = {"n": int(e.size), "median_abs_rel_error": float(np.median(e)),
           "p90_abs_rel_error": float(np.percentile(e, 90))}
    if groups is not None:
        g = np.asarray(groups)
        out["per_op"] = {str(k): {"n": int((g == k).sum()), "median": float(np.median(e[g == k])),
                                  "p90": float(np.percentile(e[g == k], 90))} for k in sorted(set(g.tolist()))}
    return out


def default_node_for(acc):
    """The first node descriptor built from ``acc`` (collective tables need links)."""
    from ..hardware import list_hardware, load_node

    for name in list_hardware()["nodes"]:
        try:
            node = load_node(name)
        except InputError:
            continue
        if node.accelerator.name == acc.name:
            return node
    raise InputError(f"no node descriptor under hardware/nodes uses {acc.name}; collectives need its links")


def check_table(path, acc, cal: Calibration, node=None) -> dict:
    """Errors of the current model against one measured table (GEMM or collective)."""
    df = _read(path)
    kind = table_kind(df)
    if kind == "gemm":
        rows = gemm_rows([path])
        return error_stats(predict_gemm(rows, acc, cal), rows["t"], rows["op"])
    if kind == "collective":
        rows = comm_rows([path])
        node = node or default_node_for(acc)
        scope = np.where(rows["g"] < rows["n"], "inter", "intra")
        labels = np.array([f"{o}_{s}" for o, s in zip(rows["op"], scope)], dtype=object)
        return error_stats(predict_comm(rows, node, cal), rows["t"], labels)
    raise InputError("neither a GEMM table (n_embd, num_tokens, time_stats.<op>.median, ...) nor a collective "
                     "table (size, num_workers, devices_per_node, collective)", file=path)


def fit_files(paths: Sequence, acc, node=None, start: Calibration | None = None, iters: int = 3000) -> Calibration:
    """Fit a calibration from GEMM and/or collective tables; unfitted sections keep ``start``'s values."""
    start = start or Calibration()
    gemm_paths, comm_paths = [], []
    for p in paths:
        kind = table_kind(_read(p))
        if kind == "gemm":
            gemm_paths.append(p)
        elif kind == "collective":
            comm_paths.append(p)
        else:
            raise InputError("neither a GEMM nor a collective table", file=p)
    cal = replace(start, device=acc.name)
    fit = {}
    if gemm_paths:
        rows = gemm_rows(gemm_paths)
        gp = fit_gemm(rows, acc, start.gemm, iters=iters)
        cal = replace(cal, gemm=gp)
        st = error_stats(predict_gemm(rows, acc, cal), rows["t"])
        fit["gemm"] = {"files": sorted(Path(p).name for p in gemm_paths), "rows": st["n"],
                       "median_abs_rel_error": round(st["median_abs_rel_error"], 4),
                       "p90_abs_rel_error": round(st["p90_abs_rel_error"], 4)}
        ew = elementwise_rows(gemm_paths)
        if len(ew["t"]):
            cal = replace(cal, elementwise=fit_elementwise(ew, acc, start.elementwise))
            st = error_stats(predict_elementwise(ew, acc, cal.elementwise), ew["t"])
            fit["elementwise"] = {"ops": list(EW_OPS), "rows": st["n"],
                                  "median_abs_rel_error": round(st["median_abs_rel_error"], 4),
                                  "p90_abs_rel_error": round(st["p90_abs_rel_error"], 4)}
    if comm_paths:
        node = node or default_node_for(acc)
        rows = comm_rows(comm_paths)
        cp = fit_comm(rows, node, start.comm, iters=max(300, iters // 2))
        cal = replace(cal, comm=cp)
        st = error_stats(predict_comm(rows, _node_without_link_eff(node), cal), rows["t"])
        fit["comm"] = {"files": sorted(Path(p).name for p in comm_paths), "node": node.name, "rows": st["n"],
                       "median_abs_rel_error": round(st["median_abs_rel_error"], 4),
                       "p90_abs_rel_error": round(st["p90_abs_rel_error"], 4)}
    source = "fitted by `simllm calibrate fit` on " + ", ".join(sorted(Path(p).name for p in paths))
    return replace(cal, fit={**start.fit, **fit} if start.device == acc.name else fit, source=source)
