"""Measured serving runs: what the server was, what load it got, what the client measured.

- inference-perf run folder: ``exp-config.yaml`` (vLLM server settings), ``results/config.yaml``
  (the load that ran), ``results/{stage_N,summary}_lifecycle_metrics.json`` (measured latencies, s).
- ``vllm bench serve --save-result`` JSON: ``mean_ttft_ms`` ... (ms), ``request_rate``, ``burstiness``,
  ``num_prompts``, ``total_input_tokens``, ``total_output_tokens``, ``completed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional


from ..config import load_yaml
from ..errors import InputError
from ..workload.inference_perf import InferencePerfLoad, read_config

METRICS = ("ttft", "tpot", "itl", "e2e")
_IP_KEYS = {"ttft": "time_to_first_token", "tpot": "time_per_output_token", "itl": "inter_token_latency",
            "e2e": "request_latency"}


@dataclass
class Measured:
    """Client-side figures of one stage (or the whole run): latencies in s (mean, p50, p90, p99)."""

    count: int
    failed: int
    latency: dict  # metric -> {mean, p50, p90, p99}
    requests_per_s: Optional[float] = None
    offered_rate: Optional[float] = None
    prompt_len_mean: Optional[float] = None
    output_len_mean: Optional[float] = None


@dataclass
class MeasuredRun:
    name: str
    path: Path
    kind: str  # "inference-perf" | "vllm-bench"
    model: str
    tp: Optional[int]  # None: the run's files do not record it (vllm bench): --tp, else 1 with a note
    server: dict  # max_model_len, max_num_batched_tokens, max_num_seqs (None: vLLM's default)
    load: Any  # InferencePerfLoad or a dict for vllm bench
    summary: Measured
    stages: list = field(default_factory=list)
    model_config: Optional[Path] = None


def _json(p: Path) -> Any:
    if not p.is_file():
        raise InputError("file not found", file=p)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"malformed JSON: {e}", file=p) from None


def _ip_measured(p: Path) -> Measured:
    d = _json(p)
    try:
        s = d["successes"]
        lat = s["latency"]
        m = {}
        for k, key in _IP_KEYS.items():
            x = lat[key]
            m[k] = {"mean": x["mean"], "p50": x["median"], "p90": x["p90"], "p99": x["p99"]} if x else None
        ls = d["load_summary"]
        return Measured(count=int(ls["count"]), failed=int(d["failures"]["count"]), latency=m,
                        requests_per_s=s.get("throughput", {}).get("requests_per_sec"),
                        offered_rate=ls.get("requested_rate"),
                        prompt_len_mean=(s.get("prompt_len") or {}).get("mean"),
                        output_len_mean=(s.get("output_len") or {}).get("mean"))
    except (KeyError, TypeError) as e:
        raise InputError(f"not an inference-perf lifecycle metrics file (missing {e})", file=p) from None


def _model_config(run: Path, model: str) -> Optional[Path]:
    short = model.rstrip("/").split("/")[-1]
    for c in (run / "config.json", run.parent / "model_configs" / short / "config.json",
              run.parent.parent / "model_configs" / short / "config.json"):
        if c.is_file():
            return c
    return None


def read_inference_perf(path: Path) -> MeasuredRun:
    exp = path / "exp-config.yaml"
    if not exp.is_file():
        raise InputError("file not found (an inference-perf run folder needs the server's exp-config.yaml)", file=exp)
    e = load_yaml(exp)
    if not e.get("model"):
        raise InputError("required key is missing", file=exp, field="model")
    load: InferencePerfLoad = read_config(path / "results" / "config.yaml")
    summary = _ip_measured(path / "results" / "summary_lifecycle_metrics.json")
    stages = []
    for i in range(len(load.stages)):
        f = path / "results" / f"stage_{i}_lifecycle_metrics.json"
        stages.append(_ip_measured(f) if f.is_file() else None)
    tp = e.get("tensor_parallelism", 1)
    if not isinstance(tp, int) or tp < 1:
        raise InputError(f"expected a positive integer, got {tp!r}", file=exp, field="tensor_parallelism")
    server = {k: e.get(k) for k in ("max_model_len", "max_num_batched_tokens", "max_num_seqs")}
    return MeasuredRun(path.name, path, "inference-perf", str(e["model"]), tp, server, load, summary, stages,
                       _model_config(path, str(e["model"])))


def read_vllm_bench(path: Path) -> MeasuredRun:
    d = _json(path)
    need = ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "num_prompts", "request_rate", "completed")
    if not isinstance(d, dict) or any(k not in d for k in need):
        miss = next(k for k in need if not isinstance(d, dict) or k not in d)
        raise InputError(f"not a vllm bench serve --save-result file (no {miss!r})", file=path, field=miss)
    lat = {}
    for k, key in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el")):
        if f"mean_{key}_ms" in d:
            lat[k] = {q: (d.get(f"{src}_{key}_ms") / 1e3 if d.get(f"{src}_{key}_ms") is not None else None)
                      for q, src in (("mean", "mean"), ("p50", "median"), ("p90", "p90"), ("p99", "p99"))}
        else:
            lat[k] = None
    rate = d["request_rate"]
    if isinstance(rate, str) and rate.strip().lower() in ("inf", "infinity"):
        rate = "inf"
    else:
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise InputError(f"expected a request rate (a number or \"inf\"), got {rate!r}", file=path,
                             field="request_rate") from None
        if math.isinf(rate) and rate > 0:  # Python's json writes float("inf") as Infinity
            rate = "inf"
        elif not (math.isfinite(rate) and rate > 0):
            raise InputError(f"expected a positive request rate or \"inf\", got {rate!r}", file=path,
                             field="request_rate")
    n = int(d["num_prompts"])
    done = int(d["completed"])
    m = Measured(count=n, failed=n - done, latency=lat, requests_per_s=d.get("request_throughput"),
                 offered_rate=None if rate == "inf" else rate,
                 prompt_len_mean=d.get("total_input_tokens", 0) / max(done, 1),
                 output_len_mean=d.get("total_output_tokens", 0) / max(done, 1))
    load = {"num_prompts": n, "request_rate": rate, "burstiness": float(d.get("burstiness") or 1.0),
            "max_concurrency": d.get("max_concurrency"), "input_lens": d.get("input_lens"),
            "output_lens": d.get("output_lens")}
    model = str(d.get("model_id") or "")
    tp = d.get("tensor_parallel_size")  # not written by vllm bench itself; some wrappers add it
    if tp is not None and (isinstance(tp, bool) or not isinstance(tp, int) or tp < 1):
        raise InputError(f"expected a positive integer, got {tp!r}", file=path, field="tensor_parallel_size")
    mc = d.get("max_concurrency")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
        raise InputError(f"expected a positive integer or null, got {mc!r}", file=path, field="max_concurrency")
    return MeasuredRun(path.stem, path, "vllm-bench", model, tp,
                       {"max_model_len": None, "max_num_batched_tokens": None, "max_num_seqs": None}, load, m, [],
                       _model_config(path.parent, model) if model else None)


#: server settings a run's files may lack (vllm bench records none of them): option name -> MeasuredRun field
SERVER_OPTIONS = {"tp": "--tp", "max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-num-batched-tokens",
                  "max_model_len": "--max-model-len"}


def with_server(run: MeasuredRun, **given) -> MeasuredRun:
    """``run`` with the server settings ``given`` (``tp``, ``max_num_seqs``, ``max_num_batched_tokens``,
    ``max_model_len``; None: not given) filled in where its files do not record them. A setting the files
    do record and that ``given`` contradicts is an error naming the file and field, never overridden."""
    server = dict(run.server)
    tp = run.tp
    for key, v in given.items():
        if key not in SERVER_OPTIONS:
            raise ValueError(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"expected a positive integer, got {v!r}", field=SERVER_OPTIONS[key])
        have = tp if key == "tp" else server.get(key)
        if have is not None and have != v:
            field = "tensor_parallelism" if key == "tp" else key
            raise InputError(f"the run states {field} {have}; {SERVER_OPTIONS[key]} {v} contradicts it",
                             file=run.path, field=field)
        if key == "tp":
            tp = v
        else:
            server[key] = v
    return replace(run, tp=tp, server=server)


def read_run(path: str | Path) -> MeasuredRun:
    p = Path(path)
    if p.is_dir():
        return read_inference_perf(p)
    if p.is_file():
        return read_vllm_bench(p)
    raise InputError("no such run folder or file", file=p)
