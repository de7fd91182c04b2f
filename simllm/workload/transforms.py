"""Transformations of a request table (``arrival_s``, ``prompt_tokens``, ``output_tokens``, ...).

Each takes and returns a DataFrame sorted by ``arrival_s``; none mutates its input.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from .generators import arrival_times


def time_window(df: pd.DataFrame, start_s: float, end_s: float) -> pd.DataFrame:
    """Requests with ``start_s <= arrival_s < end_s``, re-timed so the window starts at 0."""
    t = df["arrival_s"].to_numpy()
    lo, hi = np.searchsorted(t, [start_s, end_s], side="left")
    out = df.iloc[lo:hi].copy()
    out["arrival_s"] = out["arrival_s"] - start_s
    return out.reset_index(drop=True)


def limit(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` requests."""
    return df.iloc[:n].reset_index(drop=True)


def scale_rate(df: pd.DataFrame, k: float) -> pd.DataFrame:
    """Multiply the request rate by ``k``: arrival times divided by ``k`` (k=2 halves durations)."""
    out = df.copy()
    out["arrival_s"] = out["arrival_s"] / k
    return out


def mean_rate(df: pd.DataFrame) -> float:
    """Requests per second over the trace: ``(n-1) / (last - first)`` (nan for fewer than 2)."""
    t = df["arrival_s"].to_numpy()
    if len(t) < 2 or t[-1] <= t[0]:
        return float("nan")
    return (len(t) - 1) / float(t[-1] - t[0])


def retime(df: pd.DataFrame, rng: np.random.Generator, *, process: str = "poisson", rate: Optional[float] = None,
           cv: float = 1.0, amplitude: float = 0.0, period_s: float = 86400.0, phase: float = 0.0) -> pd.DataFrame:
    """New arrival times from ``process`` (poisson/gamma), keeping lengths and order of requests.

    ``rate=None`` keeps the trace's mean rate.
    """
    if rate is None:
        rate = mean_rate(df)
        if not np.isfinite(rate):
            rate = 1.0
    out = df.copy()
    out["arrival_s"] = arrival_times(rng, len(df), rate=rate, cv=cv, process=process, amplitude=amplitude,
                                     period_s=period_s, phase=phase)
    return out


SESSION_BLOCK_BASE = 1 << 41
"""Prefix ids derived from sessions start here (clear of Mooncake hash ids and generated sessions)."""


def session_prefix_blocks(df: pd.DataFrame, block_tokens: int = 512) -> pd.DataFrame:
    """Derive ``prefix_blocks`` from ``session_id`` under the chat-history model.

    In a conversation each turn's prompt is the session's history (previous prompt and answer)
    followed by the new message, so full block ``k`` of any turn holds the same tokens as full
    block ``k`` of the session's other turns: it gets id ``base(session) + k``. A turn whose
    prompt is shorter than the previous turn's prompt plus output (history truncated or a fresh
    start) opens a new base, sharing nothing with what came before. Rows without a session, or
    that already have prefix blocks, are left as they are.
    """
    if "session_id" not in df.columns:
        return df
    out = df.copy()
    blocks = list(out["prefix_blocks"]) if "prefix_blocks" in out.columns else [()] * len(out)
    sess = out["session_id"].tolist()
    prompt = out["prompt_tokens"].to_numpy(dtype=np.int64)
    output = out["output_tokens"].to_numpy(dtype=np.int64)
    state: dict[str, tuple[int, int]] = {}  # session -> (base id, history tokens after its last turn)
    next_base = SESSION_BLOCK_BASE
    stride = 1 << 20  # blocks per base: prompts up to 2^20 blocks
    for i in range(len(out)):  # rows are in arrival order, so turns come in order
        s = sess[i]
        if not isinstance(s, str) or blocks[i]:
            continue
        base, history = state.get(s, (None, 0))
        if base is None or prompt[i] < history:
            base, next_base = next_base, next_base + stride
        blocks[i] = tuple(range(base, base + int(prompt[i]) // block_tokens))
        state[s] = (base, int(prompt[i] + output[i]))
    out["prefix_blocks"] = blocks
    return out
