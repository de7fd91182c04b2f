"""Sections for the kernel labels only older framework versions' tables carry (``simllm calibrate fit``).

A fit reads the newest version folder of each table (:func:`simllm.cost.tables.resolve`); a collector labels the
kernel it timed by its own version's naming, and what those rows time changes with the version too. Each label the
newest tables do not carry gets a section of its own here, fitted on its rows from the newest version that holds it
(:func:`fit_older_labels`); :func:`simllm.cost.pricing.older_labels_for` says which devices they serve.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .kernel_models import MIN_GROUP, _dtype_key
from .pricing import FITTERS, drop_older_labels, load_plugins, older_label_record, price
from .tables import older_tables, read_table


def label_keys(df: pd.DataFrame) -> np.ndarray:
    """``kind<US>section dtype<US>kernel_source`` of every row, the key a kernel label's section is fitted under."""
    out = np.empty(len(df), dtype=object)
    for _, ix in df.groupby(df["kind"].astype(str)).indices.items():
        sub = df.iloc[ix]
        out[ix] = ["\x1f".join(k) for k in zip(sub["kind"].astype(str), _dtype_key(sub),
                                                 sub["kernel_source"].astype(str))]
    return out


def _labelled(cal, kernels: dict, labels: dict):
    """``cal`` (a framework's view) with ``kernels`` and the older-label record ``labels`` in its framework's fit."""
    fw = getattr(cal, "framework", None) or ""
    fws = {k: dict(v) for k, v in (getattr(cal, "frameworks", None) or {}).items()}
    ent = fws.setdefault(fw, {})
    ent["fit"] = {**(ent.get("fit") or {}), "older_labels": {**older_label_record(cal, fw), **labels}}
    return replace(cal, kernels=kernels, frameworks=fws)


def older_label_rows(df: pd.DataFrame, refs) -> dict:
    """``label key -> (version, rows)``: the rows of every label of ``refs`` (older version tables, newest first)
    that ``df`` (the newest tables) does not carry, from the newest version that holds it."""
    have = set(label_keys(df)) if len(df) else set()
    rows: dict = {}
    for ref in refs:
        t = read_table(ref)
        if t.empty or "kernel_source" not in t.columns:
            continue
        keys = label_keys(t)
        for k in pd.unique(keys):
            if k in have or (k in rows and rows[k][0] != ref.version):
                continue  # a label of the newest tables, or one a newer version already supplied
            sub = t[keys == k]
            rows[k] = (ref.version, pd.concat([rows[k][1], sub], ignore_index=True) if k in rows else sub)
    return rows


def fit_older_labels(df: pd.DataFrame, refs, acc, cal) -> tuple[dict, dict]:
    """Sections for the kernel labels only older framework versions' tables carry (``refs``, newest first:
    :func:`simllm.cost.tables.older_tables`), each fitted on its own rows from the newest version that holds
    it, and stored as that label's section (``<kind>/<dtype>/<label>``), which prices every row so labelled.

    Why: a framework's collector labels the kernel it timed, and the label changes with the version (H100
    vLLM 0.14 / 0.19 GEMMs are ``vllm_default`` where 0.24 names the kernel class; vLLM 0.19 MoE
    ``vllm_fused_moe``; SGLang 0.5.10 ``sglang``), as does what the label's rows time: vLLM 0.19's
    ``vllm_default`` fp8 block-scaled GEMM rows measure about half of 0.24's DeepGEMM / FlashInfer rows on the
    same shapes, its fp8 MoE rows a third. Priced by the dtype's section (fitted on the newest kernels), such
    tables read +108% (fp8_block GEMM) and +227% (fp8 MoE) off; a GPU whose newest collected version is an
    older one is priced so too. Existing sections are never replaced (a label of the newest tables is never
    refitted here); a label needs ``MIN_GROUP`` rows. Returns (sections, record: section -> rows, version,
    median / p90 error after the fit)."""
    load_plugins()
    rows = older_label_rows(df, refs)
    kernels = dict(getattr(cal, "kernels", None) or {})
    new, rec = {}, {}
    for key, (version, sub) in sorted(rows.items(), key=lambda kv: kv[0]):
        kind, dtype, label = key.split("\x1f")
        f = FITTERS.get(kind)
        name = section_name(key)
        if f is None or len(sub) < MIN_GROUP or not label or label in ("nan", "None") or name in kernels:
            continue
        t = sub["latency_s"].to_numpy(float)

        def err(ks, labels):
            e = np.abs(price(sub, acc, _labelled(cal, ks, labels)) / t - 1)
            return e[np.isfinite(e)]

        before = err({**kernels, **new}, rec)
        fitted = f(sub, acc, _labelled(cal, {**kernels, **new}, rec))
        sec = fitted.get(f"{kind}/{dtype}")
        if not sec or not len(before):
            continue
        after = err({**kernels, **new, name: sec}, {**rec, name: {}})
        if not len(after) or np.median(after) >= np.median(before):
            continue  # the pricer does not read the label's section (or the fit gains nothing): not kept
        new[name] = sec
        rec[name] = {"rows": int(len(sub)), "version": version, "table": str(sub["source"].iloc[0]),
                     "median_before": round(float(np.median(before)), 4),
                     "p90_before": round(float(np.percentile(before, 90)), 4),
                     "median": round(float(np.median(after)), 4), "p90": round(float(np.percentile(after, 90)), 4)}
    return new, rec


def without_older_labels(cal, kinds=None, frameworks=None):
    """``cal`` less the older-label sections of ``kinds`` of ``frameworks`` (None: all; :func:`drop_older_labels`):
    a fit of those kinds refits them from the refitted sections (left in, they would be kept as they were,
    :func:`fit_older_labels` never replacing one); a fit of one family folder keeps the other kinds'."""
    return drop_older_labels(cal, kinds, frameworks)


def section_name(key: str) -> str:
    """The section a :func:`label_keys` key is fitted as: ``<kind>/<dtype>/<label>``."""
    return "/".join(key.split("\x1f"))


def with_older_labels(cal, acc, paths, per: dict):
    """``cal`` with, for every framework of ``per`` (framework -> its newest tables' rows), the sections of
    :func:`fit_older_labels` for the older version folders under ``paths`` (GPU or family folders; other
    paths hold no older versions) laid into ``frameworks[F]`` (kernels and the fit record's
    ``older_labels``)."""
    frameworks = {k: dict(v) for k, v in (getattr(cal, "frameworks", None) or {}).items()}
    for fw, df in per.items():
        if fw in ("nccl", "vidur", ""):
            continue
        refs = [r for p in paths for r in older_tables(p, fw)]
        if not refs:
            continue
        secs, rec = fit_older_labels(df, refs, acc, cal.for_framework(fw))
        if not secs:
            continue
        ent = frameworks.setdefault(fw, {})
        ent["kernels"] = {**(ent.get("kernels") or {}), **secs}
        ent["fit"] = {**(ent.get("fit") or {}), "older_labels": {**older_label_record(cal, fw), **rec}}
    return replace(cal, frameworks=frameworks)


__all__ = ["fit_older_labels", "label_keys", "older_label_rows", "section_name", "with_older_labels",
           "without_older_labels"]
