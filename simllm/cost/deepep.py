"""DeepEP dispatch/combine kinds of the measured tables: the low-latency kernels
(``deepep_ll_dispatch`` / ``deepep_ll_combine``, :func:`simllm.cost.collectives.deepep_ll_time`)
priced and fitted here; the normal kernels (``deepep_normal_*``) are priced by the topology
graph (:func:`simllm.topology.ep_dispatch`) on the GPU's node descriptor.

Tables (SGLang's ``wideep_deepep_{ll,normal}_perf``): ``hidden_size``, ``num_token`` (per rank),
``num_topk``, ``num_experts``, ``node_num`` (8 GPUs a node); times in microsecond columns.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..errors import InputError
from .collectives import DeepEPLLParams, deepep_ll_time

_COLS = ("hidden_size", "num_token", "num_topk", "num_experts")
GPUS_PER_NODE = 8  # the tables' systems (DGX/HGX H100: 8 GPUs a node)


def ll_params(cal) -> DeepEPLLParams:
    from .pricing import section

    d = section(cal, "deepep_ll")
    try:
        return DeepEPLLParams(**{k: float(v) for k, v in d.items()})
    except TypeError as e:
        raise InputError(f"bad deepep_ll section: {e}", field="kernels.deepep_ll") from None


def _node(acc):
    from .fit import default_node_for

    return default_node_for(acc)


def _check(df):
    src = str(df["source"].iloc[0]) if len(df) and "source" in df.columns else None
    for c in _COLS:
        if c not in df.columns or df[c].isna().any():
            raise InputError(f"missing column {c!r}", file=src, field=c)


def price_ll(df, acc, cal, p: DeepEPLLParams | None = None, node=None) -> np.ndarray:
    """Predicted seconds of low-latency dispatch/combine rows."""
    _check(df)
    node = node or _node(acc)
    p = p or ll_params(cal)
    nodes = df["node_num"].fillna(1).to_numpy(float) if "node_num" in df.columns else np.ones(len(df))
    n = nodes * GPUS_PER_NODE
    out = np.full(len(df), np.nan)
    kinds = df["kind"].astype(str).to_numpy()
    for op in ("dispatch", "combine"):
        m = kinds == f"deepep_ll_{op}"
        if m.any():
            out[m] = deepep_ll_time(op, df["num_token"].to_numpy(float)[m], df["hidden_size"].to_numpy(float)[m],
                                    df["num_topk"].to_numpy(float)[m], n[m], GPUS_PER_NODE, node.scale_up_bw,
                                    node.scale_out_bw, p, num_experts=df["num_experts"].to_numpy(float)[m],
                                    sms=float(acc.compute_units.value))
    return out


def fit_ll(df, acc, cal, iters: int = 600) -> dict:
    from .fit import nelder_mead

    node = _node(acc)
    t = df["latency_s"].to_numpy(float)

    def f(x):
        if not (0 <= x[0] < 500 and 0 <= x[1] < 500 and all(0.01 < e <= 1.2 for e in x[2:5])
                and 0 <= x[5] < 100 and 0.1 < x[6] < 1e4 and 0 <= x[7] < 100 and 0.1 < x[8] < 1e4):
            return np.inf
        v = np.mean(np.abs(np.log(price_ll(df, acc, cal, DeepEPLLParams.from_vector(x), node) / t)))
        return v if np.isfinite(v) else np.inf

    x0 = list(ll_params(cal).vector())
    if x0[6] >= 1e3:  # the warp-group terms off (a section of before them): start them where they can bind
        x0[5:9] = [1.0, 20.0, 1.0, 20.0]
    # what no row can tell stays as given: the RDMA fraction without a row spanning nodes
    one_node = "node_num" not in df.columns or bool((df["node_num"].fillna(1) <= 1).all())
    # and an op's own parameters without its rows (the registry fits each kind on its own rows)
    kinds = set(df["kind"].astype(str)) if "kind" in df.columns else {"deepep_ll_dispatch", "deepep_ll_combine"}
    own = {"deepep_ll_dispatch": {0, 2, 5, 6}, "deepep_ll_combine": {1, 3, 7, 8}}
    free = sorted(set().union(*(own.get(k, set()) for k in kinds)) | (set() if one_node else {4}))

    def g(y):
        x = list(x0)
        for i, v in zip(free, y):
            x[i] = v
        return x

    y, _ = nelder_mead(lambda y: f(g(y)), [x0[i] for i in free], iters=iters, step=0.2)
    y, _ = nelder_mead(lambda y: f(g(y)), y, iters=iters, step=0.1)
    return {"deepep_ll": asdict(DeepEPLLParams.from_vector(g(y)))}


def _fit_either(df, acc, cal):
    """Both low-latency kinds share one section: fit on what this call gets, starting from the
    section (the registry fits ``combine`` first, then ``dispatch`` from its result)."""
    return fit_ll(df, acc, cal)


def _register():
    from .pricing import register

    for op in ("dispatch", "combine"):
        register(f"deepep_ll_{op}", price_ll, _fit_either)


_register()
