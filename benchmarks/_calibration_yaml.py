"""Shared by the refit benchmarks (``moe_refit.py``, ``attention_refit.py``): per-dtype error figures of one kernel
class and the merge of refitted sections into a shipped calibration file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simllm.atomic import write_text
from simllm.cost.calibration import _round


def group_figures(df: pd.DataFrame, pred: np.ndarray, kind: str) -> dict:
    """``calibrate check``'s per_op entries (``<kind>/<dtype>``: n, median, p90, median_signed) of ``df``'s rows."""
    r = pred / df["latency_s"].to_numpy(float) - 1
    dts = df["dtype"].astype(str).to_numpy()
    out = {}
    for d in sorted(set(dts.tolist())):
        m = (dts == d) & np.isfinite(r)
        if m.any():
            e = np.abs(r[m])
            out[f"{kind}/{d}"] = {"n": int(m.sum()), "median": round(float(np.median(e)), 4),
                                  "p90": round(float(np.quantile(e, 0.9)), 4),
                                  "median_signed": round(float(np.median(r[m])), 4)}
    return out


def write_sections(path: Path, framework: str, kept: dict, per_op: dict, note_key: str, tables: str,
                   note: str) -> None:
    """Merge ``kept`` sections (rounded as the calibration files keep them) into ``frameworks.<framework>.kernels``
    of ``path`` (and the top-level ``kernels`` for vLLM, whose sections those are), ``per_op`` into
    ``frameworks.<framework>.fit.per_op``, and a note ``fit.<note_key>`` whose ``sections`` lists every section
    refitted so far; the header comments are kept, the file replaced atomically."""
    text = path.read_text()
    head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text) or {}
    kept = _round(kept)
    fw = data.setdefault("frameworks", {}).setdefault(framework, {})
    fw.setdefault("kernels", {}).update(kept)
    if framework == "vllm":
        data.setdefault("kernels", {}).update(kept)
    fw.setdefault("fit", {}).setdefault("per_op", {}).update(per_op)
    rec = data.setdefault("fit", {}).setdefault(note_key, {})
    rec.update({"tables": tables, "note": note, "sections": sorted(set(rec.get("sections", [])) | set(kept))})
    write_text(path, head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))
