"""Chrome / Perfetto trace of a run: per-replica step spans and request lifetimes.

The output is the Chrome JSON trace format (``traceEvents``), which ui.perfetto.dev and
chrome://tracing open directly. Process 1..R are replicas (one track of steps each, plus a
counter of batch size and KV blocks); requests appear as async spans (queued, prefill,
decode) grouped under their replica.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

_US = 1e6  # trace timestamps are microseconds


def write_trace(requests: pd.DataFrame, steps: pd.DataFrame, path: str | Path, *, max_requests: int = 20000) -> Path:
    events: list[dict] = []
    replicas = sorted(set(steps["replica"].unique()) | set(requests["replica"].dropna().astype(int).unique())) \
        if len(steps) or len(requests) else []
    for r in replicas:
        pid = int(r) + 1
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"replica {int(r)}"}})
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": 0, "args": {"name": "steps"}})
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": 1, "args": {"name": "requests"}})
    if len(steps):
        st = steps.sort_values(["replica", "start_s"])
        cols = [c for c in ("batch_size", "prefill_tokens", "decode_tokens", "kv_blocks_used", "n_steps") if c in st]
        for row in st.itertuples(index=False):
            rd = row._asdict()
            pid = int(rd["replica"]) + 1
            name = "prefill+decode" if rd.get("prefill_tokens", 0) and rd.get("decode_tokens", 0) else \
                "prefill" if rd.get("prefill_tokens", 0) else "decode"
            args = {c: _num(rd[c]) for c in cols}
            events.append({"ph": "X", "name": name, "pid": pid, "tid": 0, "ts": rd["start_s"] * _US,
                           "dur": max(rd["duration_s"], 0.0) * _US, "args": args})
            if "batch_size" in rd:
                events.append({"ph": "C", "name": "batch", "pid": pid, "ts": rd["start_s"] * _US,
                               "args": {"batch_size": _num(rd["batch_size"]),
                                        **({"kv_blocks": _num(rd["kv_blocks_used"])} if "kv_blocks_used" in rd else {})}})
    req = requests.head(max_requests)
    for row in req.itertuples(index=False):
        rd = row._asdict()
        if pd.isna(rd.get("replica")) or pd.isna(rd.get("completion_s")):
            continue
        pid, rid = int(rd["replica"]) + 1, int(rd.get("request_id", rd.get("id", 0)))
        phases = [("queued", rd["arrival_s"], rd.get("scheduled_s")),
                  ("prefill", rd.get("scheduled_s"), rd.get("first_token_s")),
                  ("decode", rd.get("first_token_s"), rd["completion_s"])]
        for name, a, b in phases:
            if a is None or b is None or pd.isna(a) or pd.isna(b) or b <= a:
                continue
            events.append({"ph": "b", "cat": "request", "name": name, "id": rid, "pid": pid, "tid": 1, "ts": a * _US,
                           "args": {"request": rid}})
            events.append({"ph": "e", "cat": "request", "name": name, "id": rid, "pid": pid, "tid": 1, "ts": b * _US})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return path


def _num(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x
