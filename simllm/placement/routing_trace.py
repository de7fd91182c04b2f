"""Routing traces: which experts each token chose at each MoE layer.

Format (CSV, or Parquet with the same columns), one row per (token, layer, rank)::

    token,layer,rank,expert
    0,0,0,5
    0,0,1,2
    ...

``token``: the token's index in the trace (0-based, in order); ``layer``: MoE layer index
(0-based); ``rank``: 0 for the expert with the highest gate score, 1 for the next, ...
(``0 .. top_k - 1``); ``expert``: the chosen expert's id (``0 .. num_experts - 1``). Every
token must have ``top_k`` distinct experts at every layer. :func:`read_routing_trace` returns
routes ``[L, B, K]`` (what :mod:`simllm.placement.affinity` reads); :func:`write_routing_trace`
writes them. Errors name the file, the line and the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import InputError

COLUMNS = ("token", "layer", "rank", "expert")


def write_routing_trace(routes: np.ndarray, path: str | Path) -> Path:
    """Write routes ``[L, B, K]`` as a routing trace (``.parquet`` or CSV by the suffix)."""
    r = np.asarray(routes)
    L, B, K = r.shape
    lay, tok, rk = np.meshgrid(np.arange(L), np.arange(B), np.arange(K), indexing="ij")
    df = pd.DataFrame({"token": tok.ravel(), "layer": lay.ravel(), "rank": rk.ravel(), "expert": r.ravel()})
    df = df.sort_values(["token", "layer", "rank"], kind="stable")
    p = Path(path)
    if p.suffix == ".parquet":
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, index=False)
    return p


def read_routing_trace(path: str | Path, num_experts: Optional[int] = None) -> np.ndarray:
    """Routes ``[L, B, K]`` from a routing trace; expert ids checked against ``num_experts``."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, comment="#")
    except Exception as e:  # pandas raises many kinds on unreadable files
        raise InputError(f"not a readable routing trace ({type(e).__name__}: {e})".splitlines()[0], file=p) from None
    cols = [str(c).strip().lower() for c in df.columns]
    df.columns = cols
    for c in COLUMNS:
        if c not in cols:
            raise InputError(f"missing column {c!r} (have: {', '.join(cols) or 'none'}); expected "
                             f"{','.join(COLUMNS)}", file=p, field=f"column {c}")
    if df.empty:
        raise InputError("no data rows", file=p)
    vals = {}
    for c in COLUMNS:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v < 0) | (v != np.round(v))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"expected a non-negative integer, got {df[c].iloc[i]!r}", file=p,
                             field=f"line {i + 2}: column {c}")
        vals[c] = v.astype(np.int64)
    e = vals["expert"]
    if num_experts is not None and (e >= num_experts).any():
        i = int(np.argmax(e >= num_experts))
        raise InputError(f"expert {int(e[i])} out of range (the model has {num_experts} experts)", file=p,
                         field=f"line {i + 2}: column expert")
    L, B, K = int(vals["layer"].max()) + 1, int(vals["token"].max()) + 1, int(vals["rank"].max()) + 1
    if len(e) != L * B * K:
        raise InputError(f"{len(e)} rows, expected tokens x layers x ranks = {B} x {L} x {K} = {L * B * K} "
                         "(every token needs every rank at every layer)", file=p)
    out = np.full((L, B, K), -1, dtype=np.int64)
    out[vals["layer"], vals["token"], vals["rank"]] = e
    if (out < 0).any():
        raise InputError("duplicate (token, layer, rank) rows", file=p)
    s = np.sort(out, axis=2)
    if K > 1 and (s[:, :, 1:] == s[:, :, :-1]).any():
        l, b, _ = np.argwhere(s[:, :, 1:] == s[:, :, :-1])[0]
        raise InputError(f"token {b} chose the same expert twice at layer {l}", file=p)
    return out
