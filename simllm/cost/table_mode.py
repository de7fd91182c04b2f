"""Measured-table mode: price the serving step's kernels by interpolating in the device's own
measured tables (the way AIConfigurator works), falling back to the analytic kernel physics of
:mod:`simllm.cost.kernel_models` outside the tables' range.

Switched on by ``cost: {mode: table, tables: PATH}`` in a scenario (PATH relative to the scenario
file) or in a device's calibration file (PATH relative to that file). PATH is anything
:func:`simllm.cost.tables.resolve` reads: an AIConfigurator GPU folder, a family folder, a
framework/version folder or one table; for the scenario's framework the newest version of every
table is used, as in ``simllm calibrate``. Tables measured on another GPU are refused
(:func:`simllm.cost.tables.check_gpu`).

What is looked up (the rest of the step: norms, activations, collectives, MoE grouped GEMMs, stays
analytic; the fallbacks below are the kernels that *could* come from a table and did not):

* GEMM ``[M, K] x [K, N]`` in the deployment's kernel path (``gemm_dtype``): multilinear
  interpolation over the measured (m, n, k) grid. Grouped GEMMs and arrays of per-expert shapes fall
  back (the tables hold single GEMMs).
* decode attention (``generation_attention`` / ``generation_mla``): exact match on the per-rank
  heads, KV heads, head dim, window (0 = none) and the attention / KV-cache dtypes; interpolation
  over (batch size, KV length = ``isl + step``) at the step's mean context per sequence.
* prefill attention (``context_attention`` / ``context_mla``): the same key; interpolation over
  (batch size, prompt length) at the mean chunk ``T / seqs``. The tables hold prompts without a
  cached prefix (``step = 0``): a chunk whose attention work exceeds the causal work of its length
  (by 1%) falls back.

Interpolation: multilinear in log(time) over log(shape) between the bracketing grid points (the
tables' axes are spaced geometrically; exact for power laws such as a GEMM's time linear in N or
prefill attention quadratic in the prompt, a few percent high between the floor and the linear
regime); table points come out exactly. A query outside an axis' measured range, or with a missing corner (the tables are not all
full grids), falls back. Where a shape was measured more than once (several kernel families of one
dtype, e.g. fp8 block-scaled CUTLASS / DeepGEMM, or FA3 and FA4) the fastest time is taken
(assumption: the framework dispatches to its fastest kernel). A looked-up kernel keeps the analytic
model's launch (capped at the measured time) as its ``launch`` part and the rest as its body, so
CUDA-graph replay drops the same per-kernel cost as in analytic mode.

Memoized: the tables are read once per (PATH, framework, device) and process; every lookup runs
under the step cost's own memoization (per token count, per prefill shape, per decode grid point),
so the serving step stays a lookup. The fallback count is therefore a count of *distinct kernel
shapes* priced analytically, reported once per run (``cost_table`` in the summary, one log line).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd

from ..errors import InputError
from . import tables as T
from .calibration import CostModeSpec, cost_spec
from .layer_kernels import LayerKernels

log = logging.getLogger("simllm.cost.table_mode")

#: the tables table mode reads (other families stay analytic)
STEMS = ("gemm_perf", "context_attention_perf", "generation_attention_perf", "context_mla_perf",
         "generation_mla_perf")
PREFIX_TOL = 1.01  # attention work above the causal work of the chunk length by more: a cached prefix


class GridTable:
    """Times on a rectilinear grid (NaN where a grid point was not measured); see the module
    docstring for the interpolation rule."""

    def __init__(self, points: np.ndarray, t: np.ndarray):
        points = np.asarray(points, float)
        self.axes = [np.unique(points[:, j]) for j in range(points.shape[1])]
        self.logs = [np.log(a) for a in self.axes]
        shape = tuple(len(a) for a in self.axes)
        self.t = np.full(shape, np.nan)
        idx = tuple(np.searchsorted(a, points[:, j]) for j, a in enumerate(self.axes))
        self.t[idx] = t

    def __call__(self, *x: float) -> Optional[float]:
        lo, w = [], []
        for a, la, v in zip(self.axes, self.logs, x):
            if not (a[0] <= v <= a[-1]) or v <= 0:
                return None
            i = int(np.searchsorted(a, v, side="right")) - 1
            if i >= len(a) - 1 or a[i] == v:
                i = min(i, len(a) - 1)
                lo.append(i)
                w.append(0.0)
                continue
            lo.append(i)
            w.append((math.log(v) - la[i]) / (la[i + 1] - la[i]))
        acc, n, last = 0.0, 0, 0.0
        for corner in range(1 << len(x)):
            wt = 1.0
            ix = []
            for j, (i, f) in enumerate(zip(lo, w)):
                up = (corner >> j) & 1
                if up and f == 0.0:
                    wt = 0.0
                    break
                wt *= f if up else 1.0 - f
                ix.append(i + up)
            if wt == 0.0:
                continue
            v = self.t[tuple(ix)]
            if not np.isfinite(v):
                return None
            acc += wt * math.log(v)
            n, last = n + 1, float(v)
        return last if n == 1 else math.exp(acc)


def _grids(df: pd.DataFrame, keys: list[str], axes: list[str]) -> dict:
    """``{key tuple: GridTable}`` of the fastest time per (key, axes) point."""
    if df.empty:
        return {}
    g = df.groupby(keys + axes, dropna=False)["latency_s"].min().reset_index()
    out = {}
    for k, sub in g.groupby(keys, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        out[tuple(_norm(v) for v in k)] = GridTable(sub[axes].to_numpy(float), sub["latency_s"].to_numpy(float))
    return out


def _norm(v):
    if isinstance(v, (float, np.floating)):
        return 0.0 if not np.isfinite(v) else float(v)
    return str(v)


def _fill(df: pd.DataFrame, col: str, value) -> pd.Series:
    if col not in df.columns:
        return pd.Series(value, index=df.index)
    return df[col].fillna(value)


class TableSource:
    """The measured tables of one device and framework, as interpolation grids."""

    def __init__(self, df: pd.DataFrame, path: str):
        self.path = path
        df = df.copy()
        df["kv_cache_dtype"] = _fill(df, "kv_cache_dtype", "").astype(str)
        df["kv_cache_dtype"] = np.where(df["kv_cache_dtype"].isin(["", "nan", "None"]), df["dtype"].astype(str),
                                        df["kv_cache_dtype"])
        df["window_size"] = _fill(df, "window_size", 0.0).astype(float)
        df["step"] = _fill(df, "step", 0.0).astype(float)
        df["kv_len"] = _fill(df, "isl", 0.0).astype(float) + df["step"]
        kinds = df["kind"].astype(str)
        self.kinds = sorted(set(kinds))
        self.gemm = _grids(df[kinds == "gemm"], ["dtype"], ["m", "n", "k"])
        att = ["dtype", "kv_cache_dtype", "num_heads", "num_key_value_heads", "head_dim", "window_size"]
        self.decode = _grids(df[kinds == "generation_attention"], att, ["batch_size", "kv_len"])
        pre = df[(kinds == "context_attention") & (df["step"] == 0)]
        self.prefill = _grids(pre, att, ["batch_size", "isl"])
        mla = ["dtype", "kv_cache_dtype", "num_heads"]
        self.decode_mla = _grids(df[kinds == "generation_mla"], mla, ["batch_size", "kv_len"])
        self.prefill_mla = _grids(df[(kinds == "context_mla") & (df["step"] == 0)], mla, ["batch_size", "isl"])
        self.rows = int(len(df))


@lru_cache(maxsize=8)
def _load(path: str, framework: str, device: str, aliases: tuple) -> TableSource:
    res = T.resolve(path, framework)
    refs = [r for r in res.tables if r.stem in STEMS]
    if not refs:
        raise InputError(f"no GEMM / attention / MLA tables of framework {framework} under it "
                         f"(table mode reads {', '.join(s + '.parquet' for s in STEMS)})", file=path, field="tables")
    df = T.read_refs(refs)

    class _Acc:  # the two fields check_gpu reads
        name = device

    _Acc.aliases = list(aliases)
    T.check_gpu(df, _Acc)
    return TableSource(df, path)


def table_source(path: str | Path, framework: str, acc, *, file=None, field: str = "cost.tables") -> TableSource:
    """The (memoized) tables at ``path`` for ``framework`` on ``acc``; a PATH that does not exist is
    an InputError naming ``file`` and ``field``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such table file or folder: {path}", file=file, field=field)
    return _load(str(p.resolve()), framework, acc.name, tuple(getattr(acc, "aliases", []) or ()))


def with_table_mode(cal, spec: Optional[dict]):
    """``cal`` with table mode switched on (``spec`` from :func:`~simllm.cost.calibration.cost_spec`),
    else ``cal``."""
    if not spec:
        return cal
    return replace(cal, cost=dict(spec))


class TableKernels(LayerKernels):
    """:class:`~simllm.cost.layer_kernels.LayerKernels` whose GEMMs and attention come from measured
    tables where they cover the shape (module docstring); ``lookups`` / ``fallbacks`` count the
    distinct kernel shapes priced from the tables / analytically."""

    def __init__(self, model, acc, cal, *, source: TableSource, **kw):
        super().__init__(model, acc, cal, **kw)
        self.src = source
        self._ok: set = set()  # distinct kernel shapes priced from the tables
        self._fb: set = set()  # ... and analytically (outside the tables)
        self._gemm_memo: dict = {}
        a = model.attention
        self.window = float(getattr(a, "sliding_window", None) or 0.0)
        parts = self.attn_key.split("+kv_")
        self.attn_dt = parts[0]
        self.kv_dt = parts[1] if len(parts) > 1 else parts[0]
        if self.mla:
            key = (self.attn_dt, self.kv_dt, self.heads)
            self._dec = source.decode_mla.get(key)
            self._pre = source.prefill_mla.get(key)
        else:
            key = (self.attn_dt, self.kv_dt, self.heads, self.kvh, self.hd, self.window)
            self._dec = source.decode.get(key)
            self._pre = source.prefill.get(key)

    @property
    def lookups(self) -> int:
        return len(self._ok)

    @property
    def fallbacks(self) -> int:
        return len(self._fb)

    def _count(self, key, t) -> bool:
        (self._fb if t is None else self._ok).add(key)
        return t is not None

    def gemm(self, M, K, N, groups=1.0, dtype=None):
        lo, bo = super().gemm(M, K, N, groups, dtype=dtype)
        if isinstance(M, np.ndarray) or isinstance(groups, np.ndarray):
            self._fb.add(("gemm", dtype or self.gemm_dtype, tuple(np.ravel(M).tolist()), float(K), float(N),
                          tuple(np.ravel(groups).tolist())))
            return lo, bo
        if M <= 0 or groups <= 0:
            return lo, bo
        key = (dtype or self.gemm_dtype, float(M), float(K), float(N), float(groups))
        t = self._gemm_memo.get(key, False)
        if t is False:
            g = self.src.gemm.get((key[0],))
            t = g(M, N, K) if (g is not None and groups == 1) else None
            self._count(("gemm",) + key, t)
            self._gemm_memo[key] = t
        if t is None:
            return lo, bo
        launch = min(lo, t)
        return launch, t - launch

    def _prefill(self, T_, W, seqs):
        lo, bo = super()._prefill(T_, W, seqs)
        b = max(float(seqs), 1.0)
        s = max(float(T_), 1.0) / b
        t = None
        if self._pre is not None and W <= PREFIX_TOL * b * s * (s + 1.0) / 2.0:
            t = self._pre(b, s)
        if not self._count(("prefill", float(T_), float(W), b), t):
            return lo, bo
        launch = min(lo, t)
        return launch, t - launch

    def decode(self, seqs, ctx):
        lo, bo = super().decode(seqs, ctx)
        b = float(seqs)
        if b <= 0:
            return lo, bo
        if not isinstance(ctx, np.ndarray):
            kv = max(float(ctx) / b, 1.0)
            t = self._dec(b, kv) if self._dec is not None else None
            if not self._count(("decode", b, kv), t):
                return lo, bo
            launch = min(lo, t)
            return launch, t - launch
        out = np.array(bo, dtype=float, copy=True)
        for i, c in enumerate(np.asarray(ctx, float).tolist()):
            kv = max(c / b, 1.0)
            t = self._dec(b, kv) if self._dec is not None else None
            if self._count(("decode", b, kv), t):
                out[i] = t - lo  # the grid form adds ``lo`` back; lo <= the table's floor here
        return lo, out


def make_layer_kernels(model, acc, cal, **kw) -> LayerKernels:
    """:class:`TableKernels` when ``cal`` has table mode on (``cal.cost``), else
    :class:`LayerKernels`."""
    spec = getattr(cal, "cost", None) or {}
    if spec.get("mode") != "table":
        return LayerKernels(model, acc, cal, **kw)
    fw = getattr(cal, "framework", "") or "vllm"
    src = table_source(spec["tables"], fw, acc, file=spec.get("file"))
    return TableKernels(model, acc, cal, source=src, **kw)


def report(cost) -> Optional[dict]:
    """``{"tables", "lookups", "fallbacks"}`` of one step cost model in table mode (None otherwise)."""
    k = getattr(getattr(cost, "ops", None), "k", None)
    if not isinstance(k, TableKernels):
        return None
    return {"tables": k.src.path, "lookups": int(k.lookups), "fallbacks": int(k.fallbacks)}


def run_report(costs) -> Optional[dict]:
    """The run's table-mode record over its pools' step cost models (None when none is in table mode),
    logged once: ``{"tables", "lookups", "fallbacks"}`` (distinct kernel shapes from the tables / priced
    analytically outside them)."""
    reps = [r for r in (report(c) for c in costs) if r]
    if not reps:
        return None
    rep = {"tables": reps[0]["tables"] if len({r["tables"] for r in reps}) == 1 else [r["tables"] for r in reps],
           "lookups": sum(r["lookups"] for r in reps), "fallbacks": sum(r["fallbacks"] for r in reps)}
    log.warning("cost table mode: %d kernel shapes priced from the measured tables (%s), %d outside them "
                "priced analytically", rep["lookups"], rep["tables"], rep["fallbacks"])
    return rep


__all__ = ["CostModeSpec", "cost_spec", "GridTable", "TableSource", "TableKernels", "table_source",
           "with_table_mode", "make_layer_kernels", "report", "run_report", "STEMS"]
