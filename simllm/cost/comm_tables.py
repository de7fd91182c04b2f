"""Measured collective kernels (AIConfigurator layout): read, price, fit, check.

Tables: ``<gpu>/comm/nccl/<version>/nccl_perf.parquet`` (``op_name``, ``nccl_dtype``,
``num_gpus``, ``message_size`` in *elements* of ``nccl_dtype``, ``latency`` ms) and
``<gpu>/comm/<framework>/<version>/custom_allreduce_perf.parquet`` (``allreduce_dtype``,
``num_gpus``, ``message_size`` in elements, ``backend`` ``*_graph`` / ``*_eager``; TensorRT-LLM's
tables have no backend: its all-reduce runs inside its CUDA-graph engine). Framework and version
come from the folder names (the tables' own columns are not always right).

Rows arrive in the table contract of :mod:`simllm.cost.tables`; :func:`prepare` adds ``nbytes``
and ``graph`` (bool).

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

GPU_NODES = {"a100_sxm": "dgx-a100", "h100_sxm": "dgx-h100"}
# L40S: no NVLink; GDDR6 864 GB/s (NVIDIA L40S datasheet), PCIe 4.0 x16 to the host
L40S_HBM_BW = 864e9
FRAMEWORKS = ("vllm", "sglang", "trtllm")


# --------------------------------------------------------------------------- reading
def prepare(df):
    """Rows of the table contract (:mod:`simllm.cost.tables`) of the comm kinds with what the
    physics needs: ``nbytes`` (``message_size`` elements x dtype size) and ``graph`` (CUDA graph,
    from ``backend``; a table without one, TensorRT-LLM's, runs in its graph engine). Bad input
    (an unknown NCCL op, an unknown dtype or backend, a missing column) raises InputError."""
    df = df.copy()
    src = str(df["source"].iloc[0]) if len(df) and "source" in df.columns else None
    for c in ("num_gpus", "message_size"):
        if c not in df.columns or df[c].isna().any():
            raise InputError(f"missing column {c!r}", file=src, field=c)
    kinds = df["kind"].astype(str)
    bad = sorted(set(k for k in kinds if k.startswith("nccl_")) - set(NCCL_OPS.values()))
    if bad:
        raise InputError(f"unknown op_name {bad[0][5:]!r} (expected one of {', '.join(NCCL_OPS)})", file=src,
                         field="op_name")
    bad = sorted(set(df["dtype"].astype(str)) - set(DTYPE_SIZE))
    if bad:
        raise InputError(f"unknown dtype {bad[0]!r} (expected one of {', '.join(DTYPE_SIZE)})", file=src,
                         field="dtype")
    b = df["backend"].astype(str).str.lower() if "backend" in df.columns else None
    if b is None:
        df["graph"] = True
    else:
        b = b.where(df["backend"].notna(), "graph")
        odd = sorted({v for v in b if not (v.endswith("graph") or v.endswith("eager"))})
        if odd:
            raise InputError(f"unknown backend {odd[0]!r} (expected *_graph or *_eager)", file=src, field="backend")
        df["graph"] = b.str.endswith("graph").to_numpy()
    df["num_gpus"] = df["num_gpus"].astype(int)
    df["nbytes"] = df["message_size"].astype(float) * df["dtype"].astype(str).map(DTYPE_SIZE).astype(float)
    return df


def gpu_tables(gpu_dir, frameworks: Iterable[str] = FRAMEWORKS):
    """{"nccl": df, "<framework>": df} of one GPU folder (newest version of each), prepared."""
    from .tables import read_tables

    out = {}
    for fw in frameworks:
        try:
            df = read_tables(Path(gpu_dir) / "comm", framework=fw)
        except InputError:
            continue
        df = df[df["kind"].astype(str).str.startswith("nccl_") | (df["kind"] == "custom_allreduce")]
        if "nccl" not in out:
            out["nccl"] = prepare(df[df["kind"].astype(str).str.startswith("nccl_")])
        c = df[df["kind"] == "custom_allreduce"]
        if len(c):
            out[fw] = prepare(c)
    return out


def system_link(gpu: str, acc=None) -> IntraLink:
    """The :class:`IntraLink` of an AIConfigurator GPU folder name (or of an accelerator)."""
    from ..hardware import load_link, load_node

    if gpu in GPU_NODES:
        return IntraLink.from_node(load_node(GPU_NODES[gpu]))
    if acc is not None:
        from .fit import default_node_for

        try:
            return IntraLink.from_node(default_node_for(acc))
        except InputError:
            pass
    if gpu == "l40s" or acc is not None:
        # assumption: a device no node descriptor uses is a PCIe card, GPUs talking through the host
        link = load_link("pcie4")
        hbm = float(acc.hbm_bw) if acc is not None else L40S_HBM_BW
        return IntraLink(name="pcie4", bw=link.bw, alpha=link.alpha, switched=False, nvls=False, hbm_bw=hbm)
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
            and all(0.01 < e <= 1.0 for e in (x[2], x[4], x[6], x[8])) and 0 <= x[9] <= 4 and 0.01 < x[10] <= 1.0)


def fit_nccl(groups: Sequence[tuple], start: NcclParams | None = None, iters: int = 1500) -> NcclParams:
    """Fit one :class:`NcclParams` on ``[(df, link), ...]`` (NCCL rows of one or more systems)."""
    groups = [(d[d["kind"].str.startswith("nccl_")], l) for d, l in groups]
    groups = [(d, l) for d, l in groups if len(d)]
    if not groups:
        raise InputError("no NCCL rows to fit")
    t = np.concatenate([d["latency_s"].to_numpy() for d, _ in groups])
    # parameters no row can tell: NVLS without an NVLS system, host sharing without a PCIe one
    fixed = set()
    if not any(l.nvls for _, l in groups):
        fixed |= {7, 8}
    if all(l.switched for _, l in groups):
        fixed.add(9)

    def loss(x):
        p = NcclParams.from_vector(x)
        return _loss(np.concatenate([price(d, l, p) for d, l in groups]), t)

    # two starts, the better fit kept: the given parameters and the defaults (protocols ordered LL < LL128 <
    # Simple in bandwidth). The min over protocols has local minima where one protocol's line takes every
    # size and the others fall out of reach: from the shipped L40S all-reduce section the simplex kept LL alone
    # (Simple at 1% of the link), p90 30%; from the defaults it finds the LL -> Simple knee at 0.5-1 MiB
    # that the PCIe tables show (~10 GB/s below it, ~21 GB/s above; fitted as LL then LL128), p90 19%
    best, fbest = None, np.inf
    given = np.array((start or NcclParams()).vector(), float)
    free = [i for i in range(len(given)) if i not in fixed]
    for s0 in ([start] if start is not None else []) + [NcclParams()]:
        x0 = np.array(s0.vector(), float)
        x0[sorted(fixed)] = given[sorted(fixed)]  # what no row can tell stays as given
        x = _fit_free(x0, free, _nccl_ok, loss, iters)
        fx = loss(x)
        if fx < fbest:
            best, fbest = x, fx
    return NcclParams.from_vector(best)


def _fit_free(x0: np.ndarray, free: list, ok, loss, iters: int) -> np.ndarray:
    """Nelder-Mead over the ``free`` entries of ``x0`` (the others held), ``loss`` of the full vector where
    ``ok``; the full vector at the end."""
    def full(y):
        x = x0.copy()
        x[free] = y
        return x

    def f(y):
        x = full(y)
        return loss(x) if ok(x) else np.inf

    return full(_nm(f, x0[free], iters))


def _custom_ok(x) -> bool:
    return (0 <= x[0] < 100 and 0 <= x[1] < 1000 and 0 <= x[2] < 200 and 0.01 < x[3] <= 1.0 and 0.05 < x[4] <= 1.0
            and 0.01 < x[5] <= 1.0 and 0 <= x[6] <= 4 and 0 <= x[7] < 100 and 0.2 <= x[8] <= 10)


def fit_custom(groups: Sequence[tuple], start: CustomARParams | None = None, iters: int = 800) -> CustomARParams:
    """Fit one framework's :class:`CustomARParams` on ``[(df, link, nccl_params), ...]``."""
    groups = [(d[d["kind"] == "custom_allreduce"], l, p) for d, l, p in groups]
    groups = [g for g in groups if len(g[0])]
    if not groups:
        raise InputError("no custom all-reduce rows to fit")
    t = np.concatenate([d["latency_s"].to_numpy() for d, _, _ in groups])
    x0 = np.array((start or CustomARParams()).vector(), float)
    # the PCIe host-crossing terms: no row of a switched (NVLink) system can tell them
    free = [i for i in range(len(x0)) if i < 5 or not all(l.switched for _, l, _ in groups)]

    def loss(x):
        c = CustomARParams.from_vector(x)
        return _loss(np.concatenate([price(d, l, p, c) for d, l, p in groups]), t)

    return CustomARParams.from_vector(_fit_free(x0, free, _custom_ok, loss, iters))


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


# --------------------------------------------------------------------------- registry (simllm.cost.pricing)
def _params(cls, cal, name):
    from .pricing import section

    d = section(cal, name)
    known = set(cls.__dataclass_fields__)
    bad = sorted(set(d) - known)
    if bad:
        raise InputError(f"unknown field {bad[0]!r} (expected one of {', '.join(sorted(known))})",
                         field=f"kernels.{name}.{bad[0]}")
    try:
        return cls(**{k: float(v) for k, v in d.items()})
    except (TypeError, ValueError):
        raise InputError("expected numbers", field=f"kernels.{name}") from None


def nccl_params(cal, op: str = "all_reduce") -> NcclParams:
    """The calibration's NCCL parameters of one op (section ``nccl_<op>``; defaults when absent)."""
    return _params(NcclParams, cal, NCCL_OPS[op])


def custom_params(cal) -> CustomARParams:
    """The calibration's custom all-reduce parameters (section ``custom_allreduce``, per framework
    through ``Calibration.for_framework``)."""
    return _params(CustomARParams, cal, "custom_allreduce")


def _link_of(df, acc) -> IntraLink:
    gpu = str(df["gpu"].iloc[0]) if len(df) else ""
    return system_link(gpu, acc)


def _price_kind(df, acc, cal):
    d = prepare(df)
    kind = str(d["kind"].iloc[0])
    link = _link_of(d, acc)
    if kind == "custom_allreduce":
        return price(d, link, nccl_params(cal, "all_reduce"), custom_params(cal))
    op = kind[len("nccl_"):]
    return price(d, link, nccl_params(cal, op))


def _fit_nccl_kind(df, acc, cal) -> dict:
    d = prepare(df)
    kind = str(d["kind"].iloc[0])
    p = fit_nccl([(d, _link_of(d, acc))], start=nccl_params(cal, kind[len("nccl_"):]))
    return {kind: asdict(p)}


def _fit_custom_kind(df, acc, cal) -> dict:
    d = prepare(df)
    c = fit_custom([(d, _link_of(d, acc), nccl_params(cal, "all_reduce"))], start=custom_params(cal))
    return {"custom_allreduce": asdict(c)}


def _register() -> None:
    from .pricing import register

    for kind in NCCL_OPS.values():
        register(kind, _price_kind, _fit_nccl_kind)
    register("custom_allreduce", _price_kind, _fit_custom_kind)


_register()


# --------------------------------------------------------------------------- shipped sections, transfer
GPUS = ("a100_sxm", "h100_sxm", "l40s")
DEFAULT_FRAMEWORK = "vllm"  # the file's default custom all-reduce (the serving simulator's engine)


def fit_sections(gpu_dirs: Sequence, iters: int = 1500, start: dict | None = None) -> dict:
    """``{"kernels": {nccl_<op>: ..., custom_allreduce: ...}, "frameworks": {fw: {"kernels":
    {"custom_allreduce": ...}}}, "fit": {...}}`` fitted on the comm tables of the given GPU
    folders together (one parameter set over all of them). ``start``: kernels to start from
    (parameters the rows cannot tell, e.g. NVLS on A100, keep their start values)."""
    tabs = [(gpu_tables(d), system_link(Path(d).name)) for d in gpu_dirs]
    start = start or {}
    kernels, fws, fit = {}, {}, {}
    for op, kind in NCCL_OPS.items():
        grp = [(t["nccl"][t["nccl"]["kind"] == kind], l) for t, l in tabs if "nccl" in t]
        s0 = NcclParams(**start[kind]) if kind in start else None
        p = fit_nccl(grp, start=s0, iters=iters)
        kernels[kind] = asdict(p)
        for d, l in grp:
            fit.setdefault(kind, {}).update(_stats(d, price(d, l, p)))
    ar = NcclParams(**kernels["nccl_all_reduce"])
    for fw in FRAMEWORKS:
        grp = [(t[fw], l, ar) for t, l in tabs if fw in t]
        if not grp:
            continue
        c = fit_custom(grp, iters=max(300, iters // 2))
        fws[fw] = {"kernels": {"custom_allreduce": asdict(c)}}
        for d, l, _ in grp:
            fit.setdefault(f"custom_allreduce/{fw}", {}).update(_stats(d, price(d, l, ar, c)))
    if DEFAULT_FRAMEWORK in fws:
        kernels["custom_allreduce"] = dict(fws[DEFAULT_FRAMEWORK]["kernels"]["custom_allreduce"])
    return {"kernels": kernels, "frameworks": fws, "fit": fit}


def _stats(d, pred) -> dict:
    e = np.abs(np.asarray(pred) / d["latency_s"].to_numpy() - 1)
    gpu = str(d["gpu"].iloc[0])
    return {gpu: {"rows": int(e.size), "median_abs_rel_error": round(float(np.median(e)), 4),
                  "p90_abs_rel_error": round(float(np.percentile(e, 90)), 4)}}


def sections_errors(root, sections: dict, gpus: Sequence[str] = GPUS) -> dict:
    """Errors of fitted ``sections`` on the comm tables of ``root/<gpu>``: ``{gpu: {"<kind>/<dtype>"
    or "custom_allreduce/<fw>": {n, median, p90, median_signed}}}``."""
    out = {}
    k = sections["kernels"]
    for gpu in gpus:
        t = gpu_tables(Path(root) / gpu)
        link = system_link(gpu)
        res = {}
        if "nccl" in t:
            d = t["nccl"]
            pred = np.full(len(d), np.nan)
            for op, kind in NCCL_OPS.items():
                m = (d["kind"] == kind).to_numpy()
                if m.any() and kind in k:
                    pred[m] = price(d[m], link, NcclParams(**k[kind]))
            res.update(group_errors(d, pred))
        ar = NcclParams(**k["nccl_all_reduce"])
        for fw, sec in sections.get("frameworks", {}).items():
            if fw in t:
                c = CustomARParams(**sec["kernels"]["custom_allreduce"])
                e = group_errors(t[fw], price(t[fw], link, ar, c))
                res.update({f"custom_allreduce/{fw}": v for v in e.values()})
        out[gpu] = res
    return out


def leave_one_gpu_out(root, gpus: Sequence[str] = GPUS, iters: int = 800) -> dict:
    """Fit on all GPUs but one, check the one left out: ``{held_out_gpu: {group: errors}}``.
    The figure :mod:`benchmarks.cost_model_error` prints for the comm kinds."""
    out = {}
    for held in gpus:
        sec = fit_sections([Path(root) / g for g in gpus if g != held], iters=iters)
        out[held] = sections_errors(root, sec, [held])[held]
    return out


def print_leave_one_gpu_out(root, gpus: Sequence[str] = GPUS, iters: int = 800, file=None) -> dict:
    """Print the leave-one-GPU-out table of the comm kinds (median / p90 per group); returns it."""
    import sys

    res = leave_one_gpu_out(root, gpus, iters)
    f = file or sys.stdout
    print("comm kinds, leave one GPU out (fit on the other two): median / p90 |pred/meas - 1|", file=f)
    for gpu, groups in res.items():
        for g, v in groups.items():
            print(f"  {gpu:9s} {g:32s} n={v['n']:4d}  {v['median'] * 100:6.1f}% / {v['p90'] * 100:6.1f}%", file=f)
    return res
