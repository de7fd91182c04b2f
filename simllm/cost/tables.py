"""Readers of measured kernel tables into ONE in-memory form (the contract other modules rely on).

Contract
--------
:func:`read_tables` returns a :class:`pandas.DataFrame` with one row per measured kernel call and
these columns (always present, whatever the source):

``kind``       kernel class, one of :data:`KINDS` family names: ``gemm``, ``context_attention``,
               ``generation_attention``, ``context_mla``, ``generation_mla``, ``mla_bmm``, ``moe``,
               ``nccl_all_reduce``, ``nccl_all_gather``, ``nccl_reduce_scatter``, ``nccl_alltoall``
               (``nccl_<op_name>`` for any other NCCL op), ``custom_allreduce``,
               ``deepep_ll_dispatch``, ``deepep_ll_combine``, ``deepep_normal_dispatch``,
               ``deepep_normal_combine``; Vidur's collective tables give ``nccl_all_reduce`` and
               ``send_recv``.
``dtype``      the table's own dtype string (``bfloat16``, ``fp8``, ``fp8_block``, ``int4_wo``, ``half``,
               ...); from ``gemm_dtype`` / ``attn_dtype`` / ``mla_dtype`` / ``bmm_dtype`` / ``moe_dtype`` /
               ``nccl_dtype`` / ``allreduce_dtype``; ``"unspecified"`` where a table has none (DeepEP);
               ``"fp16"`` for Vidur (its profiler runs fp16).
``framework``  ``vllm`` | ``trtllm`` | ``sglang`` | ``nccl`` | ``vidur`` (lower case, from the FOLDER name of
               the AIConfigurator layout, never from the table's own ``framework`` column, which is not
               always right; a lone table outside the layout falls back to that column).
``version``    the version folder the table was read from (after following ``reuse.yaml``: the folder
               that was asked for, i.e. the version the framework runs, not the donor's).
``gpu``        the GPU folder name (``a100_sxm``, ``h100_sxm``, ``l40s``), else the table's ``device``
               column, else ``""``; Vidur: ``a100``.
``source``     path of the file the row came from (the donor table when reused).
``latency_s``  measured seconds (AIConfigurator ``latency`` is in ms; DeepEP ``*_us`` columns in us;
               Vidur ``time_stats.<op>.median`` in ms).
plus the table's native shape columns, unchanged (``m``, ``n``, ``k``; ``batch_size``, ``isl``, ``step``,
``num_heads``, ``num_key_value_heads``, ``head_dim``, ``kv_cache_dtype``, ``window_size`` (0 = none;
added as 0 when an attention table lacks it), ``kernel_source``; ``num_gpus``, ``message_size``
(ELEMENTS of ``dtype`` for NCCL, as published), ``backend``; DeepEP's ``num_token``, ``hidden_size``,
``num_topk``, ``num_experts``, ``node_num``, ...). A column a table does not have is NaN for its rows.
Vidur GEMM rows carry ``m, n, k`` (per-rank shapes as in Vidur's profiler) and ``op`` (attn_pre_proj, ...);
Vidur collective rows carry ``size`` (bytes), ``num_workers``, ``devices_per_node``.

Which tables are read (``resolve``). PATH may be a GPU folder (``.../h100_sxm``), a family folder
(``.../h100_sxm/gemm``), a framework or version folder below it, one parquet table, or a Vidur CSV
(or a folder of them). For a GPU or family folder and a framework F: for every table name under F,
the newest version folder (versions ordered as version numbers: 0.5.14 after 0.5.9, 1.3.0rc20 after
1.3.0rc15, a release after its rc) that *holds* the table, where a parquet in the folder wins over an
entry of its ``reuse.yaml``, and a ``reuse.yaml`` entry is followed to the donor version; plus NCCL's
newest version (``comm/nccl``) for every framework. Table files whose name is not in
:data:`TABLE_KINDS` are skipped in folders (listed by :func:`resolve`) and refused when named alone.

Bad input raises :class:`~simllm.errors.InputError` naming the file and the field: unreadable /
truncated parquet, a missing required column, an unknown framework, a table whose GPU (folder or
``device`` column) differs from the ``--hw`` device (:func:`check_gpu`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError

#: table file stem -> (kind, dtype column, required shape columns)
TABLE_KINDS: dict[str, tuple[str, Optional[str], tuple[str, ...]]] = {
    "gemm_perf": ("gemm", "gemm_dtype", ("m", "n", "k", "latency")),
    # step (cached prefix / decode position), kv_cache_dtype, window_size, tp_size: optional
    # (0, the attention dtype, 0 and unused when absent)
    "context_attention_perf": ("context_attention", "attn_dtype",
                               ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "latency")),
    "generation_attention_perf": ("generation_attention", "attn_dtype",
                                  ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "latency")),
    "context_mla_perf": ("context_mla", "mla_dtype", ("batch_size", "isl", "num_heads", "latency")),
    "generation_mla_perf": ("generation_mla", "mla_dtype", ("batch_size", "isl", "num_heads", "latency")),
    "mla_bmm_perf": ("mla_bmm", "bmm_dtype", ("num_tokens", "num_heads", "op_name", "latency")),
    "moe_perf": ("moe", "moe_dtype", ("num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
                                      "moe_tp_size", "moe_ep_size", "latency")),
    "nccl_perf": ("nccl", "nccl_dtype", ("num_gpus", "message_size", "op_name", "latency")),
    "custom_allreduce_perf": ("custom_allreduce", "allreduce_dtype", ("num_gpus", "message_size", "latency")),
    "wideep_deepep_ll_perf": ("deepep_ll", None, ("hidden_size", "num_token", "num_topk", "num_experts",
                                                  "dispatch_avg_t_us", "combine_avg_t_us")),
    "wideep_deepep_normal_perf": ("deepep_normal", None, ("hidden_size", "num_token", "num_topk", "num_experts",
                                                          "dispatch_transmit_us", "dispatch_notify_us",
                                                          "combine_transmit_us", "combine_notify_us")),
}
FRAMEWORKS = ("vllm", "trtllm", "sglang")
CONTRACT_COLUMNS = ("kind", "dtype", "framework", "version", "gpu", "source", "latency_s")
KINDS = ("gemm", "context_attention", "generation_attention", "context_mla", "generation_mla", "mla_bmm", "moe",
         "nccl_all_reduce", "nccl_all_gather", "nccl_reduce_scatter", "nccl_alltoall", "custom_allreduce",
         "deepep_ll_dispatch", "deepep_ll_combine", "deepep_normal_dispatch", "deepep_normal_combine", "send_recv")
_FAMILY_HINTS = {"gemm", "attention", "mla", "moe", "comm", "mla_bmm"}
_GPU_TOKEN = re.compile(r"(?<![a-z0-9])((?:gb|mi|[a-z])\d{2,4}[a-z]?)(?![0-9])")


# --------------------------------------------------------------------------- versions
def version_key(v: str) -> tuple:
    """Sort key ordering version strings as version numbers (0.5.14 > 0.5.9; rc < release < post;
    dev first). Unparsable strings sort before every number."""
    s = str(v).strip().lower().lstrip("v")
    m = re.match(r"(\d+(?:\.\d+)*)(.*)$", s)
    if not m:
        return ((-1,), 0, 0, s)
    nums = tuple(int(x) for x in m.group(1).split("."))
    nums = nums + (0,) * (6 - len(nums))
    rest = m.group(2).lstrip(".-_+")
    r = re.match(r"(dev|a|alpha|b|beta|rc|c|post)?\.?(\d*)", rest)
    tag, num = (r.group(1) or ""), int(r.group(2) or 0) if r else ("", 0)
    rank = {"dev": -4, "a": -3, "alpha": -3, "b": -2, "beta": -2, "rc": -1, "c": -1, "": 0, "post": 1}.get(tag, 0)
    if rest and not tag:
        rank = 0
    return (nums, rank, num, rest)


# --------------------------------------------------------------------------- GPU names
def gpu_token(name: str) -> str:
    """The GPU model token of a name: ``NVIDIA H100 80GB HBM3`` -> ``h100``, ``a100_sxm`` -> ``a100``,
    ``l40s`` -> ``l40s``, ``mi300x`` -> ``mi300x``; ``""`` when none."""
    m = _GPU_TOKEN.search(str(name).lower().replace("_", "-"))
    return m.group(1) if m else ""


def check_gpu(df: pd.DataFrame, acc) -> None:
    """Refuse tables measured on another GPU than ``acc`` (by folder name, else ``device`` column)."""
    want = {gpu_token(acc.name)} | {gpu_token(a) for a in getattr(acc, "aliases", [])}
    want.discard("")
    if not want or df.empty:
        return
    for (src, gpu), _ in df.groupby(["source", "gpu"], sort=False):
        tok = gpu_token(gpu)
        if tok and tok not in want:
            raise InputError(f"table measured on {gpu!r}, not on --hw {acc.name}", file=src, field="gpu")


# --------------------------------------------------------------------------- layout
@dataclass
class TableRef:
    path: Path  # the parquet actually read (donor when reused)
    framework: str
    version: str  # the version folder asked for
    gpu: str
    stem: str


@dataclass
class Resolution:
    tables: list[TableRef] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _level(p: Path) -> str:
    if p.is_file():
        return "table"
    names = {c.name for c in p.iterdir() if c.is_dir()}
    if p.name in _FAMILY_HINTS or (p.parent.name not in _FAMILY_HINTS and
                                   names and names <= set(FRAMEWORKS) | {"nccl"} and not names & _FAMILY_HINTS):
        return "family"
    if names & _FAMILY_HINTS:
        return "gpu"
    if p.parent.name in _FAMILY_HINTS:
        return "framework"
    if p.parent.parent.name in _FAMILY_HINTS:
        return "version"
    return "unknown"


def _reuse(vdir: Path) -> dict[str, str]:
    f = vdir / "reuse.yaml"
    if not f.is_file():
        return {}
    try:
        data = yaml.safe_load(f.read_text()) or {}
        return {str(e["table"]): str(e["from_version"]) for e in data.get("reuse") or []}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"not a reuse.yaml (schema: reuse: [{{table, from_version}}]): {e}", file=f,
                         field="reuse") from None


def _newest_per_table(fw_dir: Path, gpu: str, framework: str, res: Resolution) -> None:
    """Every table of one framework folder, each from the newest version folder that holds it."""
    versions = sorted((d for d in fw_dir.iterdir() if d.is_dir()), key=lambda d: version_key(d.name), reverse=True)
    stems: set[str] = set()
    for d in versions:
        stems |= {f.stem for f in d.glob("*.parquet")} | set(_reuse(d))
    for stem in sorted(stems):
        if stem not in TABLE_KINDS:
            res.skipped.append(str(fw_dir / "*" / f"{stem}.parquet"))
            continue
        for d in versions:
            f = d / f"{stem}.parquet"
            if f.is_file():
                res.tables.append(TableRef(f, framework, d.name, gpu, stem))
                break
            reuse = _reuse(d)
            if stem in reuse:
                donor = _follow(fw_dir, reuse[stem], stem, set())
                if donor is not None:
                    res.tables.append(TableRef(donor, framework, d.name, gpu, stem))
                    break


def folder_level(path: str | Path) -> str:
    """What a path of the native layout is: ``gpu``, ``family``, ``framework``, ``version``, ``table`` or
    ``unknown``."""
    p = Path(path)
    return _level(p) if p.exists() else "unknown"


def older_tables(path: str | Path, framework: str) -> list[TableRef]:
    """Every table of ``framework`` under a GPU or family folder that :func:`resolve` does not pick: the ones of
    older version folders (newest first; a ``reuse.yaml`` entry adds nothing, it points at one of them). A
    calibration fit reads them for the kernel labels the newest tables do not carry (older framework versions
    label their kernels otherwise: H100 vLLM 0.14 / 0.19 GEMMs ``vllm_default``, 0.24 the kernel class), see
    :func:`simllm.cost.pricing.fit_older_labels`."""
    p = Path(path)
    lvl = folder_level(p)
    fams = [d for d in sorted(p.iterdir()) if d.is_dir()] if lvl == "gpu" else [p] if lvl == "family" else []
    gpu = p.name if lvl == "gpu" else p.parent.name
    picked = {r.path.resolve() for r in resolve(p, framework).tables}
    out: list[TableRef] = []
    for fam in fams:
        fw_dir = fam / framework
        if not fw_dir.is_dir():
            continue
        for d in sorted((d for d in fw_dir.iterdir() if d.is_dir()), key=lambda d: version_key(d.name), reverse=True):
            for f in sorted(d.glob("*.parquet")):
                if f.stem in TABLE_KINDS and f.resolve() not in picked:
                    out.append(TableRef(f, framework, d.name, gpu, f.stem))
    return out


def _follow(fw_dir: Path, version: str, stem: str, seen: set) -> Optional[Path]:
    if version in seen:
        return None
    seen.add(version)
    d = fw_dir / version
    f = d / f"{stem}.parquet"
    if f.is_file():
        return f
    r = _reuse(d) if d.is_dir() else {}
    return _follow(fw_dir, r[stem], stem, seen) if stem in r else None


def _nccl_newest(gpu_dir: Path, res: Resolution) -> None:
    nd = gpu_dir / "comm" / "nccl"
    if not nd.is_dir():
        return
    for d in sorted((d for d in nd.iterdir() if d.is_dir()), key=lambda d: version_key(d.name), reverse=True):
        f = d / "nccl_perf.parquet"
        if f.is_file():
            res.tables.append(TableRef(f, "nccl", d.name, gpu_dir.name, "nccl_perf"))
            return


def frameworks_in(path: str | Path) -> list[str]:
    """Framework folders present under a GPU or family folder (or the one a deeper path is in)."""
    p = Path(path)
    lvl = _level(p) if p.exists() else "unknown"
    if lvl == "gpu":
        return sorted({fw.name for fam in p.iterdir() if fam.is_dir() for fw in fam.iterdir()
                       if fw.is_dir() and fw.name != "nccl"})
    if lvl == "family":
        return sorted(fw.name for fw in p.iterdir() if fw.is_dir() and fw.name != "nccl")
    if lvl == "framework":
        return [p.name]
    if lvl == "version":
        return [p.parent.name]
    return []


def resolve(path: str | Path, framework: Optional[str] = None) -> Resolution:
    """The tables PATH stands for (see the module docstring), for one framework (None: any)."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", file=p)
    if framework is not None:
        framework = framework.lower()
    res = Resolution()
    lvl = _level(p)
    if lvl == "table":
        if p.suffix == ".parquet":
            parts = p.resolve().parts
            fam_ok = len(parts) >= 5 and parts[-4] in _FAMILY_HINTS | {p.resolve().parents[2].name}
            fw, ver, gpu = (parts[-3], parts[-2], parts[-5]) if len(parts) >= 5 and parts[-3] in \
                set(FRAMEWORKS) | {"nccl"} and fam_ok else ("", "", "")
            res.tables.append(TableRef(p, fw, ver, gpu, p.stem))
        else:
            res.tables.append(TableRef(p, "vidur", "", "a100" if "a100" in str(p).lower() else "", p.stem))
        return res
    if lvl == "gpu":
        fws = frameworks_in(p) if framework is None else [framework]
        for fam in sorted(d for d in p.iterdir() if d.is_dir()):
            for fw in fws:
                if (fam / fw).is_dir():
                    _newest_per_table(fam / fw, p.name, fw, res)
        _nccl_newest(p, res)
        return res
    if lvl == "family":
        gpu = p.parent.name
        fws = frameworks_in(p) if framework is None else [framework]
        for fw in fws:
            if (p / fw).is_dir():
                _newest_per_table(p / fw, gpu, fw, res)
        if p.name == "comm":
            _nccl_newest(p.parent, res)
        return res
    if lvl == "framework":
        _newest_per_table(p, p.parent.parent.name, p.name, res)
        return res
    if lvl == "version":
        for f in sorted(p.glob("*.parquet")):
            if f.stem in TABLE_KINDS:
                res.tables.append(TableRef(f, p.parent.name, p.name, p.parent.parent.parent.name, f.stem))
            else:
                res.skipped.append(str(f))
        return res
    csvs = sorted(p.glob("*.csv"))
    if csvs:
        for f in csvs:
            res.tables.append(TableRef(f, "vidur", "", "a100" if "a100" in str(p).lower() else "", f.stem))
        return res
    raise InputError("not a table, a Vidur CSV folder or an AIConfigurator GPU/family/framework/version folder",
                     file=p)


# --------------------------------------------------------------------------- reading
def _read_parquet(ref: TableRef) -> pd.DataFrame:
    try:
        return pd.read_parquet(ref.path)
    except Exception as e:  # pyarrow raises many kinds for truncated / corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read as parquet: {msg}", file=ref.path, field="parquet") from None


def _aic_frame(ref: TableRef) -> pd.DataFrame:
    if ref.stem not in TABLE_KINDS:
        raise InputError(f"unknown table (expected one of {', '.join(sorted(TABLE_KINDS))}.parquet)",
                         file=ref.path, field="table")
    kind, dcol, req = TABLE_KINDS[ref.stem]
    df = _read_parquet(ref)
    for c in req + ((dcol,) if dcol else ()):
        if c not in df.columns:
            raise InputError(f"missing column {c!r} of a {ref.stem} table (has {', '.join(map(str, df.columns))})",
                             file=ref.path, field=c)
    df = df.copy()
    framework = ref.framework or str(df["framework"].iloc[0]).lower() if "framework" in df.columns and len(df) \
        else ref.framework
    version = ref.version or (str(df["version"].iloc[0]) if "version" in df.columns and len(df) else "")
    gpu = ref.gpu or (str(df["device"].iloc[0]) if "device" in df.columns and len(df) else "")
    df = df.drop(columns=[c for c in ("framework", "version") if c in df.columns])
    if kind.startswith("deepep"):
        parts = []
        for phase in ("dispatch", "combine"):
            d = df.copy()
            if kind == "deepep_ll":
                t = d[f"{phase}_avg_t_us"].to_numpy(float)
            else:
                t = d[f"{phase}_transmit_us"].to_numpy(float) + d[f"{phase}_notify_us"].to_numpy(float)
            d["latency_s"] = t * 1e-6
            d["kind"] = f"{kind}_{phase}"
            parts.append(d)
        df = pd.concat(parts, ignore_index=True)
        df["dtype"] = "unspecified"
    else:
        df["latency_s"] = pd.to_numeric(df["latency"], errors="coerce").to_numpy(float) * 1e-3
        if kind == "nccl":
            # a collective the model has no physics for (broadcast, send/recv, ...) keeps its own kind
            # ``nccl_<op_name>``: no pricer is registered for it, so `calibrate check` counts its rows in
            # ``unpriced`` (against the targets) instead of refusing the whole folder
            df["kind"] = "nccl_" + df["op_name"].astype(str)
        else:
            df["kind"] = kind
        df["dtype"] = df[dcol].astype(str)
    if kind in ("context_attention", "generation_attention", "context_mla", "generation_mla"):
        if "step" not in df.columns:
            df["step"] = 0
        if "kv_cache_dtype" not in df.columns:
            df["kv_cache_dtype"] = df["dtype"]
    if kind in ("context_attention", "generation_attention"):
        if "window_size" not in df.columns:
            df["window_size"] = 0
        df["window_size"] = df["window_size"].fillna(0)
    df["framework"] = framework
    df["version"] = version
    df["gpu"] = gpu
    df["source"] = str(ref.path)
    return df


_VIDUR_SHAPE = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
                "num_tensor_parallel_workers")
_VIDUR_GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def _vidur_frame(ref: TableRef) -> pd.DataFrame:
    p = ref.path
    try:
        raw = pd.read_csv(p)
    except Exception as e:
        raise InputError(f"cannot read as CSV: {str(e).splitlines()[0]}", file=p, field="csv") from None
    cols = set(raw.columns)
    base = {"framework": "vidur", "version": "", "gpu": ref.gpu, "source": str(p), "dtype": "fp16"}
    if {"size", "num_workers", "devices_per_node", "collective"} <= cols:
        out = []
        for op, grp in raw.groupby("collective"):
            col = f"time_stats.{op}.median"
            if col not in grp.columns:
                raise InputError(f"missing column {col!r}", file=p, field=col)
            d = grp[["size", "num_workers", "devices_per_node"]].copy()
            d["latency_s"] = grp[col].to_numpy(float) * 1e-3
            d["kind"] = "nccl_all_reduce" if op == "all_reduce" else str(op)
            out.append(d)
        df = pd.concat(out, ignore_index=True)
    elif set(_VIDUR_SHAPE) <= cols:
        H = raw["n_embd"].to_numpy(float)
        hd = H / raw["n_head"].to_numpy(float)
        kv = raw["n_kv_head"].to_numpy(float)
        F = raw["n_expanded_embd"].to_numpy(float)
        tp = raw["num_tensor_parallel_workers"].to_numpy(float)
        T = raw["num_tokens"].to_numpy(float)
        gated = np.array([str(v).strip().lower() in ("true", "1") for v in raw["use_gated_mlp"]])
        g = np.where(gated, 2.0, 1.0)
        shapes = {"attn_pre_proj": (H, np.floor((H + 2 * kv * hd) / tp)), "attn_post_proj": (np.floor(H / tp), H),
                  "mlp_up_proj": (H, np.floor(g * F / tp)), "mlp_down_proj": (np.floor(F / tp), H)}
        out = []
        for op, (K, N) in shapes.items():
            col = f"time_stats.{op}.median"
            if col not in cols:
                continue
            out.append(pd.DataFrame({"m": T, "n": N, "k": K, "op": op,
                                     "latency_s": raw[col].to_numpy(float) * 1e-3, "kind": "gemm"}))
        if not out:
            raise InputError("a Vidur MLP table without any time_stats.<gemm op>.median column", file=p,
                             field="time_stats.attn_pre_proj.median")
        df = pd.concat(out, ignore_index=True)
    else:
        missing = sorted(set(_VIDUR_SHAPE) - cols)
        raise InputError("neither a Vidur MLP table nor a collective table (size, num_workers, devices_per_node, "
                         f"collective); missing column {missing[0]!r}", file=p, field=missing[0])
    for k, v in base.items():
        df[k] = v
    return df


def read_table(ref: TableRef) -> pd.DataFrame:
    df = _vidur_frame(ref) if ref.framework == "vidur" else _aic_frame(ref)
    df = df[np.isfinite(df["latency_s"].to_numpy(float)) & (df["latency_s"].to_numpy(float) > 0)]
    return df.reset_index(drop=True)


def read_refs(refs: Iterable[TableRef]) -> pd.DataFrame:
    frames = [read_table(r) for r in refs]
    if not frames:
        return pd.DataFrame(columns=list(CONTRACT_COLUMNS))
    df = pd.concat(frames, ignore_index=True, sort=False)
    front = list(CONTRACT_COLUMNS)
    return df[front + [c for c in df.columns if c not in front]]


def read_tables(path: str | Path, framework: Optional[str] = None) -> pd.DataFrame:
    """All rows PATH stands for (one framework, or every framework and NCCL when None)."""
    if framework is not None and framework.lower() not in FRAMEWORKS:
        raise InputError(f"unknown framework {framework!r} (expected one of {', '.join(FRAMEWORKS)})",
                         field="--framework")
    return read_refs(resolve(path, framework).tables)


__all__ = ["TABLE_KINDS", "FRAMEWORKS", "KINDS", "CONTRACT_COLUMNS", "version_key", "gpu_token", "check_gpu",
           "resolve", "read_tables", "read_refs", "read_table", "frameworks_in", "TableRef", "Resolution"]
