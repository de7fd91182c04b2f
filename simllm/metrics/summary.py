"""Per-request and per-step tables, and the run summary.

Definitions follow ``vllm bench serve`` (benchmarks/serve.py in vLLM):

- **TTFT** (``ttft_s``): first token time - arrival time (includes queueing and prefill).
- **TPOT** (``tpot_s``): (completion - first token) / (output_tokens - 1); requests with a single
  output token have no TPOT (NaN) and are left out of its statistics, as vLLM does.
- **ITL**: the gaps between successive tokens. The simulator jumps over decode steps, so it
  reports the token-weighted mean ITL only: sum(e2e - ttft) / sum(output_tokens - 1).
- **E2EL** (``e2e_s``): completion - arrival.
- ``api_overhead_s`` of the deployment (the server's front end: HTTP, tokenization, streaming) is
  added to TTFT and E2EL: ``first_token_s`` / ``completion_s`` are when the engine emitted the
  token, ``ttft_s`` / ``e2e_s`` what the client measures. With async scheduling
  (``deployment.async_scheduling``) the client also gets every token one engine iteration later, the
  iteration that emitted the request's first token (``SimResult.async_lag_s``): added to both as well.
- ``queueing_s``: first scheduled - arrival; ``scheduled_s`` is the start of the request's first
  prefill step.
- Throughput: completed requests (and their prompt / output tokens) divided by the duration
  from the first arrival to the last completion.
- Goodput: completed requests per second meeting every SLO given (``ttft_s``, ``tpot_s``);
  SLO attainment is their fraction of all requests (rejected ones count as misses).

Utilisation is over that duration and all devices: MFU = FLOPs / (duration x devices x peak),
MBU = bytes / (duration x devices x memory bandwidth), using the cost model's per-device FLOPs
and bytes of each step (a jump segment counts its middle step x ``n_steps``). ``busy_fraction``
is the fraction of time a replica runs a step. Energy: each device draws
``idle + busy_fraction x (TDP - idle)``; when the accelerator descriptor gives no idle power
energy is null and ``energy_note`` says why. Cost: ``price_per_hour`` x devices x duration.

Saturation: over the second half of the arrival window, if requests complete at less than 90%
of the rate they arrive and the number in the system grows by more than max(20, 10% of the
arrivals in that half), the run is overloaded: its queue grows without bound, and its
latencies are a function of the run's length, not of the system. ``saturated`` is then true.
With client timeouts (``aborted_s``), an aborted request leaves the system at its abort, so the
queue stops growing at the timeout; more than 1% aborted among the requests arriving in that half
also means overloaded.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..sim.records import STEP_COLUMNS, SimResult, StepTotals

REQUEST_COLUMNS = ("id", "arrival_s", "prompt_tokens", "output_tokens", "generated_tokens", "scheduled_s",
                   "first_token_s", "completion_s", "ttft_s", "tpot_s", "e2e_s", "queueing_s", "preemptions",
                   "replica", "rejected_reason")


def _tpot(first: np.ndarray, completion: np.ndarray, out: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out > 1, (completion - first) / np.maximum(out - 1, 1), np.nan)


def request_columns(res: SimResult, lo: int = 0, hi: Optional[int] = None) -> dict[str, Any]:
    """The columns of ``requests.csv`` for requests ``lo:hi`` (all by default), in order."""
    sl = slice(lo, hi)
    out = res.output_tokens[sl]
    arr = res.arrival_s[sl]
    first = res.first_token_s[sl]
    comp = res.completion_s[sl]
    sched = res.scheduled_s[sl]
    api = float(getattr(res, "api_overhead_s", 0.0) or 0.0)  # the client sees every token this much later
    lag = _lag(res, sl)
    cols: dict[str, Any] = {
        "id": res.ids[sl],
        "arrival_s": arr,
        "prompt_tokens": res.prompt_tokens[sl],
        "output_tokens": out,
        "generated_tokens": res.generated_tokens[sl],
        "scheduled_s": sched,
        "first_token_s": first,
        "completion_s": comp,
        "ttft_s": first - arr + api + lag,
        "tpot_s": _tpot(first, comp, out),
        "e2e_s": comp - arr + api + lag,
        "queueing_s": sched - arr,
        "preemptions": res.preemptions[sl],
        "replica": res.replica[sl],
        "rejected_reason": res.rejected_reason[sl],
    }
    if _has_classes(res):  # priority batching: the class
        cols["priority_class"] = res.priority[sl]
    ab = getattr(res, "aborted_s", None)
    if ab is not None:  # client timeouts: when the server aborted the request (NaN: it completed)
        cols["aborted_s"] = ab[sl]
    for c, v in getattr(res, "request_columns", {}).items():  # disaggregation: decode_replica, pool, kv_transfer_s
        cols[c] = v[sl]
    return cols


def _lag(res: SimResult, sel) -> Any:
    """Async scheduling's per-request delay of the client's tokens (``SimResult.async_lag_s``) for ``sel``; 0 when off
    or for a request without a first token."""
    lag = getattr(res, "async_lag_s", None)
    if lag is None:
        return 0.0
    lag = lag[sel]
    return np.where(np.isnan(lag), 0.0, lag)


def _has_classes(res: SimResult) -> bool:
    pri = getattr(res, "priority", None)
    return pri is not None and len(pri) == len(res.ids) and len(pri) > 0 and bool((pri != pri[0]).any())


def requests_table(res: SimResult) -> pd.DataFrame:
    return pd.DataFrame(request_columns(res))


def step_columns(cols: dict, pools: Optional[list] = None) -> dict[str, Any]:
    """The columns of ``steps.csv``: ``cols`` (step rows, all or a chunk) plus, with several pools
    (``pools``: the pool name of each replica), the pool of each step's replica."""
    out = {c: cols[c] for c in STEP_COLUMNS}
    if pools:  # disaggregation
        out["pool"] = (np.asarray(pools, dtype=object)[np.asarray(cols["replica"], dtype=np.int64)]
                       if len(cols["replica"]) else np.zeros(0, dtype=object))
    return out


def steps_table(res: SimResult) -> pd.DataFrame:
    """One row per prefill step or decode segment (``n_steps`` iterations)."""
    return pd.DataFrame(step_columns(res.steps, getattr(res, "pools", None)))


def _totals(steps: dict, replicas: int) -> StepTotals:
    t = StepTotals.zeros(replicas)
    if len(steps["replica"]):
        t.add({c: np.asarray(steps[c], dtype=np.int64 if c == "replica" else float)
               for c in ("replica", "duration_s", "kv_blocks_used", "flops", "bytes")})
    return t


def _stats(x: np.ndarray) -> dict[str, Optional[float]]:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Rejections grouped by kind (numbers in the message replaced by N)."""
    kinds = reasons.str.replace(r"\d+", "N", regex=True)
    return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}


def saturation(arrival: np.ndarray, completion: np.ndarray, rejected: np.ndarray,
               aborted: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Compare arrival and completion rates over the second half of the arrival window (a request
    aborted at its client's timeout, at ``aborted`` s, leaves the system then without completing)."""
    if len(arrival) < 2:
        return {"saturated": False, "arrival_rate_per_s": None, "completion_rate_per_s": None, "backlog_growth": 0}
    t0, t1 = float(arrival.min()), float(arrival.max())
    mid = (t0 + t1) / 2
    w = t1 - mid
    served = ~rejected
    arr = arrival[served]
    comp = completion[served]
    n_arr = int(np.count_nonzero((arr > mid) & (arr <= t1)))
    n_comp = int(np.count_nonzero((comp > mid) & (comp <= t1)))

    left = comp if aborted is None else np.where(np.isnan(comp), aborted[served], comp)

    def in_system(t):
        return int(np.count_nonzero(arr <= t)) - int(np.count_nonzero(left <= t))

    growth = in_system(t1) - in_system(mid)
    a_rate = n_arr / w if w > 0 else None
    c_rate = n_comp / w if w > 0 else None
    sat = bool(w > 0 and n_comp < 0.9 * n_arr and growth > max(20, 0.1 * n_arr))
    if aborted is not None and w > 0:
        late = (arr > mid) & (arr <= t1)
        sat = sat or int(np.count_nonzero(late & np.isfinite(aborted[served]))) > 0.01 * max(n_arr, 1)
    return {"saturated": sat, "arrival_rate_per_s": a_rate, "completion_rate_per_s": c_rate,
            "backlog_growth": growth, "in_system_at_last_arrival": in_system(t1)}


def summarize(res: SimResult, *, devices_per_replica: int = 1, peak_flops: Optional[float] = None,
              hbm_bandwidth: Optional[float] = None, price_per_device_hour: Optional[float] = None,
              tdp_w: Optional[float] = None, idle_w: Optional[float] = None,
              slo_ttft_s: Optional[float] = None, slo_tpot_s: Optional[float] = None) -> dict[str, Any]:
    """The run summary, from the result's arrays and step totals (no table is built)."""
    reasons = np.asarray(res.rejected_reason, dtype=object)
    rejected = reasons != ""
    comp_all = res.completion_s
    done = np.isfinite(comp_all) & ~rejected
    n = len(res.ids)
    n_done = int(done.sum())
    arr = res.arrival_s
    start = float(arr.min()) if n else 0.0
    duration = max(res.end_s - start, 0.0)
    out_d = res.output_tokens[done]
    out_tok = int(out_d.sum())
    in_tok = int(res.prompt_tokens[done].sum())

    def rate(x):
        return x / duration if duration > 0 else None

    arr_d = arr[done]
    first_d = res.first_token_s[done]
    comp_d = comp_all[done]
    api = float(getattr(res, "api_overhead_s", 0.0) or 0.0)  # the server's front end (SimConfig.api_overhead_s)
    lag = _lag(res, done)
    ttft = first_d - arr_d + api + lag
    tpot = _tpot(first_d, comp_d, out_d)
    e2e = comp_d - arr_d + api + lag
    n_itl = int((out_d - 1).sum())
    itl_mean = float((e2e - ttft).sum() / n_itl) if n_itl > 0 else None

    ok = np.ones(n_done, dtype=bool)
    if slo_ttft_s is not None:
        ok &= ttft <= slo_ttft_s
    if slo_tpot_s is not None:
        ok &= ~(tpot > slo_tpot_s)  # NaN TPOT (one output token) meets it
    good = int(ok.sum())

    R = res.num_replicas
    tot = res.step_totals if res.step_totals is not None else _totals(res.steps, R)
    # every step row is weighed by the devices of its replica (pools may differ in size); flops/bytes are
    # per device of the step's replica
    rep_dev = list(getattr(res, "replica_devices", None) or [devices_per_replica] * R)
    devices = int(sum(rep_dev))
    w = np.asarray(rep_dev, dtype=float)
    busy_s = float(tot.busy_s.sum())
    busy_dev_s = float((tot.busy_s * w).sum())
    busy_fraction = busy_dev_s / (devices * duration) if duration > 0 else None
    have_breakdown = tot.rows > 0 and tot.breakdown
    flops = float((tot.flops * w).sum())
    byts = float((tot.bytes * w).sum())
    mfu = flops / (devices * duration * peak_flops) if (peak_flops and duration > 0 and have_breakdown) else None
    mbu = byts / (devices * duration * hbm_bandwidth) if (hbm_bandwidth and duration > 0 and have_breakdown) else None
    caps = list(getattr(res, "replica_kv_blocks", None) or [res.kv_num_blocks])
    kv_util = None
    if busy_s > 0 and len(set(caps)) == 1:
        kv_util = float(tot.kv_block_s.sum() / busy_s / caps[0])
    elif busy_s > 0:
        kv_util = float((tot.kv_block_s / np.asarray(caps, dtype=float)).sum() / busy_s)

    cost = None
    if price_per_device_hour is not None and out_tok > 0:
        cost = price_per_device_hour * devices * duration / 3600.0 / out_tok * 1e6
    energy_j = None
    energy_note = ""
    if tdp_w is None:
        energy_note = "no TDP known"
    elif idle_w is None or not math.isfinite(idle_w):
        energy_note = "the accelerator descriptor gives no idle_power: the power model idle + busy x (TDP - idle) needs it"
    elif duration > 0:
        energy_j = idle_w * devices * duration + (tdp_w - idle_w) * busy_dev_s
    aborted = getattr(res, "aborted_s", None)
    sat = saturation(arr, comp_all, rejected, aborted)
    by_class = None
    if _has_classes(res):  # fairness: latency per priority class
        by_class = {}
        pri = res.priority[done]
        for k in np.unique(pri).tolist():
            g = pri == k
            by_class[str(int(k))] = {"completed": int(g.sum()), "ttft_s": _stats(ttft[g]), "tpot_s": _stats(tpot[g])}
    prefix = None
    if getattr(res, "prefix_caching", False):
        q = int(res.prefix_query_tokens)
        prefix = {"query_tokens": q, "hit_tokens": int(res.prefix_hit_tokens),
                  "token_hit_rate": (res.prefix_hit_tokens / q) if q else None}

    return {
        "num_requests": n,
        "completed": n_done,
        "rejected": int(rejected.sum()),
        "rejected_reasons": _reason_counts(pd.Series(reasons[rejected], dtype=object)),
        **({"aborted": int(np.isfinite(aborted).sum())} if aborted is not None else {}),
        "preemptions": int(res.preemptions.sum()),
        "duration_s": duration,
        "replicas": R,
        "devices": devices,
        "request_throughput_per_s": rate(n_done),
        "input_tokens_per_s": rate(in_tok),
        "output_tokens_per_s": rate(out_tok),
        "total_tokens_per_s": rate(in_tok + out_tok),
        "ttft_s": _stats(ttft),
        "tpot_s": _stats(tpot),
        "itl_mean_s": itl_mean,
        "e2e_s": _stats(e2e),
        "queueing_s": _stats(res.scheduled_s[done] - arr_d),
        "slo": {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s},
        "goodput_requests_per_s": rate(good),
        "slo_attainment": good / n if n else None,
        "mfu": mfu,
        "mbu": mbu,
        "busy_fraction": busy_fraction,
        "kv_utilization_mean": kv_util,
        "kv_blocks_per_replica": res.kv_num_blocks,
        # each replica's own KV capacity where the pools differ (the first pool's is kv_blocks_per_replica)
        **({"kv_capacity_blocks": {str(i): int(c) for i, c in enumerate(caps)}} if len(set(caps)) > 1 else {}),
        "kv_peak_blocks": max(res.kv_peak_blocks) if res.kv_peak_blocks else 0,
        "cost_per_million_output_tokens_usd": cost,
        "energy_j": energy_j,
        "energy_per_output_token_j": (energy_j / out_tok) if (energy_j is not None and out_tok) else None,
        "energy_note": energy_note,
        "saturated": sat["saturated"],
        "saturation": sat,
        **({"by_priority_class": by_class} if by_class is not None else {}),
        **({"prefix_cache": prefix} if prefix is not None else {}),
    }
