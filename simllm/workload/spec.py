"""The ``workload:`` block of a scenario and :func:`build_workload`.

A workload is either a real trace, optionally transformed::

    workload:
      trace: traces/azure2023_conv_sample.csv   # relative to the scenario's folder or the repo root
      format: azure                  # burstgpt | azure | mooncake | vidur; detected when left out
      on_error: raise                # or skip: drop malformed rows and count them
      sort: false                    # true: sort unsorted timestamps instead of failing
      model: ChatGPT                 # BurstGPT only: filter on Model / Log Type
      log_type: Conversation log
      window_s: [0, 600]             # 1. keep arrivals in [start, end), re-timed to start at 0
      limit: 5000                    # 2. first N requests
      rate_scale: 2.0                # 3. x2 the rate (arrival times / 2)
      retime: {process: poisson, rate: 10}   # 4. new arrival times, same lengths

or a generator::

    workload:
      generator:
        arrivals: {process: gamma, rate: 5.0, cv: 2.0, amplitude: 0.5, period_s: 86400}
        lengths: {kind: lognormal, prompt_median: 512, prompt_sigma: 1.0, output_median: 128, output_sigma: 1.0}
        # or {kind: zipf, prompt_theta: 1.1, prompt_min: 16, prompt_max: 8192, ...}
        # or {kind: empirical, trace: traces/azure2023_conv_sample.csv}
        num_requests: 2000           # or duration_s: 600

``window_s``, ``limit`` and ``rate_scale`` also apply to generated streams, in that order.

Closed-loop sessions (``generator: {sessions: {...}}``) give a :class:`SessionWorkload`
instead of a list of requests: ``arrivals`` then start sessions, ``lengths`` give each
turn's new user tokens and answer, and the simulator sends turn k+1 a think time after turn
k's answer completes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from ..config import Frozen, data_roots, validate
from .generators import MAX_TOKENS
from ..errors import InputError
from . import generators as gen
from . import transforms as tf
from .readers import BLOCK_TOKENS, Trace, read_trace
from .request import Request, RequestTable

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PosInt = Annotated[int, Field(gt=0)]

MAX_REQUESTS = 100_000_000
"""Most requests one generator makes (an assumption that bounds memory: ~25 B per request per column)."""


# --------------------------------------------------------------------------- schema


class ArrivalSpec(Frozen):
    """Arrival process: ``poisson`` or ``gamma`` (with ``cv``), optionally with a daily cycle."""

    process: Literal["poisson", "gamma"] = "poisson"
    rate: Optional[PosFloat] = None  # requests (or sessions) per second; retime: None keeps the trace's
    cv: PosFloat = 1.0  # coefficient of variation of inter-arrival gaps (gamma)
    amplitude: Annotated[float, Field(ge=0, lt=1)] = 0.0  # rate(t) = rate * (1 + amplitude * sin(...))
    period_s: PosFloat = 86400.0
    phase: float = 0.0  # radians

    @model_validator(mode="after")
    def _check(self):
        if self.process == "poisson" and self.cv != 1.0:
            raise ValueError("cv applies only to process: gamma (poisson has cv = 1)")
        cv2 = self.cv * self.cv  # gamma gaps: shape 1/cv^2, scale cv^2/rate (mean 1/rate)
        shape = 1.0 / cv2 if cv2 > 0 else math.inf
        scale = cv2 / self.rate if self.rate is not None else 1.0
        if not (math.isfinite(shape) and shape > 0 and math.isfinite(scale) and scale > 0):
            raise ValueError(f"cv {self.cv:g} with rate {self.rate} gives gamma gaps of shape {shape:g}, scale "
                             f"{scale:g}: not a finite positive gamma distribution")
        return self

    def times(self, rng: np.random.Generator, n: int, rate: Optional[float] = None) -> np.ndarray:
        return gen.arrival_times(rng, n, rate=rate or self.rate, cv=self.cv, process=self.process,
                                 amplitude=self.amplitude, period_s=self.period_s, phase=self.phase)


class LognormalLengths(Frozen):
    kind: Literal["lognormal"]
    prompt_median: PosFloat = 512
    prompt_sigma: Annotated[float, Field(ge=0)] = 1.0
    output_median: PosFloat = 128
    output_sigma: Annotated[float, Field(ge=0)] = 1.0
    correlation: Annotated[float, Field(ge=-1, le=1)] = 0.0  # between log prompt and log output
    prompt_max: Optional[PosInt] = None
    output_max: Optional[PosInt] = None

    def sample(self, rng, n, base_dir=None):
        return gen.lognormal_lengths(rng, n, **self.model_dump(exclude={"kind"}))


class ZipfLengths(Frozen):
    kind: Literal["zipf"]
    prompt_theta: PosFloat = 1.1
    prompt_min: PosInt = 1
    prompt_max: PosInt = 8192
    output_theta: PosFloat = 1.1
    output_min: PosInt = 1
    output_max: PosInt = 2048
    correlation: Annotated[float, Field(ge=-1, le=1)] = 0.0  # Gaussian copula

    @model_validator(mode="after")
    def _check(self):
        for w in ("prompt", "output"):
            if getattr(self, f"{w}_min") > getattr(self, f"{w}_max"):
                raise ValueError(f"{w}_min must be <= {w}_max")
            if getattr(self, f"{w}_max") > 10_000_000:
                raise ValueError(f"{w}_max must be <= 10,000,000")
        return self

    def sample(self, rng, n, base_dir=None):
        return gen.zipf_lengths(rng, n, **self.model_dump(exclude={"kind"}))


class FixedLengths(Frozen):
    kind: Literal["fixed"]
    prompt_tokens: PosInt = 512
    output_tokens: PosInt = 128

    def sample(self, rng, n, base_dir=None):
        return (np.full(n, self.prompt_tokens, dtype=np.int64), np.full(n, self.output_tokens, dtype=np.int64))


class EmpiricalLengths(Frozen):
    """Resample (prompt, output) pairs of a trace (joint distribution kept)."""

    kind: Literal["empirical"]
    trace: str
    format: Optional[str] = None
    on_error: Literal["raise", "skip"] = "raise"
    model: Optional[str] = None
    log_type: Optional[str] = None

    def sample(self, rng, n, base_dir=None):
        t = load_trace(self.trace, base_dir=base_dir, format=self.format, on_error=self.on_error,
                       model=self.model, log_type=self.log_type, sort=True, field="lengths.trace")
        return gen.empirical_lengths(rng, n, t.df["prompt_tokens"].to_numpy(), t.df["output_tokens"].to_numpy())


LengthSpec = Annotated[Union[LognormalLengths, ZipfLengths, EmpiricalLengths, FixedLengths],
                       Field(discriminator="kind")]


class ThinkTimeSpec(Frozen):
    """Pause between an answer and the user's next turn: exponential, lognormal (with cv) or fixed."""

    kind: Literal["exponential", "lognormal", "fixed"] = "exponential"
    mean_s: Annotated[float, Field(ge=0)] = 30.0
    cv: PosFloat = 1.0  # lognormal only


class SessionSpec(Frozen):
    num_sessions: PosInt
    mean_turns: Annotated[float, Field(ge=1)] = 4.0  # geometric number of turns, >= 1
    max_turns: PosInt = 32
    think_time: ThinkTimeSpec = ThinkTimeSpec()
    accumulate_context: bool = True  # turn k's prompt = all earlier prompts and answers + new tokens
    max_context_tokens: Optional[PosInt] = None  # a session ends before a turn whose prompt exceeds this


class GeneratorSpec(Frozen):
    arrivals: ArrivalSpec = ArrivalSpec()
    lengths: LengthSpec = LognormalLengths(kind="lognormal")
    num_requests: Optional[PosInt] = None
    duration_s: Optional[PosFloat] = None
    sessions: Optional[SessionSpec] = None

    @model_validator(mode="after")
    def _check(self):
        if self.arrivals.rate is None:
            raise ValueError("arrivals.rate is required for a generator (requests or sessions per second)")
        if self.sessions is not None:
            if self.num_requests is not None or self.duration_s is not None:
                raise ValueError("with sessions, give sessions.num_sessions, not num_requests / duration_s")
        elif (self.num_requests is None) == (self.duration_s is None):
            raise ValueError("give exactly one of num_requests or duration_s")
        n = self.num_requests if self.num_requests is not None else (
            self.arrivals.rate * self.duration_s if self.duration_s is not None else 0)
        if n > MAX_REQUESTS:
            raise ValueError(f"{n:.4g} requests exceed the {MAX_REQUESTS:,} a generator makes; "
                             f"lower num_requests or rate x duration_s")
        L = self.lengths
        for name in ("prompt_median", "output_median", "prompt_max", "output_max", "prompt_tokens", "output_tokens"):
            v = getattr(L, name, None)
            if v is not None and v > MAX_TOKENS:
                raise ValueError(f"lengths.{name} {v:.4g} exceeds {MAX_TOKENS:,} tokens")
        return self


TRACE_ONLY = ("format", "on_error", "sort", "model", "log_type", "retime")


class WorkloadSpec(Frozen):
    """A scenario's workload: a trace (with transformations) or a generator."""

    trace: Optional[str] = None
    format: Optional[Literal["burstgpt", "azure", "mooncake", "vidur"]] = None
    on_error: Literal["raise", "skip"] = "raise"
    sort: bool = False
    model: Optional[str] = None
    log_type: Optional[str] = None
    window_s: Optional[tuple[Annotated[float, Field(ge=0)], PosFloat]] = None
    limit: Optional[PosInt] = None
    rate_scale: PosFloat = 1.0
    retime: Optional[ArrivalSpec] = None
    session_prefix: bool = False  # derive prefix_blocks from session ids (chat history; prefix caching by session)
    generator: Optional[GeneratorSpec] = None
    # the clients' timeout: a request unfinished this long after its arrival is given up by its client and
    # aborted by the server (vLLM aborts on disconnect); None: clients wait forever (inference-perf: 300 s)
    request_timeout_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _check(self):
        if (self.trace is None) == (self.generator is None):
            raise ValueError("give exactly one of trace or generator")
        if self.generator is not None:
            bad = [k for k in TRACE_ONLY if k in self.model_fields_set]
            if bad:
                raise ValueError(f"{', '.join(bad)} apply only to a trace, not to a generator")
            if self.generator.sessions is not None:
                bad = [k for k in ("window_s", "limit", "rate_scale") if k in self.model_fields_set]
                if bad:
                    raise ValueError(f"{', '.join(bad)} do not apply to closed-loop sessions")
        if self.window_s is not None and self.window_s[0] >= self.window_s[1]:
            raise ValueError("window_s must be [start, end] with start < end")
        return self


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class SessionTurn:
    prompt_tokens: int
    output_tokens: int
    prefix_blocks: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    start_s: float  # arrival of the first turn
    turns: tuple[SessionTurn, ...]


@dataclass(frozen=True)
class SessionWorkload:
    """Closed-loop multi-turn sessions.

    The simulator sends each session's first turn at ``start_s``; when turn k's answer
    completes at time t it sends turn k+1 at ``t + think_time(rng)``. Use
    :meth:`request` to make the :class:`Request` of a turn (ids are the simulator's to give,
    e.g. in order of sending). Prefix blocks (512 tokens each) of successive turns of a
    session share their ids when ``accumulate_context`` is on, as a prefix cache would see them.
    """

    sessions: tuple[Session, ...]
    think: ThinkTimeSpec

    @property
    def num_requests(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def think_time(self, rng: np.random.Generator) -> float:
        """One think time (s) drawn from ``rng``."""
        m = self.think.mean_s
        if self.think.kind == "fixed" or m == 0:
            return float(m)
        if self.think.kind == "exponential":
            return float(rng.exponential(m))
        s2 = math.log1p(self.think.cv ** 2)
        return float(rng.lognormal(math.log(m) - s2 / 2, math.sqrt(s2)))

    def request(self, req_id: int, session_index: int, turn_index: int, arrival_s: float) -> Request:
        s = self.sessions[session_index]
        t = s.turns[turn_index]
        return Request(id=req_id, arrival_s=float(arrival_s), prompt_tokens=t.prompt_tokens,
                       output_tokens=t.output_tokens, session_id=s.session_id, prefix_blocks=t.prefix_blocks)


def _build_sessions(g: GeneratorSpec, rng: np.random.Generator, base_dir: Optional[Path]) -> SessionWorkload:
    ss = g.sessions
    assert ss is not None
    starts = g.arrivals.times(rng, ss.num_sessions)
    nturns = np.minimum(rng.geometric(1.0 / ss.mean_turns, size=ss.num_sessions), ss.max_turns)
    new_tok, out_tok = g.lengths.sample(rng, int(nturns.sum()), base_dir)
    sessions = []
    pos = 0
    full_id = 0  # ids of full context blocks, stable across a session's turns
    partial_id = 1 << 40  # ids of a turn's last, partial block (never shared)
    for i, k in enumerate(nturns.tolist()):
        turns = []
        ctx = 0
        for j in range(k):
            new, out = int(new_tok[pos + j]), int(out_tok[pos + j])
            prompt = ctx + new if ss.accumulate_context else new
            if ss.max_context_tokens is not None and prompt > ss.max_context_tokens and j > 0:
                break
            blocks: tuple[int, ...] = ()
            if ss.accumulate_context:
                nfull = prompt // BLOCK_TOKENS
                blocks = tuple(range(full_id, full_id + nfull))
                if prompt % BLOCK_TOKENS:
                    blocks += (partial_id,)
                    partial_id += 1
            turns.append(SessionTurn(prompt, out, blocks))
            ctx = prompt + out
        pos += k
        if ss.accumulate_context:
            full_id += ctx // BLOCK_TOKENS + 1
        sessions.append(Session(session_id=f"s{i}", start_s=float(starts[i]), turns=tuple(turns)))
    return SessionWorkload(sessions=tuple(sessions), think=ss.think_time)


# --------------------------------------------------------------------------- building

_CACHE: "OrderedDict[tuple, Trace]" = OrderedDict()


def resolve_trace_path(path: str | Path, base_dir: Optional[Path] = None, *, field: str = "trace") -> Path:
    """A trace path as given, or relative to ``base_dir`` (the scenario's folder), or to the data root."""
    p = Path(path).expanduser()
    if p.is_absolute():
        cands = [p]
    else:
        cands = ([Path(base_dir) / p] if base_dir is not None else [Path.cwd() / p]) + [d / p for d in data_roots()]
    for c in cands:
        if c.is_file():
            return c
    raise InputError(f"trace file not found: {str(path)!r} (looked in {', '.join(str(c.parent) for c in cands)})",
                     field=field)


def load_trace(path: str | Path, *, base_dir: Optional[Path] = None, field: str = "trace", **kw) -> Trace:
    """:func:`read_trace` with path resolution and a small cache (key: path, mtime, options)."""
    p = resolve_trace_path(path, base_dir, field=field).resolve()
    key = (str(p), p.stat().st_mtime_ns, tuple(sorted(kw.items())))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    t = read_trace(p, **kw)
    _CACHE[key] = t
    while len(_CACHE) > 8:
        _CACHE.popitem(last=False)
    return t


def to_requests(df: pd.DataFrame) -> RequestTable:
    """The requests (ids 0..n-1) of a table sorted by arrival, as columns (:class:`RequestTable`)."""
    def labels(col: str) -> Optional[list]:
        if col not in df.columns:
            return None
        return [x if isinstance(x, str) else None for x in df[col].tolist()]  # NaN / NA -> None

    blocks = [tuple(b) for b in df["prefix_blocks"].tolist()] if "prefix_blocks" in df.columns else None
    return RequestTable(df["arrival_s"].to_numpy(dtype=float), df["prompt_tokens"].to_numpy(dtype=np.int64),
                        df["output_tokens"].to_numpy(dtype=np.int64), session_id=labels("session_id"),
                        prefix_blocks=blocks, model=labels("model"))


def _generate(g: GeneratorSpec, rng: np.random.Generator, base_dir: Optional[Path]) -> pd.DataFrame:
    a = g.arrivals
    if g.num_requests is not None:
        t = a.times(rng, g.num_requests)
    else:
        mean_n = a.rate * g.duration_s  # type: ignore[operator]
        n = int(mean_n * (1 + a.amplitude) + 8 * a.cv * math.sqrt(mean_n) + 16)
        t = a.times(rng, n)
        while t[-1] < g.duration_s:  # rare: draw a longer stream (still deterministic)
            n *= 2
            t = a.times(rng, n)
        t = t[t < g.duration_s]
    p, o = g.lengths.sample(rng, len(t), base_dir)
    return pd.DataFrame({"arrival_s": t, "prompt_tokens": p, "output_tokens": o})


def build_table(spec: WorkloadSpec, *, seed: int, base_dir: Optional[Path] = None) -> pd.DataFrame:
    """The request table of a (non-session) workload, after transformations."""
    rng = np.random.default_rng(seed)
    if spec.trace is not None:
        tr = load_trace(spec.trace, base_dir=base_dir, format=spec.format, on_error=spec.on_error,
                        sort=spec.sort, model=spec.model, log_type=spec.log_type)
        df = tr.df
    else:
        assert spec.generator is not None
        df = _generate(spec.generator, rng, base_dir)
    if spec.window_s is not None:
        df = tf.time_window(df, *spec.window_s)
    if spec.limit is not None:
        df = tf.limit(df, spec.limit)
    if spec.rate_scale != 1.0:
        df = tf.scale_rate(df, spec.rate_scale)
    if spec.retime is not None:
        r = spec.retime
        df = tf.retime(df, rng, process=r.process, rate=r.rate, cv=r.cv, amplitude=r.amplitude,
                       period_s=r.period_s, phase=r.phase)
    if len(df) == 0:
        raise InputError("the workload has no requests left after window_s / limit", field="window_s")
    if spec.session_prefix:
        if "session_id" not in df.columns:
            raise InputError("session_prefix needs a trace with session ids (BurstGPT 'Session ID')",
                             field="session_prefix")
        df = tf.session_prefix_blocks(df, BLOCK_TOKENS)
    return df


def build_workload(spec: WorkloadSpec | dict, *, seed: int, base_dir: Path | None = None
                   ) -> RequestTable | SessionWorkload:
    """Requests sorted by ``arrival_s`` with ids 0..n-1 (a :class:`RequestTable`: a sequence of
    :class:`Request` kept as columns), or a :class:`SessionWorkload` for sessions.

    ``base_dir``: folder that relative trace paths are resolved against first (the scenario's
    folder); then the data root (:func:`simllm.config.data_root`). Errors are
    :class:`InputError` naming the field (``generator.arrivals.rate``) or the trace file.
    """
    if not isinstance(spec, WorkloadSpec):
        if not isinstance(spec, dict):
            raise InputError(f"expected a mapping, got {type(spec).__name__}")
        spec = validate(WorkloadSpec, spec)
    if spec.generator is not None and spec.generator.sessions is not None:
        return _build_sessions(spec.generator, np.random.default_rng(seed), base_dir)
    return to_requests(build_table(spec, seed=seed, base_dir=base_dir))
