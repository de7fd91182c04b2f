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
