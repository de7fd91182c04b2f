"""Per-kernel-class pricing and fitting registry over the table contract of :mod:`simllm.cost.tables`.

``PRICERS[kind](df, acc, cal) -> np.ndarray``
    predicted seconds for every row of ``df`` (rows of that one ``kind``, any dtypes), same order;
    ``NaN`` for a row the model cannot price (counted in ``unpriced`` by :func:`check`, never dropped).
    ``acc`` is a :class:`simllm.hardware.Accelerator`; ``cal`` a :class:`simllm.cost.calibration.Calibration`.
    A pricer reads its own parameters from ``cal.kernels[<section>]`` (a plain dict, see
    :func:`section`), so modules add kernel classes without editing the calibration dataclasses.
    ``PRICERS["<framework>:<kind>"]`` (e.g. ``vidur:send_recv``) takes precedence for that
    framework's rows (Vidur's collective tables have their own columns and a legacy model).
``FITTERS[kind](df, acc, cal) -> dict``
    fits that kernel class on ``df`` (rows of that kind) and returns ``{section_name: params_dict}``
    to merge into ``cal.kernels``; several kinds may share one section (the first fitted wins unless
    the fitter returns it again). :func:`fit` runs all fitters, then prices everything once.

Modules register with :func:`register` at import time; :mod:`simllm.cost.kernel_models` (GEMM,
attention, MLA, mla_bmm) is imported here; other modules (collectives, DeepEP, MoE layer) register
themselves the same way and are imported by :data:`_PLUGINS` below (add a line there).
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Callable, Optional

import numpy as np
import pandas as pd

Pricer = Callable[[pd.DataFrame, object, object], np.ndarray]
Fitter = Callable[[pd.DataFrame, object, object], dict]

PRICERS: dict[str, Pricer] = {}
FITTERS: dict[str, Fitter] = {}

#: modules that register pricers/fitters when imported (no import cycle: they import this module)
_PLUGINS = ["simllm.cost.kernel_models", "simllm.cost.vidur_comm", "simllm.cost.comm_tables", "simllm.cost.moe_layer",
            "simllm.cost.deepep", "simllm.cost.deepep_normal"]
_loaded = False


def register(kind: str, pricer: Optional[Pricer] = None, fitter: Optional[Fitter] = None) -> None:
    if pricer is not None:
        PRICERS[kind] = pricer
    if fitter is not None:
        FITTERS[kind] = fitter


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    for m in _PLUGINS:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:  # a plugin another branch adds later
            if e.name != m:
                raise
    _loaded = True


def section(cal, name: str) -> dict:
    """The parameter dict of one kernel section of a calibration (``{}`` when absent)."""
    return dict((getattr(cal, "kernels", None) or {}).get(name) or {})


def price(df: pd.DataFrame, acc, cal) -> np.ndarray:
    """Predicted seconds for every row (NaN where no pricer or the pricer cannot price it)."""
    load_plugins()
    out = np.full(len(df), np.nan)
    if df.empty:
        return out
    cal = older_labels_for(cal, acc)
    kinds = df["kind"].astype(str).to_numpy()
    fws = df["framework"].astype(str).to_numpy() if "framework" in df.columns else np.full(len(df), "")
    keys = np.char.add(np.char.add(fws.astype(str), ":"), kinds.astype(str))
    for key in pd.unique(keys):
        fw, kind = str(key).split(":", 1)
        f = PRICERS.get(f"{fw}:{kind}") or PRICERS.get(kind)  # a framework-specific pricer wins
        if f is None:
            continue
        sel = np.flatnonzero(keys == key)
        out[sel] = np.asarray(f(df.iloc[sel], acc, cal), dtype=float)
    return out


def older_labels_for(cal, acc):
    """``cal`` as it prices ``acc``: the sections of older versions' kernel labels
    (:func:`simllm.cost.older_labels.fit_older_labels`) only for the device they were fitted on and the devices that
    ship with its file (``calibration:`` in their descriptor: H200, H800, H20, B200 and GB200 take H100's). A label
    names the kernel that version ran on that device's architecture (vLLM 0.19's ``vllm_flash_attn`` is
    FlashAttention 3 on H100, FlashAttention 2 on A100 and L40S), so another device priced with this file (the
    leave-one-GPU-out figure of ``benchmarks/cost_model_error.py``) gets the sections of the newest kernels instead."""
    fw = getattr(cal, "framework", None) or ""
    if acc is None or not older_label_record(cal, fw):
        return cal
    ships = str(getattr(acc, "calibration", "") or "").removesuffix(".yaml")
    if getattr(cal, "device", "") in (getattr(acc, "name", None), ships):
        return cal
    return drop_older_labels(cal, frameworks={fw})


def older_label_record(cal, framework: str) -> dict:
    """``frameworks[framework].fit.older_labels`` of ``cal``: section name -> what its fit recorded."""
    fws = getattr(cal, "frameworks", None) or {}
    return ((fws.get(framework) or {}).get("fit") or {}).get("older_labels") or {}


def drop_older_labels(cal, kinds=None, frameworks=None):
    """``cal`` less the older-label sections (and their record) of ``kinds`` (None: every kind) of ``frameworks``
    (None: every one), from each framework's entry and, for the framework a view prices (``cal.framework``), from
    its merged ``kernels`` too."""
    fws = {k: dict(v) for k, v in (getattr(cal, "frameworks", None) or {}).items()}
    kernels = getattr(cal, "kernels", None) or {}
    for fw, ent in fws.items():
        rec = older_label_record(cal, fw)
        drop = {k for k in rec if (kinds is None or k.split("/", 1)[0] in kinds)
                and (frameworks is None or fw in frameworks)}
        if not drop:
            continue
        ent["kernels"] = {k: v for k, v in (ent.get("kernels") or {}).items() if k not in drop}
        keep = {k: v for k, v in rec.items() if k not in drop}
        ent["fit"] = {**{k: v for k, v in ent["fit"].items() if k != "older_labels"},
                      **({"older_labels": keep} if keep else {})}
        if fw == (getattr(cal, "framework", None) or ""):
            kernels = {k: v for k, v in kernels.items() if k not in drop}
    return replace(cal, kernels=kernels, frameworks=fws)


def error_summary(df: pd.DataFrame, pred: np.ndarray) -> dict:
    """The ``calibrate check --json`` object of one framework:
    ``{"n", "median_abs_rel_error", "p90_abs_rel_error", "unpriced": {kind: count},
    "per_op": {"<kind>/<dtype>": {"n", "median", "p90", "median_signed"}}}``.
    ``n`` counts every row; unpriced rows count as 100% error in the overall median/p90 (they
    count against the targets) and are left out of their group's statistics."""
    t = df["latency_s"].to_numpy(float)
    pred = np.asarray(pred, float)
    ok = np.isfinite(pred) & (pred > 0)
    signed = np.where(ok, pred / t - 1.0, np.nan)
    err = np.where(ok, np.abs(signed), 1.0)
    kinds = df["kind"].astype(str).to_numpy()
    unpriced = {}
    for k in sorted(set(kinds[~ok].tolist())):
        unpriced[k] = int(((kinds == k) & ~ok).sum())
    per = {}
    keys = (df["kind"].astype(str) + "/" + df["dtype"].astype(str)).to_numpy()
    for key in sorted(set(keys.tolist())):
        m = (keys == key) & ok
        if not m.any():
            continue
        e = np.abs(signed[m])
        per[key] = {"n": int(m.sum()), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
                    "median_signed": float(np.median(signed[m]))}
    n = len(t)
    return {"n": int(n), "median_abs_rel_error": float(np.median(err)) if n else float("nan"),
            "p90_abs_rel_error": float(np.percentile(err, 90)) if n else float("nan"),
            "unpriced": unpriced, "per_op": per}


def check(df: pd.DataFrame, acc, cal) -> dict:
    return error_summary(df, price(df, acc, cal))


def fit(df: pd.DataFrame, acc, cal):
    """A calibration with every kernel class present in ``df`` fitted (others kept from ``cal``);
    ``fit`` records per (kind, dtype) errors and the source tables."""
    load_plugins()
    kernels = dict(getattr(cal, "kernels", None) or {})
    # custom all-reduce falls back to NCCL's all-reduce: fit NCCL first
    for kind in sorted(pd.unique(df["kind"].astype(str)), key=lambda k: (k == "custom_allreduce", k)):
        f = FITTERS.get(kind)
        if f is None:
            continue
        sub = df[df["kind"] == kind]
        cur = replace(cal, kernels=kernels)
        kernels.update(f(sub, acc, cur))
    return replace(cal, kernels=kernels)


def _merge_record(old: dict, new: dict, kinds) -> dict:
    """The fit record after refitting some kernel classes only (e.g. ``calibrate fit <gpu>/gemm``):
    the refitted kinds' groups and tables replace the old ones, the others are kept; the overall
    figures, which need every row, are those of the last full fit (``overall_from``)."""
    keep = {k: v for k, v in (old.get("per_op") or {}).items() if k.split("/", 1)[0] not in kinds}
    unpriced = {k: v for k, v in (old.get("unpriced") or {}).items() if k not in kinds}
    return {**{k: old[k] for k in ("n", "median_abs_rel_error", "p90_abs_rel_error") if k in old},
            "overall_from": "the last full fit (a refit of " + ", ".join(kinds) + " keeps it)",
            "tables": sorted(set(old.get("tables", [])) | set(new["tables"])),
            "unpriced": {**unpriced, **new["unpriced"]}, "per_op": dict(sorted({**keep, **new["per_op"]}.items()))}


def fit_frameworks(per: dict, acc, cal, sources=()):
    """Fit each framework's tables apart (``per``: framework -> contract DataFrame); the result's
    ``frameworks[F]`` holds F's kernel sections and fit record (source tables, per (kind, dtype)
    errors); the top-level ``kernels`` take vLLM's (else the first framework's) sections."""
    frameworks = dict(getattr(cal, "frameworks", None) or {})
    fitted = {}
    same_device = cal.device == acc.name
    partial = set()
    for fw, df in per.items():
        c = fit(df, acc, cal.for_framework(fw))
        st = check(df, acc, c)
        rec = {"tables": sorted(set(df["source"].astype(str))),
               "n": st["n"], "median_abs_rel_error": round(st["median_abs_rel_error"], 4),
               "p90_abs_rel_error": round(st["p90_abs_rel_error"], 4), "unpriced": st["unpriced"],
               "per_op": {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv)
                              for kk, vv in v.items()} for k, v in st["per_op"].items()}}
        old = ((frameworks.get(fw) or {}).get("fit") or {}) if same_device else {}
        if old and not set(rec["tables"]) >= set(old.get("tables", [])):
            rec = _merge_record(old, rec, sorted(set(df["kind"].astype(str))))
            partial |= set(df["kind"].astype(str))
        labels = older_label_record(cal, fw) if same_device else None
        if labels:  # older versions' label sections the caller kept (simllm.cost.older_labels) keep their record
            rec["older_labels"] = labels
        frameworks[fw] = {"kernels": c.kernels, "fit": rec}
        fitted[fw] = c.kernels
    default = "vllm" if "vllm" in fitted else (sorted(fitted)[0] if fitted else None)
    if default != "vllm" and "vllm" in (getattr(cal, "frameworks", None) or {}) and same_device:
        default = None  # the top-level sections stay vLLM's when another framework alone is refitted
    kernels = {**(cal.kernels or {}), **(fitted.get(default) or {})}
    base = cal.source.split("; AIConfigurator tables ")[0] if cal.device == acc.name else ""
    base = "" if base.startswith("AIConfigurator tables ") else base
    src = base + ("; " if base else "") + "AIConfigurator tables " + ", ".join(sources)
    if partial:  # a refit of some kernel classes: the file's own provenance stays, the refit is added
        src = f"{cal.source}; {', '.join(sorted(partial))} refitted on AIConfigurator tables {', '.join(sources)}"
    own_fit = cal.fit if cal.device == acc.name else {}  # never another device's fit record
    return replace(cal, device=acc.name, kernels=kernels, frameworks=frameworks, source=src, fit=own_fit)


__all__ = ["fit_frameworks", "older_labels_for", "older_label_record", "drop_older_labels", "PRICERS", "FITTERS", "register", "price", "check", "fit", "error_summary", "section", "load_plugins"]
