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
    """Maximum-likelihood lognormal (mean and standard deviation of log x) and its Kolmogorov-Smirnov
    distance to the data (0 = identical distributions, 1 = disjoint)."""
    lx = np.log(np.maximum(np.asarray(x, dtype=float), 1))
    mu, sigma = float(lx.mean()), float(lx.std())
    ks = float("nan")
    if len(lx) > 1 and sigma > 0:
        srt = np.sort(lx)
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)((srt - mu) / (sigma * math.sqrt(2.0))))
        n = len(srt)
        ks = float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))
    return {"mu": mu, "sigma": sigma, "median": math.exp(mu), "ks": ks}


def _digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (error < 1e-10)."""
    r = 0.0
    while x < 6.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def _trigamma(x: float) -> float:
    r = 0.0
    while x < 6.0:
        r += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    return r + 1 / x + f / 2 + f / x * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))


MIN_MEANINGFUL_SHAPE = 0.1
"""Below this Gamma shape (CV above ~3.2) a renewal model with Gamma gaps is a poor description of the
arrivals (gaps span many orders of magnitude: bursts and long silences); fits are flagged."""


def gamma_mle(gaps: np.ndarray) -> dict[str, Any]:
    """Maximum-likelihood Gamma fit of positive gaps (Minka's Newton iteration on the shape).

    Zero gaps (requests in the same timestamp tick) have no likelihood under a Gamma and are left
    out and counted. ``warning`` says when the fit is not meaningful."""
    g = np.asarray(gaps, dtype=float)
    pos = g[g > 0]
    out: dict[str, Any] = {"shape": float("nan"), "scale_s": float("nan"), "zero_gaps": int((g <= 0).sum()),
                           "warning": ""}
    if len(pos) < 2 or np.all(pos == pos[0]):
        out["warning"] = "fewer than two distinct positive gaps: no Gamma fit"
        return out
    m = float(pos.mean())
    s = math.log(m) - float(np.log(pos).mean())
    k = (3 - s + math.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(50):
        num = math.log(k) - _digamma(k) - s
        k_new = 1.0 / (1.0 / k + num / (k * k * (1.0 / k - _trigamma(k))))
        if not math.isfinite(k_new) or k_new <= 0:
            break
        if abs(k_new - k) < 1e-10 * k:
            k = k_new
            break
        k = k_new
    out.update(shape=k, scale_s=m / k)
    notes = []
    if k < MIN_MEANINGFUL_SHAPE:
        notes.append(f"shape {k:.3g} < {MIN_MEANINGFUL_SHAPE}: gaps span orders of magnitude; a Gamma renewal "
                     f"model does not describe these arrivals (replay the trace, or model bursts separately)")
    if out["zero_gaps"] > 0.05 * len(g):
        notes.append(f"{out['zero_gaps']} of {len(g)} gaps are zero (timestamp resolution): left out of the fit")
    out["warning"] = "; ".join(notes)
    return out


def trace_stats(df: pd.DataFrame) -> dict[str, Any]:
    """Count, duration, rate, inter-arrival CV, length percentiles and fitted generator parameters.

    Gamma fit of the inter-arrival gaps by moments (``shape = 1/cv**2``, ``scale = mean * cv**2``,
    what generators reproduce: rate and CV) and by maximum likelihood (``fit.arrivals.mle``, with a
    ``warning`` when the fit is meaningless). Lognormal fit of lengths: maximum likelihood (mean
    and standard deviation of ``log(tokens)``) with its Kolmogorov-Smirnov distance ``ks``.
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
    mle = gamma_mle(gaps) if len(gaps) else {"shape": float("nan"), "warning": "no gaps"}
    if np.isfinite(shape) and np.isfinite(mle["shape"]) and max(shape, mle["shape"]) > 3 * min(shape, mle["shape"]):
        mle["warning"] = "; ".join(x for x in (mle["warning"], (
            f"moment shape {shape:.3g} and maximum-likelihood shape {mle['shape']:.3g} differ more than 3x: the gaps "
            f"are not Gamma-distributed, and a Gamma generator reproduces either the CV or the likelihood, not both"))
            if x)
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
                         "scale_s": gm * cv ** 2 if np.isfinite(cv) else float("nan"),
                         "mle": mle},
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
