"""Sweeps: many scenarios from one base, run in parallel, results in one tidy table.

A sweep file names a base scenario and how to vary it::

    base: ../scenarios/llama3-8b-h100-azure-conv.yaml   # path (relative to this file) or a mapping
    grid:                                # cartesian product over dotted fields
      deployment.tp: [1, 2, 4]
      workload.retime.rate: [2, 4, 8]
    zip:                                 # fields varied together (equal lengths)
      deployment.replicas: [1, 2]
      deployment.batching.max_num_seqs: [128, 256]
    points:                              # an explicit list of overrides
      - {deployment.tp: 8}
    sample: {method: lhs, n: 16, fields: {workload.retime.rate: [1.0, 20.0]}}
    replications: 2                      # seeds: base seed + 0, 1, ...
    seed: 0                              # seed of the sampler

Each point is the base with its overrides applied; its identity is the hash of the resolved
configuration, so a killed sweep restarted with the same file skips what is finished.
Finished points are appended as one JSON line each to ``results.jsonl`` (the durable log,
flushed and fsynced per point); ``results.csv`` and ``results.parquet`` are rebuilt from it
(at start, at most every few seconds while points finish, and at the end), each written under
a temporary name and renamed, so a killed sweep leaves whole tables. A folder is held by one
sweep at a time (:class:`simllm.atomic.FolderLock`): a second sweep into it exits with an
error naming the first. Every point is resolved and validated before any runs
(:func:`validate_items`). A point that raises while running is recorded with
``status=failed`` and its error; the others go on.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import yaml

from .atomic import FolderLock, atomic_path
from .config import load_yaml, set_dotted
from .errors import InputError

RunFn = Callable[[dict], dict]


# ----------------------------------------------------------------------------- dotted fields
def get_dotted(cfg: dict, key: str) -> Any:
    cur: Any = cfg
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(key)
        cur = cur[part]
    return cur


def apply_overrides(base: dict, overrides: dict, *, file: str | Path | None = None) -> dict:
    cfg = copy.deepcopy(base)
    for k, v in overrides.items():
        set_dotted(cfg, k, v, file=file)
    return cfg


def config_hash(cfg: dict) -> str:
    """Stable short hash of a resolved configuration (key order does not matter)."""
    text = json.dumps(cfg, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- sweep spec
@dataclass
class Sweep:
    base: dict
    points: list[dict]  # overrides per point (without seed replication)
    replications: int = 1
    base_dir: Path = field(default_factory=Path.cwd)
    file: str | None = None
    find_max_rate: dict | None = None

    @property
    def swept_fields(self) -> list[str]:
        keys: list[str] = []
        for p in self.points:
            for k in p:
                if k not in keys:
                    keys.append(k)
        return keys

    def expand(self) -> list[dict]:
        """Resolved configurations with ``_overrides`` bookkeeping, replications included."""
        out = []
        base_seed = int(self.base.get("seed", 0) or 0)
        for ov in self.points or [{}]:
            for r in range(self.replications):
                o = dict(ov)
                if self.replications > 1:
                    o["seed"] = base_seed + r
                cfg = apply_overrides(self.base, o, file=self.file)
                out.append({"config": cfg, "overrides": o, "hash": config_hash(cfg)})
        return out


def _lhs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Latin hypercube sample in [0, 1)^k: one point per stratum in every dimension."""
    u = (rng.random((n, k)) + np.arange(n)[:, None]) / n
    for j in range(k):
        u[:, j] = u[rng.permutation(n), j]
    return u


MAX_POINTS = 10_000
"""Most points (grid x zip x sample x replications) one sweep holds: every point is resolved and validated
before any runs, about a millisecond each, so this keeps that check near 10 s. An assumption about time."""


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    data = load_yaml(path)
    known = {"base", "grid", "zip", "points", "sample", "replications", "seed", "find_max_rate", "name", "description"}
    extra = set(data) - known
    if extra:
        raise InputError(f"unknown field (known: {', '.join(sorted(known))})", file=path, field=sorted(extra)[0])
    base = data.get("base")
    base_dir = path.parent
    if isinstance(base, str):
        bpath = (base_dir / base) if not Path(base).is_absolute() else Path(base)
        base_cfg = load_yaml(bpath)
        base_dir = bpath.parent
    elif isinstance(base, dict):
        base_cfg = base
    else:
        raise InputError("expected a scenario path or mapping", file=path, field="base")

    def _lists(key: str) -> dict[str, list]:
        block = data.get(key) or {}
        if not isinstance(block, dict):
            raise InputError("expected a mapping of dotted field -> list of values", file=path, field=key)
        for k, v in block.items():
            if not isinstance(v, list) or not v:
                raise InputError("expected a non-empty list of values", file=path, field=f"{key}.{k}")
        return block

    grid, zp = _lists("grid"), _lists("zip")
    if zp and len({len(v) for v in zp.values()}) != 1:
        raise InputError("all zip lists must have the same length", file=path, field="zip")
    n_grid = math.prod(len(v) for v in grid.values()) if grid else 1
    if n_grid > MAX_POINTS:
        raise InputError(f"the grid has {n_grid:,} points, more than the {MAX_POINTS:,} a sweep validates and runs; "
                         f"split it into several sweeps", file=path, field="grid")
    grid_pts = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    zip_pts = [dict(zip(zp, vals)) for vals in zip(*zp.values())] if zp else [{}]
    points = [{**g, **z} for g in grid_pts for z in zip_pts]
    only_points = not grid and not zp and not data.get("sample") and bool(data.get("points"))
    if only_points:
        points = []  # ``points:`` alone runs exactly those points, not the base as well

    sample = data.get("sample")
    if sample:
        if not isinstance(sample, dict) or "fields" not in sample or "n" not in sample:
            raise InputError("expected {method: lhs|random, n: N, fields: {field: [lo, hi]}}", file=path, field="sample")
        method = sample.get("method", "lhs")
        if method not in ("lhs", "random"):
            raise InputError(f"unknown method {method!r} (lhs, random)", file=path, field="sample.method")
        fields = sample["fields"]
        if not isinstance(fields, dict) or not fields:
            raise InputError("expected a mapping of dotted field -> [low, high]", file=path, field="sample.fields")
        for k, v in fields.items():
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] < v[1]):
                raise InputError("expected [low, high] with low < high", file=path, field=f"sample.fields.{k}")
        rng = np.random.default_rng(int(data.get("seed", 0)))
        if not isinstance(sample["n"], int) or isinstance(sample["n"], bool) or not 1 <= sample["n"] <= 100000:
            raise InputError("expected an integer number of samples in [1, 100000]", file=path, field="sample.n")
        n, keys = int(sample["n"]), list(fields)
        u = _lhs(rng, n, len(keys)) if method == "lhs" else rng.random((n, len(keys)))
        sampled = []
        for row in u:
            pt = {}
            for j, k in enumerate(keys):
                lo, hi = fields[k]
                val = lo + row[j] * (hi - lo)
                pt[k] = int(round(val)) if isinstance(lo, int) and isinstance(hi, int) else float(val)
            sampled.append(pt)
        points = [{**p, **s} for p in points for s in sampled]

    pts = data.get("points") or []
    if not isinstance(pts, list):
        raise InputError("expected a list of mappings of dotted field -> value", file=path, field="points")
    for p in pts:
        if not isinstance(p, dict):
            raise InputError("each point must be a mapping of dotted field -> value", file=path, field="points")
        points.append(dict(p))
    if points == [{}]:
        points = [{}]
    reps = data.get("replications", 1)
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1 or reps > 10000:
        raise InputError("expected an integer in [1, 10000]", file=path, field="replications")
    if not isinstance(data.get("seed", 0), int) or isinstance(data.get("seed", 0), bool) or data.get("seed", 0) < 0:
        raise InputError("expected an integer >= 0", file=path, field="seed")
    fmr = data.get("find_max_rate")
    if fmr is not None:
        if not isinstance(fmr, dict):
            raise InputError("expected a mapping {field, lo, hi, attainment}", file=path, field="find_max_rate")
        extra = set(fmr) - {"field", "lo", "hi", "attainment"}
        if extra:
            raise InputError("unknown field (known: attainment, field, hi, lo)", file=path,
                             field=f"find_max_rate.{sorted(extra)[0]}")
    if len(points) * reps > MAX_POINTS:
        raise InputError(f"{len(points):,} points x {reps} replications exceed the {MAX_POINTS:,} a sweep validates and "
                         f"runs; split it into several sweeps", file=path, field="replications" if reps > 1 else "points")
    return Sweep(base=base_cfg, points=points, replications=reps, base_dir=base_dir, file=str(path),
                 find_max_rate=fmr)


# ----------------------------------------------------------------------------- results log
class ResultsLog:
    """Append-only JSONL log of finished points; tolerant of a torn last line after a kill."""

    def __init__(self, out_dir: Path):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "results.jsonl"

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        with self.path.open() as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # torn line from a killed run: the point will run again
        return rows

    def finished(self, retry_failed: bool = False) -> set[str]:
        return {r["config_hash"] for r in self.read() if r.get("status") == "ok" or not retry_failed}

    def append(self, row: dict) -> None:
        line = json.dumps(row, default=_json_default, sort_keys=False)
        # repair a torn tail (no trailing newline) before appending
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                line = "\n" + line
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def table(self) -> pd.DataFrame:
        rows = self.read()
        if not rows:
            return pd.DataFrame()
        df = pd.json_normalize(rows, sep=".")
        # the last record of a hash wins (a retried failure replaces the failure)
        return df.drop_duplicates("config_hash", keep="last").reset_index(drop=True)

    def write_tables(self) -> pd.DataFrame:
        """Rebuild ``results.csv`` and ``results.parquet`` from the log (each written whole, then renamed)."""
        df = self.table()
        if df.empty:
            return df
        with atomic_path(self.dir / "results.csv") as tmp:
            df.to_csv(tmp, index=False)
        try:
            with atomic_path(self.dir / "results.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        except Exception:  # pyarrow missing or a column of mixed types: CSV is the source of truth
            pass
        return df


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ----------------------------------------------------------------------------- running
def _run_one(fn: RunFn, item: dict) -> dict:
    t0 = time.perf_counter()
    row: dict[str, Any] = {"config_hash": item["hash"], **{f"param.{k}": v for k, v in item["overrides"].items()}}
    try:
        summary = fn(item["config"])
        row.update({"status": "ok", "error": ""})
        row.update({f"{k}": v for k, v in _flatten(summary).items()})
    except Exception as e:  # a failed point is recorded, the sweep goes on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        row.update({"status": "failed", "error": f"{type(e).__name__}: {msg}"})
        if os.environ.get("SIMLLM_DEBUG"):
            row["traceback"] = traceback.format_exc()
    row["wall_s"] = time.perf_counter() - t0
    return row


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=_json_default)
        else:
            out[key] = v
    return out


def run_items(items: list[dict], fn: RunFn, out_dir: Path, *, jobs: int = 1, backend: str = "local",
              address: str | None = None, retry_failed: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run the points not yet in ``out_dir``'s log; append each result as it finishes.

    Holds ``out_dir``'s lock throughout; tables are rebuilt from the log on start (a resumed
    sweep's tables match its log), every ``TABLE_INTERVAL_S`` while points finish, and at the end."""
    with FolderLock(out_dir):
        return _run_items_locked(items, fn, out_dir, jobs=jobs, backend=backend, address=address,
                                 retry_failed=retry_failed, progress=progress)


TABLE_INTERVAL_S = 5.0
"""Seconds between rebuilds of results.csv / results.parquet while a sweep runs."""


def _run_items_locked(items: list[dict], fn: RunFn, out_dir: Path, *, jobs: int, backend: str,
                      address: str | None, retry_failed: bool, progress: bool) -> pd.DataFrame:
    log = ResultsLog(out_dir)
    log.write_tables()
    last_tables = time.monotonic()
    done = log.finished(retry_failed=retry_failed)
    seen: set[str] = set()
    todo = []
    for it in items:
        if it["hash"] in done or it["hash"] in seen:
            continue
        seen.add(it["hash"])
        todo.append(it)
    bar = _progress(total=len(items), initial=len(items) - len(todo), enabled=progress)
    failures = 0

    def _record(row: dict) -> None:
        nonlocal failures, last_tables
        log.append(row)
        failures += row["status"] != "ok"
        if time.monotonic() - last_tables >= TABLE_INTERVAL_S:
            log.write_tables()
            last_tables = time.monotonic()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=failures)

    try:
        if backend == "ray":
            _run_ray(todo, fn, _record, jobs=jobs, address=address)
        elif jobs <= 1 or len(todo) <= 1:
            for it in todo:
                _record(_run_one(fn, it))
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:  # more would only idle
                pending = {pool.submit(_run_one, fn, it) for it in todo}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        _record(fut.result())
    finally:
        if bar is not None:
            bar.close()
    return log.write_tables()


def _run_ray(todo: list[dict], fn: RunFn, record: Callable[[dict], None], *, jobs: int, address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("the ray backend needs the optional extra: pip install -e '.[ray]'", field="--backend") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else max(jobs, 1), include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_run_one)
        refs = [remote.remote(fn, it) for it in todo]
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            for r in ready:
                record(ray.get(r))
    finally:
        if started:
            ray.shutdown()


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="pt", desc="sweep", dynamic_ncols=True)


# ----------------------------------------------------------------------------- capacity search
def find_max_rate(cfg: dict, fn: RunFn, *, rate_field: str, lo: float, hi: float, attainment: float = 0.9,
                  metric: str = "slo_attainment", rel_tol: float = 0.05, max_iter: int = 12) -> dict:
    """Bisect the highest rate at which ``summary[metric] >= attainment`` (DistServe / Vidur-Search).

    Returns ``{max_rate, summary_at_max, evaluations}``; ``max_rate`` is 0 when even ``lo`` fails
    and ``hi`` when ``hi`` still meets the target.
    """
    evals = []

    def ok(rate: float) -> tuple[bool, dict]:
        c = apply_overrides(cfg, {rate_field: rate})
        s = fn(c)
        val = _flatten(s).get(metric)
        good = val is not None and not (isinstance(val, float) and math.isnan(val)) and val >= attainment \
            and not s.get("saturated", False)
        evals.append({"rate": rate, metric: val, "ok": good})
        return good, s

    good_lo, s_lo = ok(lo)
    if not good_lo:
        return {"max_rate": 0.0, "summary_at_max": {}, "evaluations": evals}
    good_hi, s_hi = ok(hi)
    if good_hi:
        return {"max_rate": hi, "summary_at_max": s_hi, "evaluations": evals}
    best, best_s = lo, s_lo
    for _ in range(max_iter):
        if hi - lo <= rel_tol * lo:
            break
        mid = math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2
        g, s = ok(mid)
        if g:
            lo, best, best_s = mid, mid, s
        else:
            hi = mid
    return {"max_rate": best, "summary_at_max": best_s, "evaluations": evals}


# ----------------------------------------------------------------------------- validation before work
def check_search(*, rate_field: str, lo: float, hi: float, attainment: float, file: str | None = None) -> None:
    """Arguments of a capacity search (``--find-max-rate``)."""
    for name, v in (("lo", lo), ("hi", hi)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise InputError(f"expected a positive finite rate (requests/s), got {v!r}", file=file,
                             field=f"find_max_rate.{name}")
    if lo >= hi:
        raise InputError(f"lo ({lo}) must be below hi ({hi})", file=file, field="find_max_rate.lo")
    if not (isinstance(attainment, (int, float)) and 0 < attainment <= 1):
        raise InputError(f"expected an SLO attainment fraction in (0, 1], got {attainment!r}", file=file,
                         field="find_max_rate.attainment")
    if not isinstance(rate_field, str) or not rate_field or any(not p for p in rate_field.split(".")):
        raise InputError(f"expected a dotted field path, got {rate_field!r}", file=file, field="find_max_rate.field")


def validate_items(items: list[dict], base_dir: str | Path, *, file: str | None = None,
                   extra_overrides: dict | None = None) -> None:
    """Resolve and validate every point (format, bounds, descriptors, tp) before any point runs.

    The first bad point raises an :class:`InputError` naming the sweep file, the point (its
    overrides) and the field. ``extra_overrides`` are applied too (a capacity search's rate)."""
    from .hardware import load_accelerator, load_cluster, load_node
    from .model import load_model
    from .parallel import tp_errors
    from .scenario import scenario_from_dict
    from .scenario_checks import check_scenario

    where = Path(base_dir) / "(sweep point)"
    cache: dict = {}

    def _once(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    for i, it in enumerate(items):
        label = f"point {i + 1} of {len(items)} ({', '.join(f'{k}={v!r}' for k, v in it['overrides'].items()) or 'base'})"
        try:
            cfg = apply_overrides(it["config"], extra_overrides or {})
            scn = scenario_from_dict(cfg, file=where)
            check_scenario(scn, where)
            hw = scn.hardware
            if hw.cluster:
                cl = _once(("c", hw.cluster), lambda: load_cluster(hw.cluster))
                need = scn.deployment.replicas * scn.deployment.devices_per_replica
                if need > cl.num_devices:
                    raise InputError(f"{need} devices exceed the cluster's {cl.num_devices}", field="deployment.replicas")
            elif hw.node:
                _once(("n", hw.node), lambda: load_node(hw.node))
            elif hw.accelerator:
                _once(("a", hw.accelerator), lambda: load_accelerator(hw.accelerator))
            model = _once(("m", scn.model), lambda: load_model(scn.model))
            for err in tp_errors(model, scn.deployment.tp):
                raise InputError(err, field="deployment.tp")
        except InputError as e:
            raise InputError(f"{label}: {e.message}", file=file, field=e.field) from None


# ----------------------------------------------------------------------------- scenario runners
def _simulate_point(cfg: dict, base_dir: str) -> dict:
    """Run one resolved scenario (a dict) and return its summary (picklable, top level)."""
    from .scenario import prepare, scenario_from_dict, simulate_result

    where = Path(base_dir) / "(sweep point)"  # relative trace paths resolve against the base scenario's folder
    prep = prepare(scenario_from_dict(cfg, file=where), file=where)
    return simulate_result(prep)[1]  # the summary; no request or step table is built


def scenario_runner(base_dir: str | Path) -> RunFn:
    """The default point runner: a full simulation of the scenario."""
    from functools import partial

    return partial(_simulate_point, base_dir=str(base_dir))


def _capacity_point(cfg: dict, base_dir: str, rate_field: str, lo: float, hi: float, attainment: float) -> dict:
    res = find_max_rate(cfg, scenario_runner(base_dir), rate_field=rate_field, lo=lo, hi=hi, attainment=attainment)
    return {"max_rate_rps": res["max_rate"], "search_evaluations": len(res["evaluations"]),
            **(res["summary_at_max"] or {})}


def capacity_items(items: list[dict], base_dir: str | Path, *, rate_field: str, lo: float, hi: float,
                   attainment: float) -> tuple[RunFn, list[dict]]:
    """Turn each point into a capacity search (``--find-max-rate``); its hash includes the search."""
    from functools import partial

    search = {"rate_field": rate_field, "lo": lo, "hi": hi, "attainment": attainment}
    out = [{**it, "hash": config_hash({"config": it["config"], "find_max_rate": search})} for it in items]
    return partial(_capacity_point, base_dir=str(base_dir), **search), out
