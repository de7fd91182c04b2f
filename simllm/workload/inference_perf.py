"""inference-perf load as it ran: ``results/config.yaml`` (the resolved configuration) -> requests.

Everything below follows inference-perf's own source (kubernetes-sigs/inference-perf: ``datagen/
shared_prefix_datagen.py``, ``random_datagen.py``, ``synthetic_datagen.py``, ``apis/user_session.py``,
``utils/distribution.py``, ``config.py``, ``client/modelserver/openai_client.py``), its versions of 2025-2026.

``shared_prefix``: ``num_groups`` (alias ``num_unique_system_prompts``) x ``num_prompts_per_group``
(alias ``num_users_per_system_prompt``) prompts, each its group's system prompt followed by its own question,
answered with at most ``max_tokens`` = its output length (exactly that with ``ignore_eos``). Lengths are an int
or a distribution: ``system_prompt_len`` drawn once per group, ``question_len`` and ``output_len`` drawn per
group for its prompts. A distribution is an inline ``{type, mean, std_dev, min, max, ...}`` (or the legacy
``question_distribution`` / ``output_distribution``) sampled as ``sample_from_distribution`` does; or the flat
``question_len_std`` / ``_min`` / ``_max`` (``output_len_*``) of the versions that call
``generate_distribution(min, max, mean, std)`` (normal, clipped and rounded). The prompts (and their output
lengths) are shuffled once and request k sends prompt ``k % len(prompts)``, so the same prompts come back
(prefix cache hits).

Multi-turn chat (``enable_multi_turn_chat``): one user session per prompt, the sessions shuffled; request k
is user ``k % N``'s round ``k // N`` and asks that user's question (the same one every round). Its prompt is the
session's context + " " + question; on success the context becomes prompt + " " + answer, on a failure it stays
(``process_failure``). So a user's round r carries the system prompt and every earlier question and answer.
A round waits for the user's previous round to end (the session lock, taken before the request is sent; the
client's clock starts at the send, so the wait is in no latency). In the simulation the users are paced sessions
(:class:`ChatSessions`): round r is sent at max(its scheduled time, the end of round r-1).

``random``: ``input_distribution`` / ``output_distribution`` lengths (``total_count`` of them), request k the
``k % total_count``-th, of random tokens (no shared prefix). ``synthetic``: the same lengths, request k the
first ``input_length`` tokens of one fixed text (inference-perf's sonnet), so every prompt shares its prefix
with every longer one. ``mock``: the client's mock data, not served by a model server: refused. Dataset-backed
types (``shareGPT``, ``cnn_dailymail``, ...) are replayed from ``per_request_lifecycle_metrics.json`` when the
run folder has it (each request's start time and input / output token counts), refused otherwise.

Token counts of generated random text are scaled by ``prompt_scale`` (the server re-tokenises decoded random
tokens: the measured ``prompt_len`` of the run over the configured length); a multi-turn answer is counted
unscaled (model text re-tokenises to itself). Prefix keys: one per ``unit_tokens`` of prompt; units inside the
system prompt are the group's, the rest the prompt's (the user's context, for multi-turn, whose keys go on over
the units the answer fills: the simulator caches them when the round completes, as vLLM V1 caches generated
blocks, so round r hits on round r-1's prompt and answer).

``constant`` stages: ``int(rate * duration)`` arrivals with exponential gaps scaled to sum to the
duration (inference-perf's ConstantLoadTimer); ``poisson``: as its PoissonLoadTimer, a Poisson count
of arrivals in every second, spread over that second as a constant stage of one second. Stages run one
after another. ``concurrent``: a stage's ``num_requests`` scheduled within one second (its main.py) through
``concurrency_level`` client slots. The client holds at most ``num_workers`` x ``worker_max_concurrency``
requests (a worker takes one off the queue only with a free slot, and keeps the slot until the request ends):
when that binds (:class:`SlotPool`), a request is sent at max(its scheduled time, the first free slot).
``request_timeout`` of None: aiohttp's default ``ClientTimeout(total=300)``, which inference-perf's client
session keeps when it is given no timeout.

Not modelled here: inference-perf starts a stage once every request of the previous one has ended (+
``interval`` + 1 s); here stages follow each other at their durations (``simllm.validate.replay.simulate_run``
with ``stage_drain`` moves them, simulating stage by stage). Multi-turn rounds waiting for their session lock
hold a client slot in inference-perf; here the slots are not applied to multi-turn runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import load_yaml
from ..errors import InputError
from .request import Request
from .spec import Session, SessionTurn

DEFAULT_TIMEOUT_S = 300.0  # aiohttp's default total timeout, which inference-perf's client keeps when given none

DIST_TYPES = ("normal", "skew_normal", "lognormal", "uniform", "poisson", "fixed")
GENERATED_TYPES = ("shared_prefix", "random", "synthetic")
PER_REQUEST_FILE = "per_request_lifecycle_metrics.json"

# inference-perf's Distribution defaults (config.py), for keys a hand-written config leaves out
_DIST_DEFAULTS = {"min": 10, "max": 1024, "mean": 512.0, "std_dev": 200.0}


@dataclass(frozen=True)
class Stage:
    rate: float
    duration_s: float
    concurrency: Optional[int] = None  # a ``concurrent`` stage's concurrency_level


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution as inference-perf samples it.

    ``legacy``: ``generate_distribution`` (flat ``*_std`` fields, or a distribution without ``type``): normal with
    the mean inside [min, max]; lognormal shifted so min maps to 0; uniform on [min, max). Otherwise
    ``sample_from_distribution``: lognormal moment-matched unshifted, uniform on [min, max + 1), skew_normal
    (Azzalini, ``mean`` the location), poisson (lambda = mean). Both clip to [min, max] and round."""

    kind: str
    mean: float
    std: float = 0.0
    lo: int = 0
    hi: int = 0
    skew: float = 0.0
    legacy: bool = False

    @staticmethod
    def fixed(n: int) -> "LengthDist":
        return LengthDist("fixed", float(n), 0.0, int(n), int(n))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.mean), dtype=np.int64)
        lo, hi, m, s = self.lo, self.hi, self.mean, self.std
        if self.kind == "normal":
            x = rng.normal(m, s, n)
        elif self.kind == "uniform":
            x = rng.uniform(lo, hi if self.legacy else hi + 1, n)
        elif self.kind == "lognormal":
            if self.legacy:
                sm = m - lo if m - lo > 0 else 1.0
                s2 = math.log1p((s / sm) ** 2)
                x = rng.lognormal(math.log(sm) - s2 / 2, math.sqrt(s2), n) + lo
            elif s <= 0:
                x = np.full(n, m, dtype=float)
            else:
                s2 = math.log1p((s / m) ** 2)
                x = rng.lognormal(math.log(m) - s2 / 2, math.sqrt(s2), n)
        elif self.kind == "skew_normal":
            d = self.skew / math.sqrt(1.0 + self.skew ** 2)
            u0 = rng.standard_normal(n)
            u1 = d * u0 + math.sqrt(1.0 - d * d) * rng.standard_normal(n)
            x = m + s * np.where(u0 >= 0, u1, -u1)
        elif self.kind == "poisson":
            x = rng.poisson(m if m > 0 else 1.0, n).astype(float)
        else:  # pragma: no cover - checked when read
            raise ValueError(self.kind)
        return np.clip(np.round(np.clip(x, lo, hi)), lo, hi).astype(np.int64)


@dataclass(frozen=True)
class InferencePerfLoad:
    num_groups: int
    prompts_per_group: int
    system_prompt_len: int  # means of the distributions (the lengths, when constant)
    question_len: int
    output_len: int
    multi_turn: bool
    load_type: str
    stages: tuple
    timeout_s: float
    ignore_eos: bool
    streaming: bool
    data_type: str = "shared_prefix"
    system_dist: Optional[LengthDist] = None  # None: the constant length above
    question_dist: Optional[LengthDist] = None
    output_dist: Optional[LengthDist] = None
    total_count: Optional[int] = None  # random / synthetic: how many lengths are drawn
    config_file: Optional[Path] = None
    max_in_flight: Optional[int] = None  # the client's cap on requests it holds (None: none known)
    interval_s: float = 1.0  # load.interval: the pause between stages

    def dist(self, which: str) -> LengthDist:
        d = getattr(self, f"{which}_dist")
        if d is not None:
            return d
        return LengthDist.fixed({"system": self.system_prompt_len, "question": self.question_len,
                                 "output": self.output_len}[which])


def _get(d, key, file, where, kind=None):
    if not isinstance(d, dict) or key not in d or d[key] is None:
        raise InputError("required key is missing", file=file, field=f"{where}.{key}" if where else key)
    v = d[key]
    if kind is not None and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0):
        raise InputError(f"expected a positive number, got {v!r}", file=file, field=f"{where}.{key}")
    return v


def _num(v, file, fld, *, integer=False, positive=False, allow_zero=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
            (integer and not float(v).is_integer()):
        raise InputError(f"expected {'an integer' if integer else 'a number'}, got {v!r}", file=file, field=fld)
    if v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"expected a {'positive' if not allow_zero else 'non-negative'} number, got {v!r}",
                         file=file, field=fld)
    return int(v) if integer else float(v)


def _dist_from_dict(d: dict, file, fld) -> LengthDist:
    """An inference-perf ``Distribution`` mapping (defaults of its config.py for what is left out)."""
    legacy = "type" not in d or d.get("type") is None
    kind = "normal" if legacy else d["type"]
    if kind not in DIST_TYPES:
        raise InputError(f"unknown distribution type {kind!r}; expected one of {', '.join(DIST_TYPES)}",
                         file=file, field=f"{fld}.type")
    g = {k: (d[k] if d.get(k) is not None else dv) for k, dv in _DIST_DEFAULTS.items()}
    lo = _num(g["min"], file, f"{fld}.min", integer=True)
    hi = _num(g["max"], file, f"{fld}.max", integer=True)
    mean = _num(g["mean"], file, f"{fld}.mean")
    std = _num(g["std_dev"], file, f"{fld}.std_dev")
    if d.get("variance") is not None:
        std = math.sqrt(_num(d["variance"], file, f"{fld}.variance"))
    skew = float(d.get("skew") or 0.0)
    if lo > hi:
        raise InputError(f"min {lo} is above max {hi}", file=file, field=f"{fld}.min")
    if kind == "normal" and legacy and not lo <= mean <= hi:
        raise InputError(f"mean {mean:g} outside [min {lo}, max {hi}] (inference-perf refuses it)", file=file,
                         field=f"{fld}.mean")
    if kind == "lognormal" and not legacy and mean <= 0:
        raise InputError("lognormal needs mean > 0", file=file, field=f"{fld}.mean")
    return LengthDist(kind, mean, std, lo, hi, skew, legacy)


def _flat_dist(sp: dict, name: str, file) -> Optional[LengthDist]:
    """The flat ``<name>_std`` / ``_min`` / ``_max`` of the versions that call ``generate_distribution``."""
    std = sp.get(f"{name}_std")
    if not std:
        return None
    fld = f"data.shared_prefix.{name}"
    std = _num(std, file, f"{fld}_std")
    mean = _num(sp.get(name), file, fld)
    bounds = []
    for b in ("min", "max"):
        v = sp.get(f"{name}_{b}")
        if v is None:
            raise InputError(f"required with {name}_std (generate_distribution clips to [min, max])", file=file,
                             field=f"{fld}_{b}")
        bounds.append(_num(v, file, f"{fld}_{b}", integer=True))
    if bounds[0] > bounds[1] or not bounds[0] <= mean <= bounds[1]:
        raise InputError(f"expected {name}_min <= {name} <= {name}_max, got {bounds[0]}, {mean:g}, {bounds[1]}",
                         file=file, field=fld)
    return LengthDist("normal", mean, std, bounds[0], bounds[1], 0.0, True)


def _sp_length(sp: dict, name: str, legacy_key: Optional[str], file, default: int) -> tuple[int, Optional[LengthDist]]:
    """(mean, distribution or None) of a shared_prefix length: an int, an inline distribution, the legacy
    ``<x>_distribution`` or the flat ``<name>_std`` fields."""
    fld = f"data.shared_prefix.{name}"
    v = sp.get(name, default)
    if v is None:
        v = default
    legacy = sp.get(legacy_key) if legacy_key else None
    if isinstance(v, dict):
        if legacy is not None:
            raise InputError(f"both an inline distribution and {legacy_key} (inference-perf refuses it)", file=file,
                             field=fld)
        d = _dist_from_dict(v, file, fld)
        return max(0, round(d.mean)), d
    n = _num(v, file, fld, integer=True)
    if isinstance(legacy, dict):
        d = _dist_from_dict(legacy, file, f"data.shared_prefix.{legacy_key}")
        return max(0, round(d.mean)), d
    if legacy is not None:
        raise InputError(f"expected a distribution mapping, got {legacy!r}", file=file,
                         field=f"data.shared_prefix.{legacy_key}")
    d = _flat_dist(sp, name, file)
    return n, d


def read_config(path: str | Path) -> InferencePerfLoad:
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found (an inference-perf run folder has results/config.yaml)", file=p)
    c = load_yaml(p)
    data = _get(c, "data", p, "")
    typ = _get(data, "type", p, "data")
    per_request = p.parent / PER_REQUEST_FILE
    if typ not in GENERATED_TYPES and typ != "mock" and not per_request.is_file():
        what = f"its dataset {data.get('path')!r} (data.path)" if data.get("path") else "its dataset"
        raise InputError(f"data type {typ!r} reads {what}, which cannot be regenerated offline, and the run has "
                         f"no {PER_REQUEST_FILE} to replay; supported: {', '.join(GENERATED_TYPES)}",
                         file=p, field="data.type")
    if typ == "mock":
        raise InputError("data type 'mock' is inference-perf's mock client data (no model server ran); "
                         f"supported: {', '.join(GENERATED_TYPES)}", file=p, field="data.type")
    load = _get(c, "load", p, "")
    lt = _get(load, "type", p, "load")
    if lt not in ("constant", "poisson", "concurrent"):
        raise InputError(f"unsupported load type {lt!r}; supported: constant, poisson, concurrent", file=p,
                         field="load.type")
    stages = load.get("stages")
    if not isinstance(stages, list) or not stages:
        raise InputError("expected a list of {rate, duration}" if lt != "concurrent" else
                         "expected a list of {num_requests, concurrency_level}", file=p, field="load.stages")
    cap = None
    if lt == "concurrent":
        # main.py: every request of a stage is scheduled within one second (rate = num_requests, duration 1),
        # and the workers hold at most concurrency_level of them
        st = tuple(Stage(float(_get(s, "num_requests", p, f"load.stages.{i}", int)), 1.0,
                         int(_get(s, "concurrency_level", p, f"load.stages.{i}", int))) for i, s in enumerate(stages))
        if len({s.concurrency for s in st}) > 1:
            raise InputError("concurrent stages of different concurrency_level are not supported (one level for "
                             "all stages)", file=p, field="load.stages")
        cap = st[0].concurrency
    else:
        st = tuple(Stage(float(_get(s, "rate", p, f"load.stages.{i}", (int, float))),
                         float(_get(s, "duration", p, f"load.stages.{i}", (int, float))))
                   for i, s in enumerate(stages))
        nw, wc = load.get("num_workers"), load.get("worker_max_concurrency")
        if isinstance(nw, int) and isinstance(wc, int) and nw > 0 and wc > 0:
            cap = nw * wc  # each worker takes at most worker_max_concurrency requests off the queue
    if load.get("sweep"):
        raise InputError("sweeps are not supported (give the stages that ran)", file=p, field="load.sweep")
    to = load.get("request_timeout")
    if to is not None:
        to = _num(to, p, "load.request_timeout")
    api = c.get("api") or {}
    server = c.get("server") or {}
    common = dict(load_type=lt, stages=st, timeout_s=float(to) if to else DEFAULT_TIMEOUT_S,
                  ignore_eos=bool(server.get("ignore_eos", False)), streaming=bool(api.get("streaming", False)),
                  data_type=typ, config_file=p, max_in_flight=cap,
                  # LoadConfig.interval defaults to 1 s; None or 0: no pause
                  interval_s=_num(load.get("interval", 1.0) or 0.0, p, "load.interval"))
    if typ == "shared_prefix":
        sp = _get(data, "shared_prefix", p, "data")
        if not isinstance(sp, dict):
            raise InputError("expected a mapping", file=p, field="data.shared_prefix")

        def count(names):
            for k in names:
                if sp.get(k) is not None:
                    return int(_get(sp, k, p, "data.shared_prefix", int))
            return 10  # inference-perf's default
        if sp.get("multimodal"):
            raise InputError("multimodal shared_prefix data is not supported", file=p,
                             field="data.shared_prefix.multimodal")
        sys_m, sys_d = _sp_length(sp, "system_prompt_len", None, p, 100)
        q_m, q_d = _sp_length(sp, "question_len", "question_distribution", p, 50)
        o_m, o_d = _sp_length(sp, "output_len", "output_distribution", p, 50)
        if (o_d.hi if o_d is not None else o_m) < 1:
            raise InputError("expected output lengths >= 1", file=p, field="data.shared_prefix.output_len")
        return InferencePerfLoad(
            num_groups=count(("num_groups", "num_unique_system_prompts")),
            prompts_per_group=count(("num_prompts_per_group", "num_users_per_system_prompt")),
            system_prompt_len=sys_m, question_len=q_m, output_len=o_m,
            multi_turn=bool(sp.get("enable_multi_turn_chat", False)),
            system_dist=sys_d, question_dist=q_d, output_dist=o_d, **common)
    if typ in ("random", "synthetic"):
        dists = []
        for k in ("input_distribution", "output_distribution"):
            d = data.get(k)
            if not isinstance(d, dict):
                raise InputError(f"required for data type {typ!r} (a mapping of min, max, mean, std_dev, "
                                 "total_count)", file=p, field=f"data.{k}")
            dists.append(_dist_from_dict(d, p, f"data.{k}"))
        tc = [data[k].get("total_count") for k in ("input_distribution", "output_distribution")]
        tcs = [_num(t, p, f"data.{k}.total_count", integer=True, allow_zero=False)
               for t, k in zip(tc, ("input_distribution", "output_distribution")) if t is not None]
        if dists[1].hi < 1:
            raise InputError("expected output lengths >= 1", file=p, field="data.output_distribution.max")
        return InferencePerfLoad(num_groups=0, prompts_per_group=0, system_prompt_len=0,
                                 question_len=max(1, round(dists[0].mean)), output_len=max(1, round(dists[1].mean)),
                                 multi_turn=False, question_dist=dists[0], output_dist=dists[1],
                                 total_count=min(tcs) if tcs else None, **common)
    # a dataset-backed type with the per-request file: replayed from it
    return InferencePerfLoad(num_groups=0, prompts_per_group=0, system_prompt_len=0, question_len=0, output_len=0,
                             multi_turn=False, **common)


def arrivals(load: InferencePerfLoad, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (s) and stage index of every request."""
    ts, sg = [], []
    t0 = 0.0
    for i, s in enumerate(load.stages):
        n = int(s.rate * s.duration_s)
        if n:
            if load.load_type in ("constant", "concurrent"):
                gaps = rng.exponential(1.0 / s.rate, n)
                gaps *= s.duration_s / gaps.sum()
                a = t0 + np.cumsum(gaps)
            else:  # inference-perf's PoissonLoadTimer: a Poisson count per second, spread as a constant second
                secs = []
                for k in range(int(math.ceil(s.duration_s))):
                    c = int(rng.poisson(s.rate))
                    if c:
                        g = rng.exponential(1.0 / c, c)
                        secs.append(t0 + k + np.cumsum(g / g.sum()))
                a = np.concatenate(secs) if secs else np.zeros(0)
                a = a[a <= t0 + s.duration_s]
            ts.append(a)
            sg.append(np.full(len(a), i))
        t0 += s.duration_s
    if not ts:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(ts), np.concatenate(sg)


# -- shared_prefix ----------------------------------------------------------------------------------------
@dataclass
class SharedPrefixPrompts:
    """The generated prompts in inference-perf's order (group-major), before its shuffle."""

    group: np.ndarray  # group of each prompt
    system: np.ndarray  # system prompt tokens of its group (configured, unscaled)
    question: np.ndarray
    output: np.ndarray  # max_tokens


def shared_prefix_prompts(load: InferencePerfLoad, rng: np.random.Generator) -> SharedPrefixPrompts:
    """Per group: its system prompt length, then its prompts' question and output lengths (as inference-perf draws
    them: system lengths for all groups first, then per group the questions and the outputs)."""
    G, P = load.num_groups, load.prompts_per_group
    sys_g = load.dist("system").sample(rng, G) if load.system_dist is not None else np.full(G, load.system_prompt_len)
    q, o = [], []
    for _ in range(G):
        q.append(load.dist("question").sample(rng, P) if load.question_dist is not None
                 else np.full(P, load.question_len))
        o.append(load.dist("output").sample(rng, P) if load.output_dist is not None else np.full(P, load.output_len))
    g = np.repeat(np.arange(G), P)
    return SharedPrefixPrompts(g, np.asarray(sys_g, dtype=np.int64)[g], np.concatenate(q).astype(np.int64),
                               np.maximum(np.concatenate(o).astype(np.int64), 1))


def _keys(g: int, owner, n_units: int, shared_units: int) -> tuple:
    return tuple((g, -1, j) if j < shared_units else (g, owner, j) for j in range(n_units))


def build_requests(load: InferencePerfLoad, *, seed: int = 0, prompt_scale: float = 1.0, unit_tokens: int = 512,
                   output_len: int | None = None, output_scale: float | None = None,
                   max_model_len: int | None = None) -> tuple[list[Request], np.ndarray]:
    """The run's requests (arrival order) and their stage indices (single-turn data).

    ``output_len`` replaces every output length (the measured mean, without ``ignore_eos``, for constant
    lengths); ``output_scale`` multiplies each drawn length instead. A request whose prompt + ``max_tokens``
    exceed ``max_model_len`` keeps ``max_tokens`` as its output, so the server refuses it as vLLM does."""
    if load.multi_turn:
        raise InputError("multi-turn shared_prefix is paced by its sessions: use chat_sessions",
                         field="data.shared_prefix.enable_multi_turn_chat")
    if load.data_type in ("random", "synthetic"):
        return _random_requests(load, seed=seed, prompt_scale=prompt_scale, unit_tokens=unit_tokens,
                                output_len=output_len, output_scale=output_scale, max_model_len=max_model_len)
    rng = np.random.default_rng(seed)
    n_prompts = load.num_groups * load.prompts_per_group
    order = rng.permutation(n_prompts)
    arr, stage = arrivals(load, rng)
    if load.system_dist is None and load.question_dist is None and load.output_dist is None:  # constant lengths
        sys_len = max(1, round(load.system_prompt_len * prompt_scale))
        plen = max(1, round((load.system_prompt_len + load.question_len) * prompt_scale))
        out = output_len or load.output_len
        if max_model_len is not None and plen + load.output_len > max_model_len:
            out = load.output_len
        shared_units = sys_len // unit_tokens
        keys = [_keys(pid // load.prompts_per_group, pid, plen // unit_tokens, shared_units)
                for pid in range(n_prompts)]
        reqs = [Request(i, float(a), plen, out, prefix_blocks=keys[order[i % n_prompts]]) for i, a in enumerate(arr)]
        return reqs, stage
    sp = shared_prefix_prompts(load, np.random.default_rng([seed, 1]))
    plens = np.maximum(1, np.round((sp.system + sp.question) * prompt_scale)).astype(np.int64)
    slens = np.round(sp.system * prompt_scale).astype(np.int64)
    outs = _outputs(sp.output, output_len, output_scale)
    if max_model_len is not None:
        outs = np.where(plens + sp.output > max_model_len, sp.output, outs)
    keys = [_keys(int(sp.group[pid]), pid, int(plens[pid]) // unit_tokens, int(slens[pid]) // unit_tokens)
            for pid in range(n_prompts)]
    reqs = []
    for i, a in enumerate(arr):
        pid = int(order[i % n_prompts])
        reqs.append(Request(i, float(a), int(plens[pid]), int(outs[pid]), prefix_blocks=keys[pid]))
    return reqs, stage


def _outputs(max_tokens: np.ndarray, output_len: Optional[int], output_scale: Optional[float]) -> np.ndarray:
    if output_len:
        return np.full(len(max_tokens), int(output_len), dtype=np.int64)
    if output_scale is not None:
        return np.maximum(1, np.round(max_tokens * output_scale)).astype(np.int64)
    return np.asarray(max_tokens, dtype=np.int64)


def configured_prompt_mean(load: InferencePerfLoad, *, seed: int = 0) -> float:
    """Mean configured prompt length of the requests the run sends (single-turn): what the measured prompt length
    is compared with to get the re-tokenisation scale."""
    if load.data_type in ("random", "synthetic"):
        ins, _outs, idx, _arr, _st = _random_lengths(load, seed)
        return float(ins[idx].mean()) if len(idx) else float(load.question_len)
    if load.system_dist is None and load.question_dist is None:
        return float(load.system_prompt_len + load.question_len)
    rng = np.random.default_rng(seed)
    n = load.num_groups * load.prompts_per_group
    order = rng.permutation(n)
    arr, _ = arrivals(load, rng)
    sp = shared_prefix_prompts(load, np.random.default_rng([seed, 1]))
    tot = sp.system + sp.question
    return float(tot[order[np.arange(len(arr)) % n]].mean()) if len(arr) else float(tot.mean())


def configured_output_mean(load: InferencePerfLoad, *, seed: int = 0) -> float:
    """Mean ``max_tokens`` of the requests the run sends."""
    if load.output_dist is None:
        return float(load.output_len)
    if load.data_type in ("random", "synthetic"):
        _ins, outs, idx, _arr, _st = _random_lengths(load, seed)
        return float(outs[idx].mean()) if len(idx) else float(load.output_len)
    sp = shared_prefix_prompts(load, np.random.default_rng([seed, 1]))
    return float(sp.output.mean())


# -- random / synthetic -----------------------------------------------------------------------------------
def _random_lengths(load: InferencePerfLoad, seed: int):
    rng = np.random.default_rng(seed)
    arr, stage = arrivals(load, rng)
    n = load.total_count or max(1, len(arr))  # assumption: without total_count, one length per request
    lrng = np.random.default_rng([seed, 1])
    ins = load.dist("question").sample(lrng, n)
    outs = np.maximum(load.dist("output").sample(lrng, n), 1)
    idx = np.arange(len(arr)) % n
    return ins, outs, idx, arr, stage


def _random_requests(load, *, seed, prompt_scale, unit_tokens, output_len, output_scale, max_model_len):
    ins, outs, idx, arr, stage = _random_lengths(load, seed)
    plens = np.maximum(1, np.round(ins * prompt_scale)).astype(np.int64)
    o = _outputs(outs, output_len, output_scale)
    if max_model_len is not None:
        o = np.where(plens + outs > max_model_len, outs, o)
    reqs = []
    for i, a in enumerate(arr):
        k = int(idx[i])
        nu = int(plens[k]) // unit_tokens
        # synthetic: prefixes of one text (a chain shared by all); random: random tokens, a chain of its own
        keys = tuple(("syn", j) for j in range(nu)) if load.data_type == "synthetic" else \
            tuple(("rnd", k, j) for j in range(nu))
        reqs.append(Request(i, float(a), int(plens[k]), int(o[k]), prefix_blocks=keys))
    return reqs, stage


# -- multi-turn chat --------------------------------------------------------------------------------------
@dataclass
class _User:
    group: int
    sys_tokens: int  # scaled
    question: int  # scaled
    max_tokens: int
    answer: int  # tokens a successful round adds to the context (besides the question)
    rounds: list = field(default_factory=list)  # (scheduled arrival, request index) per round
    context: int = 0  # tokens of the context (the system prompt, then every ok round's question and answer)
    sent: int = 0


class ChatSessions:
    """inference-perf's multi-turn users as the simulator's paced sessions (``Simulation`` calls ``turn`` when it
    sends a round and ``turn_done`` when one ends: completed, aborted at the timeout, or refused).

    Round r of a user is sent at max(its scheduled time, the end of round r-1); its prompt is the context + the
    question, the context growing by question + answer after a completed round only. ``sent`` lists, in the
    simulator's request order, the index of each request in the run's request sequence (its stage)."""

    cache_output_units = True  # the simulator caches the units an answer fills (vLLM V1 caches generated blocks)

    def __init__(self, users: list[_User], unit_tokens: int, max_model_len: Optional[int]):
        self.users = users
        self.unit = unit_tokens
        self.max_model_len = max_model_len
        self.sessions = tuple(Session(f"user_session_{u}", float(us.rounds[0][0]),
                                      tuple(SessionTurn(1, 1) for _ in us.rounds))
                              for u, us in enumerate(users) if us.rounds)
        self._uid = [u for u, us in enumerate(users) if us.rounds]
        self.sent: list[int] = []
        self.prompts: list[int] = []  # prompt tokens, in the same order

    @property
    def num_requests(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def think_time(self, rng) -> float:
        return 0.0

    def turn(self, si: int, ti: int) -> SessionTurn:
        uid = self._uid[si]
        us = self.users[uid]
        prompt = max(1, us.context + us.question)
        out = us.answer
        if self.max_model_len is not None and prompt + us.max_tokens > self.max_model_len:
            out = us.max_tokens  # the server refuses prompt + max_tokens above max_model_len
        shared = us.sys_tokens // self.unit
        # the prompt's units and those its answer fills (the next round's context), cached as vLLM does
        keys = _keys(us.group, ("user", uid), (prompt + out) // self.unit, shared)
        self.sent.append(us.rounds[ti][1])
        self.prompts.append(prompt)
        return SessionTurn(prompt, out, keys)

    def turn_done(self, si: int, ti: int, t: float, ok: bool) -> Optional[float]:
        us = self.users[self._uid[si]]
        if ok:
            us.context += us.question + us.answer
        if ti + 1 >= len(us.rounds):
            return None
        return max(float(us.rounds[ti + 1][0]), t)


def chat_sessions(load: InferencePerfLoad, *, seed: int = 0, prompt_scale: float = 1.0, unit_tokens: int = 512,
                  output_len: int | None = None, output_scale: float | None = None,
                  max_model_len: int | None = None) -> tuple[ChatSessions, np.ndarray]:
    """The multi-turn run's users (paced sessions) and the stage of each request of the run's sequence."""
    rng = np.random.default_rng(seed)
    n_prompts = load.num_groups * load.prompts_per_group
    order = rng.permutation(n_prompts)  # the shuffled user sessions
    arr, stage = arrivals(load, rng)
    sp = shared_prefix_prompts(load, np.random.default_rng([seed, 1]))
    outs = _outputs(sp.output, output_len, output_scale)
    users = []
    for u in range(n_prompts):
        pid = int(order[u])
        s = max(1, round(int(sp.system[pid]) * prompt_scale))
        us = _User(int(sp.group[pid]), s, max(0, round(int(sp.question[pid]) * prompt_scale)),
                   int(sp.output[pid]), int(outs[pid]))
        us.context = s
        users.append(us)
    for i, a in enumerate(arr):
        users[i % n_prompts].rounds.append((float(a), i))
    return ChatSessions(users, unit_tokens, max_model_len), stage


def chat_prompt_scale(load: InferencePerfLoad, measured_prompt_mean: float, *, seed: int = 0,
                      output_len: int | None = None, output_scale: float | None = None,
                      max_model_len: int | None = None) -> float:
    """Re-tokenisation scale of the generated text in a multi-turn run: the measured mean prompt minus the
    answers it carries, over the configured system + question tokens, over the rounds the server accepts
    (every round completing: the prompts of a run without failures)."""
    ses, _ = chat_sessions(load, seed=seed, output_len=output_len, output_scale=output_scale)
    gen, ans = [], []
    for us in ses.users:
        for r in range(len(us.rounds)):
            g = us.context + (r + 1) * us.question  # scale 1: configured tokens
            a = r * us.answer
            if max_model_len is not None and g + a + us.max_tokens > max_model_len:
                break
            gen.append(g)
            ans.append(a)
    if not gen or measured_prompt_mean is None:
        return 1.0
    return max(0.5, min(2.0, (measured_prompt_mean - float(np.mean(ans))) / float(np.mean(gen))))


# -- dataset-backed runs: replay per_request_lifecycle_metrics.json ---------------------------------------
def replay_per_request(load: InferencePerfLoad) -> tuple[list[Request], np.ndarray]:
    """Requests of a dataset-backed run from its ``per_request_lifecycle_metrics.json``: send times
    (``start_time``, relative to the first), ``info.input_tokens`` and ``info.output_tokens`` (a failed request
    without them: its request body's ``max_tokens``, else the successes' mean). Stage: ``stage_id`` when recorded,
    else the stage whose span holds the send time. No shared prefixes (unknown without the prompts)."""
    p = Path(load.config_file).parent / PER_REQUEST_FILE
    try:
        recs = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable: {e}", file=p) from None
    if not isinstance(recs, list) or not recs:
        raise InputError("expected a non-empty JSON array of per-request records", file=p)
    rows = []
    for k, r in enumerate(recs):
        if not isinstance(r, dict) or not isinstance(r.get("start_time"), (int, float)):
            raise InputError("expected a number", file=p, field=f"[{k}].start_time")
        info = r.get("info") or {}
        it, ot = info.get("input_tokens"), info.get("output_tokens")
        if not ot and r.get("request"):
            try:
                ot = json.loads(r["request"]).get("max_tokens")
            except (TypeError, ValueError, AttributeError):
                ot = None
        rows.append((float(r["start_time"]), it if isinstance(it, (int, float)) and it > 0 else None,
                     ot if isinstance(ot, (int, float)) and ot > 0 else None, r.get("stage_id")))
    rows.sort(key=lambda x: x[0])
    known_in = [x[1] for x in rows if x[1]]
    known_out = [x[2] for x in rows if x[2]]
    if not known_in:
        raise InputError("no record has info.input_tokens", file=p, field="info.input_tokens")
    mi, mo = float(np.mean(known_in)), float(np.mean(known_out)) if known_out else 1.0
    t0 = rows[0][0]
    ends = np.cumsum([s.duration_s for s in load.stages])
    reqs, stage = [], []
    for i, (t, it, ot, sid) in enumerate(rows):
        reqs.append(Request(i, t - t0, max(1, round(it or mi)), max(1, round(ot or mo))))
        if isinstance(sid, int) and 0 <= sid < len(load.stages):
            stage.append(sid)
        else:
            stage.append(min(int(np.searchsorted(ends, t - t0, side="right")), len(load.stages) - 1))
    return reqs, np.asarray(stage, dtype=int)


# -- the client's cap on requests in flight ----------------------------------------------------------------
class SlotPool:
    """Requests sent through ``slots`` client slots (paced sessions, one per slot): inference-perf's workers take
    a request off the queue only with a free slot (``worker_max_concurrency`` each; ``concurrency_level`` in all
    for a ``concurrent`` stage) and hold it until the request ends, so request k is sent at max(its scheduled
    time, the first time a slot is free), the slots taking the requests in order. ``sent`` lists, in the
    simulator's request order, the index of each request in ``requests``."""

    def __init__(self, requests: list[Request], slots: int):
        self.requests = requests
        k = min(int(slots), len(requests))
        self.sessions = tuple(Session(f"slot_{i}", float(requests[i].arrival_s), (SessionTurn(1, 1),))
                              for i in range(k))
        self.pending = list(range(k))
        self.next = k
        self.sent: list[int] = []

    @property
    def num_requests(self) -> int:
        return len(self.requests)

    def think_time(self, rng) -> float:
        return 0.0

    def turn(self, si: int, ti: int) -> SessionTurn:
        k = self.pending[si]
        r = self.requests[k]
        self.sent.append(k)
        return SessionTurn(r.prompt_tokens, r.output_tokens, tuple(r.prefix_blocks))

    def turn_done(self, si: int, ti: int, t: float, ok: bool) -> Optional[float]:
        if self.next >= len(self.requests):
            return None
        k = self.next
        self.next += 1
        self.pending[si] = k
        return max(float(self.requests[k].arrival_s), t)
