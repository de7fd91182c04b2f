"""Synthetic request streams: arrival processes and length distributions.

All functions take a ``numpy.random.Generator`` and are vectorised; the same generator
state gives the same output.

Arrivals
    ``poisson``: exponential inter-arrival times (CV = 1).
    ``gamma``: renewal process with Gamma inter-arrival times of mean ``1/rate`` and
    coefficient of variation ``cv`` (shape ``1/cv**2``, scale ``cv**2/rate``); ``cv > 1`` is
    burstier than Poisson (BurstGPT's model of LLM traffic).
    Time-varying rate: ``rate(t) = rate * (1 + amplitude * sin(2*pi*t/period_s + phase))``
    (a daily cycle by default), applied by time rescaling: the renewal process runs at unit
    rate in "operational time" ``Lambda(t) = integral of rate``, mapped back through the
    inverse of ``Lambda``. The count over a whole period keeps the mean rate.

Lengths
    ``lognormal``: prompt and output lengths lognormal with medians and sigmas, optionally
    correlated (Gaussian copula, ``correlation`` between log lengths).
    ``zipf``: bounded Zipf on integers ``[min, max]``, ``P(k) ~ k**-theta``, the two coupled
    by a Gaussian copula with ``correlation`` (so responses grow with requests when > 0).
    ``empirical``: (prompt, output) pairs resampled with replacement from a loaded trace,
    keeping their joint distribution.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


MAX_TOKENS = 10_000_000
"""Longest prompt or output a generator draws (tokens): above the longest published context windows
(10 M tokens); lengths are clipped to [1, MAX_TOKENS] so every count is finite and fits int64."""


# --------------------------------------------------------------------------- arrivals


def interarrivals(rng: np.random.Generator, n: int, *, rate: float, cv: float = 1.0,
                  process: str = "gamma") -> np.ndarray:
    """``n`` inter-arrival gaps of mean ``1/rate``: exponential (poisson) or Gamma with ``cv``."""
    if process == "poisson" or (process == "gamma" and cv == 1.0):
        return rng.exponential(1.0 / rate, size=n)
    if process == "gamma":
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / (rate * shape), size=n)
    raise ValueError(f"unknown arrival process {process!r}")


def _cum_rate(t: np.ndarray, rate: float, amplitude: float, period_s: float, phase: float) -> np.ndarray:
    w = 2.0 * math.pi / period_s
    return rate * (t + amplitude / w * (math.cos(phase) - np.cos(w * t + phase)))


def arrival_times(rng: np.random.Generator, n: int, *, rate: float, cv: float = 1.0, process: str = "gamma",
                  amplitude: float = 0.0, period_s: float = 86400.0, phase: float = 0.0) -> np.ndarray:
    """``n`` arrival times (s), the first at 0 for a stationary process (renewal from t=0).

    With ``amplitude > 0`` the rate follows the sinusoid above (``0 <= amplitude < 1``).
    """
    if n <= 0:
        return np.zeros(0)
    if amplitude == 0.0:
        gaps = interarrivals(rng, n - 1, rate=rate, cv=cv, process=process)
        return np.concatenate([[0.0], np.cumsum(gaps)])
    # operational time: unit-rate renewal process
    gaps = interarrivals(rng, n - 1, rate=1.0, cv=cv, process=process)
    op = np.concatenate([[0.0], np.cumsum(gaps)])
    # invert Lambda on a grid fine enough for the cycle (Lambda is increasing since amplitude < 1)
    t_end = op[-1] / (rate * (1.0 - amplitude)) + period_s
    pts = int(min(max(64 * t_end / period_s, 1024), 2_000_000))
    grid = np.linspace(0.0, t_end, pts)
    lam = _cum_rate(grid, rate, amplitude, period_s, phase)
    return np.interp(op, lam, grid)


# --------------------------------------------------------------------------- lengths


def _erf_fast(x: np.ndarray) -> np.ndarray:
    """erf by the Numerical Recipes erfc approximation (relative error < 1.2e-7), vectorised."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, 1.0 - r, r - 1.0)


def correlated_uniforms(rng: np.random.Generator, n: int, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """Two uniform(0,1) samples coupled by a Gaussian copula with the given correlation."""
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    z2 = correlation * z1 + math.sqrt(max(0.0, 1.0 - correlation * correlation)) * z2
    u1 = np.clip(0.5 * (1.0 + _erf_fast(z1 / math.sqrt(2.0))), 0.0, 1.0 - 1e-12)
    u2 = np.clip(0.5 * (1.0 + _erf_fast(z2 / math.sqrt(2.0))), 0.0, 1.0 - 1e-12)
    return u1, u2


def correlated_normals(rng: np.random.Generator, n: int, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    return z1, correlation * z1 + math.sqrt(max(0.0, 1.0 - correlation * correlation)) * z2


def zipf_ppf(u: np.ndarray, *, theta: float, lo: int, hi: int) -> np.ndarray:
    """Inverse CDF of the bounded Zipf law ``P(k) ~ k**-theta`` on integers ``lo..hi``."""
    k = np.arange(lo, hi + 1, dtype=float)
    cdf = np.cumsum(k ** -theta)
    cdf /= cdf[-1]
    return (lo + np.searchsorted(cdf, u, side="right")).clip(lo, hi).astype(np.int64)


def lognormal_lengths(rng: np.random.Generator, n: int, *, prompt_median: float, prompt_sigma: float,
                      output_median: float, output_sigma: float, correlation: float = 0.0,
                      prompt_max: Optional[int] = None, output_max: Optional[int] = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    z1, z2 = correlated_normals(rng, n, correlation)
    p = np.rint(prompt_median * np.exp(prompt_sigma * z1))
    o = np.rint(output_median * np.exp(output_sigma * z2))
    p = np.clip(np.nan_to_num(p, nan=1.0), 1, min(prompt_max or MAX_TOKENS, MAX_TOKENS)).astype(np.int64)
    o = np.clip(np.nan_to_num(o, nan=1.0), 1, min(output_max or MAX_TOKENS, MAX_TOKENS)).astype(np.int64)
    return p, o


def zipf_lengths(rng: np.random.Generator, n: int, *, prompt_theta: float, prompt_min: int, prompt_max: int,
                 output_theta: float, output_min: int, output_max: int, correlation: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    u1, u2 = correlated_uniforms(rng, n, correlation)
    return (zipf_ppf(u1, theta=prompt_theta, lo=prompt_min, hi=prompt_max),
            zipf_ppf(u2, theta=output_theta, lo=output_min, hi=output_max))


def empirical_lengths(rng: np.random.Generator, n: int, prompt: np.ndarray, output: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Resample (prompt, output) pairs with replacement: keeps their joint distribution."""
    idx = rng.integers(0, len(prompt), size=n)
    return np.asarray(prompt)[idx].astype(np.int64), np.asarray(output)[idx].astype(np.int64)
