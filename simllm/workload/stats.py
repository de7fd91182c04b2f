"""Summary statistics of a request table and the generator parameters fitted to it,
and a writer of BurstGPT-format CSV."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from .transforms import mean_rate


def _pcts(x: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(x)),
            "max": float(np.max(x))}


def _lognormal_fit(x: np.ndarray) -> dict[str, float]:
    lx = np.log(np.maximum(x, 1))
    mu, sigma = float(lx.mean()), float(lx.std())
    return {"mu": mu, "sigma": sigma, "median": math.exp(mu)}


def trace_stats(df: pd.DataFrame) -> dict[str, Any]:
    """Count, duration, rate, inter-arrival CV, length percentiles and fitted generator parameters.

    Gamma fit by moments of the inter-arrival gaps: ``shape = 1/cv**2``, ``scale = mean * cv**2``.
    Lognormal fit of lengths: mean and standard deviation of ``log(tokens)``.
    """
    t = df["arrival_s"].to_numpy(dtype=float)
    p = df["prompt_tokens"].to_numpy()
    o = df["output_tokens"].to_numpy()
    gaps = np.diff(t)
    gm = float(gaps.mean()) if len(gaps) else float("nan")
    cv = float(gaps.std() / gm) if len(gaps) and gm > 0 else float("nan")
    rate = mean_rate(df)
    corr = float(np.corrcoef(np.log(np.maximum(p, 1)), np.log(np.maximum(o, 1)))[0, 1]) if len(p) > 2 else float("nan")
    shape = 1.0 / cv ** 2 if cv and np.isfinite(cv) and cv > 0 else float("nan")
    return {
        "count": int(len(df)),
        "duration_s": float(t[-1] - t[0]) if len(t) else 0.0,
        "rate_per_s": rate,
        "interarrival_mean_s": gm,
        "interarrival_cv": cv,
        "prompt_tokens": _pcts(p),
        "output_tokens": _pcts(o),
        "log_length_correlation": corr,
        "fit": {
            "arrivals": {"process": "gamma", "rate": rate, "cv": cv, "shape": shape,
                         "scale_s": gm * cv ** 2 if np.isfinite(cv) else float("nan")},
            "prompt_lognormal": _lognormal_fit(p),
            "output_lognormal": _lognormal_fit(o),
        },
    }


def fitted_generator(stats: dict[str, Any]) -> dict[str, Any]:
    """A ``generator:`` block (gamma arrivals, correlated lognormal lengths) matching ``stats``."""
    f = stats["fit"]
    cv = f["arrivals"]["cv"]
    corr = stats["log_length_correlation"]
    return {
        "arrivals": {"process": "gamma", "rate": f["arrivals"]["rate"], "cv": cv if np.isfinite(cv) and cv > 0 else 1.0},
        "lengths": {"kind": "lognormal",
                    "prompt_median": f["prompt_lognormal"]["median"], "prompt_sigma": f["prompt_lognormal"]["sigma"],
                    "output_median": f["output_lognormal"]["median"], "output_sigma": f["output_lognormal"]["sigma"],
                    "correlation": float(np.clip(corr, -1, 1)) if np.isfinite(corr) else 0.0,
                    "prompt_max": int(stats["prompt_tokens"]["max"]), "output_max": int(stats["output_tokens"]["max"])},
    }


def write_burstgpt(df: pd.DataFrame, path: str | Path, *, model: str = "ChatGPT",
                   log_type: str = "Conversation log", decimals: int = 3) -> None:
    """Write a request table as BurstGPT CSV (``Timestamp`` in s, rounded to ``decimals``).

    Columns ``model`` / ``log_type`` in ``df`` override the constants per row.
    """
    req = df["prompt_tokens"].to_numpy(dtype=np.int64)
    resp = df["output_tokens"].to_numpy(dtype=np.int64)
    out = pd.DataFrame({
        "Timestamp": np.round(df["arrival_s"].to_numpy(dtype=float), decimals),
        "Model": df["model"].to_numpy() if "model" in df.columns else model,
        "Request tokens": req,
        "Response tokens": resp,
        "Total tokens": req + resp,
        "Log Type": df["log_type"].to_numpy() if "log_type" in df.columns else log_type,
    })
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a killed writer leaves the old file or none, never half of one
        out.to_csv(tmp, index=False)
