"""DeepEP's normal (high-throughput) dispatch/combine kernels, the ones prefill uses, as measured in
SGLang's ``wideep_deepep_normal_perf`` tables: priced, fitted, checked.

Rows: ``hidden_size``, ``num_token`` (tokens per rank), ``num_topk``, ``num_experts``, ``node_num``
(8 GPUs a node) and the SMs the kernel was given (``dispatch_sms`` / ``combine_sms``: 4-24 in the
H100 tables); measured ``*_transmit_us`` + ``*_notify_us``.

Physics (one formula per op, six parameters, section ``deepep_normal`` of a calibration):

* **bytes**: each token goes once to every distinct rank holding one of its top-k experts (DeepEP
  dedups per rank, then scatters inside the rank), and every received copy, the rank's own
  included, is staged through the same buffers (as :func:`simllm.topology.ep_dispatch` charges
  it). Under uniform routing a token reaches ``D = R (1 - C(E - E/R, k) / C(E, k))`` of the ``R``
  ranks in expectation (a uniformly random k-subset of ``E`` experts, ``E/R`` per rank: exact).
  Copy size: fp8 with one fp32 scale per 128 values for dispatch (DeepEP's fp8 dispatch,
  ``hidden x (1 + 4/128)`` bytes), bf16 for combine (``2 x hidden``);
* **bandwidth**: the kernel's SMs drive the copies, so the rate is the smaller of the SMs' copy
  rate (``sm_bw`` bytes/s per SM x SMs) and the link's (``link_eff`` x the node's per-direction
  scale-up bandwidth), joined smoothly (``1/bw = ((1/sm)^p + (1/link)^p)^(1/p)``). Evidence: the H100
  table's time falls ~linearly in the SM count from 4 to ~16 SMs (72.7 -> 19.3 ms at 131,072 tokens,
  dispatch) and flattens beyond 20 (15.8 ms at 20, 14.7 ms at 24): the NVLink bound;
* **latency**: a fixed ``launch_s`` (notify, barrier, kernel) plus a ramp ``ramp_s x (1 -
  exp(-bytes per SM / ramp_bytes))``: the pipeline fill of each SM's first chunks, which the
  table shows as a steeper slope below ~1 MB per SM than above it (24 SMs: 0.16 us per token up to
  256 tokens, 0.11 beyond 1,024).

Fitted on H100 (SGLang 0.5.12, 2,484 rows per op, one node); on other GPUs the per-SM copy rate,
the link efficiency and the latencies transfer unchanged (an assumption: the same copy engine
path, ld/st over NVLink, on every NVIDIA GPU with NVLink) and the node's own scale-up bandwidth
sets the link bound. Rows spanning several nodes (``node_num > 1``, the RDMA path) are not
priced here (counted as unpriced): the H100 tables hold none to fit them on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

from ..config import data_roots
from ..errors import InputError
from .calibration import CALIB_DIR, load_calibration
from .fit import default_node_for, nelder_mead
from .pricing import register, section

GPUS_PER_NODE = 8  # the tables' systems (DGX/HGX: 8 GPUs a node)
OPS = ("dispatch", "combine")
_COLS = ("hidden_size", "num_token", "num_topk", "num_experts")


@dataclass(frozen=True)
class DeepEPNormalParams:
    """One op's parameters: seconds, bytes/s per SM, a fraction of the link, an exponent, seconds, bytes."""

    launch_s: float
    sm_bw: float
    link_eff: float
    p: float
    ramp_s: float
    ramp_bytes: float

    def vector(self) -> list:
        return [np.log(self.launch_s * 1e6), np.log(self.sm_bw / 1e9), np.log(self.link_eff), np.log(self.p),
                np.log(self.ramp_s * 1e6), np.log(self.ramp_bytes / 1e6)]

    @classmethod
    def from_vector(cls, x) -> "DeepEPNormalParams":
        e = np.exp(np.asarray(x, float))
        return cls(float(e[0]) * 1e-6, float(e[1]) * 1e9, float(e[2]), float(e[3]), float(e[4]) * 1e-6,
                   float(e[5]) * 1e6)


#: where the search of a first fit starts (not a result: ``fit`` moves every parameter)
_START = {"launch_s": 25e-6, "sm_bw": 16e9, "link_eff": 0.9, "p": 3.0, "ramp_s": 12e-6, "ramp_bytes": 0.3e6}
REFERENCE = "h100-sxm.yaml"  # the calibration fitted on measured tables; devices without a section use it


def params(cal, op: str, start: bool = False) -> DeepEPNormalParams:
    """``op``'s parameters from ``cal``'s ``deepep_normal`` section, else from the H100 calibration (the one
    fitted on measured DeepEP tables: transferred as the module docstring says); ``start``: the search's
    starting point where neither has one."""
    d = section(cal, "deepep_normal").get(op) or {}
    if not d:
        for root in (r / CALIB_DIR for r in data_roots()):
            if (root / REFERENCE).is_file():
                d = section(load_calibration(root / REFERENCE), "deepep_normal").get(op) or {}
                break
    if not d:
        if not start:
            raise InputError(f"no deepep_normal.{op} section in this calibration or in {REFERENCE}",
                             field=f"kernels.deepep_normal.{op}")
        d = _START
    try:
        return DeepEPNormalParams(**{k: float(v) for k, v in d.items()})
    except TypeError as e:
        raise InputError(f"bad deepep_normal.{op} section: {e}", field=f"kernels.deepep_normal.{op}") from None


def ranks_reached(ranks, experts, topk) -> np.ndarray:
    """Expected distinct ranks a token's top-k experts live on (uniform routing, ``experts / ranks`` each)."""
    R, E, k = (np.broadcast_to(np.asarray(v, dtype=np.int64), np.broadcast(ranks, experts, topk).shape)
               for v in (ranks, experts, topk))
    out = np.empty(R.shape, dtype=float)
    cache: dict = {}
    for i, key in enumerate(zip(R.ravel().tolist(), E.ravel().tolist(), k.ravel().tolist())):
        v = cache.get(key)
        if v is None:
            r, e, kk = key
            if r < 1 or e < r or e % r or kk < 1 or kk > e:
                raise InputError(f"{e} experts over {r} ranks with top-{kk}: expected experts a multiple of the "
                                 "ranks and 1 <= top-k <= experts", field="num_experts")
            v = cache[key] = r * (1.0 - comb(e - e // r, kk) / comb(e, kk))
        out.ravel()[i] = v
    return out


def copy_bytes(hidden, op: str) -> np.ndarray:
    if op not in OPS:
        raise InputError(f"op must be dispatch or combine, got {op!r}", field="op")
    return np.asarray(hidden, float) * ((1.0 + 4.0 / 128.0) if op == "dispatch" else 2.0)


def normal_time(op: str, tokens, hidden, topk, experts, ranks, sms, link_bw: float,
                p: DeepEPNormalParams) -> np.ndarray:
    """Seconds of one intra-node DeepEP normal ``op`` of ``tokens`` per rank over ``ranks`` ranks with ``sms``
    SMs; ``link_bw`` the per-direction scale-up bandwidth per GPU (vectorised)."""
    by = np.asarray(tokens, float) * ranks_reached(ranks, experts, topk) * copy_bytes(hidden, op)
    sms = np.maximum(np.asarray(sms, float), 1.0)
    inv = ((1.0 / (sms * p.sm_bw)) ** p.p + (1.0 / (p.link_eff * link_bw)) ** p.p) ** (1.0 / p.p)
    return p.launch_s + by * inv + p.ramp_s * (1.0 - np.exp(-by / sms / p.ramp_bytes))


def _link_bw(acc) -> float:
    return float(default_node_for(acc).scale_up_bw)


def _check(df) -> None:
    src = str(df["source"].iloc[0]) if len(df) and "source" in df.columns else None
    for c in _COLS:
        if c not in df.columns or df[c].isna().any():
            raise InputError(f"missing column {c!r}", file=src, field=c)


def _sms(df, op: str) -> np.ndarray:
    c = f"{op}_sms"
    if c not in df.columns:  # DeepEP's default Buffer.num_sms (20) when a table does not say
        return np.full(len(df), 20.0)
    return df[c].fillna(20).to_numpy(float)


def price(df, acc, cal, given: dict | None = None) -> np.ndarray:
    """Predicted seconds of ``deepep_normal_{dispatch,combine}`` rows (NaN for multi-node rows)."""
    _check(df)
    bw = _link_bw(acc)
    nodes = df["node_num"].fillna(1).to_numpy(float) if "node_num" in df.columns else np.ones(len(df))
    kinds = df["kind"].astype(str).to_numpy()
    out = np.full(len(df), np.nan)
    for op in OPS:
        m = (kinds == f"deepep_normal_{op}") & (nodes == 1)
        if not m.any():
            continue
        p = (given or {}).get(op) or params(cal, op)
        d = df[m]
        out[m] = normal_time(op, d["num_token"].to_numpy(float), d["hidden_size"].to_numpy(float),
                             d["num_topk"].to_numpy(float), d["num_experts"].to_numpy(float), GPUS_PER_NODE,
                             _sms(d, op), bw, p)
    return out


def fit(df, acc, cal, iters: int = 3000) -> dict:
    """Fit each op present in ``df`` (log-error Nelder-Mead from the section, or the defaults), keep the other."""
    _check(df)
    out = {op: asdict(params(cal, op, start=True)) for op in OPS}
    kinds = df["kind"].astype(str).to_numpy()
    nodes = df["node_num"].fillna(1).to_numpy(float) if "node_num" in df.columns else np.ones(len(df))
    for op in OPS:
        m = (kinds == f"deepep_normal_{op}") & (nodes == 1)
        if not m.any():
            continue
        d = df[m]
        t = d["latency_s"].to_numpy(float)

        def f(x, d=d, t=t, op=op):
            q = DeepEPNormalParams.from_vector(x)
            if not (0.05 < q.link_eff <= 1.0 and 1.0 <= q.p <= 20.0):
                return np.inf
            v = np.mean(np.abs(np.log(price(d, acc, cal, {op: q}) / t)))
            return v if np.isfinite(v) else np.inf

        x, _ = nelder_mead(f, params(cal, op, start=True).vector(), iters=iters, step=0.3)
        out[op] = asdict(DeepEPNormalParams.from_vector(x))
    return {"deepep_normal": out}


def _register() -> None:
    for op in OPS:
        register(f"deepep_normal_{op}", price, fit)


_register()
