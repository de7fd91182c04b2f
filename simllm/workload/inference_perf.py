"""inference-perf load as it ran: ``results/config.yaml`` (the resolved configuration) -> requests.

``shared_prefix`` data is generated as inference-perf's SharedPrefixDataGenerator does:
``num_groups`` x ``num_prompts_per_group`` prompts, each a group's system prompt of
``system_prompt_len`` tokens followed by its own question of ``question_len`` tokens, answered with
``output_len`` tokens (``max_tokens``; exact with ``ignore_eos``). The prompt list is shuffled once and
request k sends prompt ``k % len(prompts)``, so the same prompts come back (prefix cache hits).
Token counts are scaled by ``prompt_scale`` (the server re-tokenises decoded random tokens: the
measured ``prompt_len`` of the run over the configured length). Prefix keys: one per
``unit_tokens`` of prompt; units inside the system prompt are the group's, the rest the prompt's.
``constant`` stages: ``int(rate * duration)`` arrivals with exponential gaps scaled to sum to the
duration (inference-perf's ConstantLoadTimer); ``poisson``: as its PoissonLoadTimer, a Poisson count
of arrivals in every second, spread over that second as a constant stage of one second. Stages run one
after another. ``request_timeout`` of None is inference-perf's default of 300 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import load_yaml
from ..errors import InputError
from .request import Request

DEFAULT_TIMEOUT_S = 300.0  # inference-perf's client timeout when the config gives none


@dataclass(frozen=True)
class Stage:
    rate: float
    duration_s: float


@dataclass(frozen=True)
class InferencePerfLoad:
    num_groups: int
    prompts_per_group: int
    system_prompt_len: int
    question_len: int
    output_len: int
    multi_turn: bool
    load_type: str
    stages: tuple
    timeout_s: float
    ignore_eos: bool
    streaming: bool


def _get(d, key, file, where, kind=None):
    if not isinstance(d, dict) or key not in d or d[key] is None:
        raise InputError("required key is missing", file=file, field=f"{where}.{key}" if where else key)
    v = d[key]
    if kind is not None and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0):
        raise InputError(f"expected a positive number, got {v!r}", file=file, field=f"{where}.{key}")
    return v


def read_config(path: str | Path) -> InferencePerfLoad:
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found (an inference-perf run folder has results/config.yaml)", file=p)
    c = load_yaml(p)
    data = _get(c, "data", p, "")
    typ = _get(data, "type", p, "data")
    if typ != "shared_prefix":
        raise InputError(f"unsupported data type {typ!r}; supported: shared_prefix", file=p, field="data.type")
    sp = _get(data, "shared_prefix", p, "data")
    for k in ("question_len_std", "output_len_std"):
        if sp.get(k):
            raise InputError("length distributions are not supported (constant lengths only)", file=p,
                             field=f"data.shared_prefix.{k}")
    load = _get(c, "load", p, "")
    lt = _get(load, "type", p, "load")
    if lt not in ("constant", "poisson"):
        raise InputError(f"unsupported load type {lt!r}; supported: constant, poisson", file=p, field="load.type")
    stages = load.get("stages")
    if not isinstance(stages, list) or not stages:
        raise InputError("expected a list of {rate, duration}", file=p, field="load.stages")
    st = tuple(Stage(float(_get(s, "rate", p, f"load.stages.{i}", (int, float))),
                     float(_get(s, "duration", p, f"load.stages.{i}", (int, float)))) for i, s in enumerate(stages))
    if load.get("sweep"):
        raise InputError("sweeps are not supported (give the stages that ran)", file=p, field="load.sweep")
    to = load.get("request_timeout")
    api = c.get("api") or {}
    server = c.get("server") or {}
    return InferencePerfLoad(
        num_groups=int(_get(sp, "num_groups", p, "data.shared_prefix", int)),
        prompts_per_group=int(_get(sp, "num_prompts_per_group", p, "data.shared_prefix", int)),
        system_prompt_len=int(_get(sp, "system_prompt_len", p, "data.shared_prefix", int)),
        question_len=int(_get(sp, "question_len", p, "data.shared_prefix", int)),
        output_len=int(_get(sp, "output_len", p, "data.shared_prefix", int)),
        multi_turn=bool(sp.get("enable_multi_turn_chat", False)),
        load_type=lt, stages=st, timeout_s=float(to) if to else DEFAULT_TIMEOUT_S,
        ignore_eos=bool(server.get("ignore_eos", False)), streaming=bool(api.get("streaming", False)))


def arrivals(load: InferencePerfLoad, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (s) and stage index of every request."""
    ts, sg = [], []
    t0 = 0.0
    for i, s in enumerate(load.stages):
        n = int(s.rate * s.duration_s)
        if n:
            if load.load_type == "constant":
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
    return np.concatenate(ts), np.concatenate(sg)


def build_requests(load: InferencePerfLoad, *, seed: int = 0, prompt_scale: float = 1.0, unit_tokens: int = 512,
                   output_len: int | None = None) -> tuple[list[Request], np.ndarray]:
    """The run's requests (arrival order) and their stage indices."""
    if load.multi_turn:
        raise InputError("multi-turn shared_prefix (enable_multi_turn_chat) is not supported yet",
                         field="data.shared_prefix.enable_multi_turn_chat")
    rng = np.random.default_rng(seed)
    sys_len = max(1, round(load.system_prompt_len * prompt_scale))
    plen = max(1, round((load.system_prompt_len + load.question_len) * prompt_scale))
    out = output_len or load.output_len
    n_prompts = load.num_groups * load.prompts_per_group
    order = rng.permutation(n_prompts)
    shared_units = sys_len // unit_tokens
    keys = []
    for pid in range(n_prompts):
        g = pid // load.prompts_per_group
        keys.append(tuple((g, -1, j) if j < shared_units else (g, pid, j) for j in range(plen // unit_tokens)))
    arr, stage = arrivals(load, rng)
    reqs = [Request(i, float(a), plen, out, prefix_blocks=keys[order[i % n_prompts]]) for i, a in enumerate(arr)]
    return reqs, stage
