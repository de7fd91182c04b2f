"""What a simulation is configured with and what it returns: ``SimConfig``, ``SimResult``, step records.

Step records (:class:`StepLog`) are kept as column arrays in chunks of ``CHUNK_ROWS`` rows, not
as a Python object per step: a full chunk is priced (its compute/memory/comm breakdown), added
to the run's :class:`StepTotals` (what the summary needs) and either kept or handed to a sink
(``simllm run --out`` streams it to disk), so a long run holds at most one chunk of step rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Optional

import numpy as np

NAN = float("nan")

STEP_COLUMNS = ("replica", "start_s", "duration_s", "n_steps", "batch_size", "prefill_tokens", "decode_tokens",
                "kv_blocks_used", "compute_s", "memory_s", "comm_s", "flops", "bytes")
_RAW = STEP_COLUMNS[:8]  # recorded per step; the rest is the breakdown, priced per chunk
_INT = ("replica", "n_steps", "batch_size", "prefill_tokens", "decode_tokens", "kv_blocks_used")
_SHAPE = ("P", "W", "m", "n", "ctx")  # the BatchShape of the row (prefill tokens, work, seqs; decode seqs, ctx)
_WIDTH = len(_RAW) + len(_SHAPE)

CHUNK_ROWS = 1 << 16
"""Step rows per chunk (priced, summed and written together)."""


def empty_steps() -> dict:
    """Step columns with no rows (the dtypes of a non-empty table)."""
    return {c: np.zeros(0, dtype=np.int64 if c in _INT else np.float64) for c in STEP_COLUMNS}


@dataclass
class StepTotals:
    """Per-replica sums over every step row: what the run summary needs of the step table."""

    busy_s: np.ndarray  # sum of duration_s
    kv_block_s: np.ndarray  # sum of kv_blocks_used x duration_s
    flops: np.ndarray  # sum of flops (per device of the replica)
    bytes: np.ndarray
    rows: int = 0
    breakdown: bool = True  # every row has a finite flops figure

    @classmethod
    def zeros(cls, replicas: int) -> "StepTotals":
        return cls(*(np.zeros(replicas) for _ in range(4)))

    def add(self, cols: dict) -> None:
        rep = cols["replica"]
        R = len(self.busy_s)
        dur = cols["duration_s"]
        self.busy_s += np.bincount(rep, weights=dur, minlength=R)
        self.kv_block_s += np.bincount(rep, weights=cols["kv_blocks_used"] * dur, minlength=R)
        fl = cols["flops"]
        fin = np.isfinite(fl)
        self.breakdown = self.breakdown and bool(fin.all())
        self.flops += np.bincount(rep[fin], weights=fl[fin], minlength=R)
        by = cols["bytes"]
        fin = np.isfinite(by)
        self.bytes += np.bincount(rep[fin], weights=by[fin], minlength=R)
        self.rows += len(rep)


class StepLog:
    """The step rows of a run (see the module docstring).

    ``append`` takes one row: the eight recorded columns of ``STEP_COLUMNS`` then the row's
    ``BatchShape`` fields. ``price(chunk, shapes, first_row)`` fills the breakdown columns of a chunk
    (``shapes``: the BatchShape fields as arrays ``P``, ``W``, ``m``, ``n``, ``ctx``);
    ``sink(chunk)`` (optional) receives every priced chunk in order, which is then not kept."""

    def __init__(self, replicas: int, price: Callable[[dict, int], None],
                 sink: Optional[Callable[[dict], None]] = None, chunk_rows: Optional[int] = None):
        self._buf: list = []
        self.append = self._buf.append
        self.chunk_rows = chunk_rows or CHUNK_ROWS  # read at construction (tests lower it)
        self._price = price
        self._sink = sink
        self._chunks: list = []
        self._sealed = 0
        self.totals = StepTotals.zeros(replicas)

    def __len__(self) -> int:
        return self._sealed + len(self._buf)

    def full(self) -> bool:
        return len(self._buf) >= self.chunk_rows

    def seal(self) -> None:
        """Price, sum and hand on (or keep) the rows recorded since the last seal."""
        buf = self._buf
        if not buf:
            return
        # one float array of all rows (every integer field is far below 2**53: exact), then its columns
        A = np.fromiter(chain.from_iterable(buf), dtype=np.float64, count=len(buf) * _WIDTH).reshape(-1, _WIDTH)
        cols = {c: A[:, i].astype(np.int64) if c in _INT else A[:, i].copy() for i, c in enumerate(_RAW)}
        shape = {c: A[:, 8 + i].copy() if c in ("W", "ctx") else A[:, 8 + i].astype(np.int64)
                 for i, c in enumerate(_SHAPE)}
        first = self._sealed
        self._sealed += len(buf)
        buf.clear()
        self._price(cols, shape, first)
        self.totals.add(cols)
        if self._sink is not None:
            self._sink(cols)
        else:
            self._chunks.append(cols)

    def columns(self) -> dict:
        """All kept rows as one array per column (no rows kept when a sink took them)."""
        self.seal()
        ch = self._chunks
        if not ch:
            return empty_steps()
        if len(ch) == 1:
            return ch[0]
        return {c: np.concatenate([x[c] for x in ch]) for c in STEP_COLUMNS}


@dataclass(frozen=True)
class SimConfig:
    """Simulation options; a pool (``simllm.sim.pools.Pool``) may carry its own for the KV fields."""

    jump: bool = True  # price decode segments at once (False: one SimPy event per iteration)
    preemption: str = "recompute"  # or "swap"
    block_size: int = 16
    watermark: float = 0.01
    max_model_len: Optional[int] = None  # prompt + output longer than this is rejected
    swap_bandwidth: float = 25e9  # B/s per device between device and host memory (swap preemption)
    record_breakdown: bool = True  # call step_cost once per step/segment for compute/memory/comm
    prefix_caching: bool = False  # share full prompt units with equal prefix keys (simllm.sim.prefix_cache)
    prefix_unit_tokens: int = 512  # tokens per prefix key (Mooncake hash_ids: 512)
    speculative: Optional[object] = None  # a simllm.speculative.SpeculativeSpec (simllm.sim.spec_decode)
    # KV moves layer by layer (simllm.sim.transfer): a prefill's KV streams to its decode replica while its last
    # prefill step runs, all layers but the last before that step ends (disaggregated pools only)
    kv_layer_wise: bool = False
    kv_tiers: tuple = ()  # simllm.sim.kv_tiers.TierLevel below HBM, first to last (needs prefix_caching)
    # the client's timeout (s from arrival): a request unfinished by then is aborted by the server (the client
    # disconnects; vLLM frees its KV and drops it from its queues); None: clients wait forever
    request_timeout_s: Optional[float] = None
    # per-request time of the server's front end outside the engine's steps (HTTP, tokenization, hand-off to the
    # engine, streaming back): the client sees every token this much later than the engine emits it
    api_overhead_s: float = 0.0
    # vLLM V1's async scheduling (simllm.scenario.DeploymentSpec.async_scheduling): the scheduler plans step k+1
    # while step k runs, so every token of a request reaches the client one engine step later (the iteration that
    # emitted its first token); the engine's timeline is unchanged (colocated pools, no DP ranks)
    async_scheduling: bool = False


@dataclass
class SimResult:
    """Raw outcome of a simulation (arrays indexed by request position in arrival order).

    With more than one pool (or a pool that is not of role ``both``), ``pools`` names each
    replica's pool, ``replica_devices`` / ``replica_kv_blocks`` give its size, ``request_columns``
    adds ``decode_replica``, ``pool`` (where the request completed) and ``kv_transfer_s``."""

    ids: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    completion_s: np.ndarray
    generated_tokens: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    rejected_reason: list  # "" when served
    steps: dict  # column -> array (no rows when the run streamed them to a sink)
    num_replicas: int
    kv_num_blocks: int
    block_size: int
    end_s: float
    kv_peak_blocks: list = field(default_factory=list)
    priority: Optional[np.ndarray] = None  # priority class per request (batching policy's rule)
    prefix_caching: bool = False
    prefix_query_tokens: int = 0  # prompt tokens looked up in the prefix cache at admission
    prefix_hit_tokens: int = 0  # of which found cached (prefill skipped)
    pools: list = field(default_factory=list)  # pool name of each replica index (several pools only)
    replica_devices: list = field(default_factory=list)
    replica_kv_blocks: list = field(default_factory=list)
    request_columns: dict = field(default_factory=dict)  # extra requests.csv columns
    kv_peak_total_blocks: list = field(default_factory=list)  # decode replicas: used + reserved for transfers
    speculative: Optional[dict] = None  # speculative decoding counters (simllm.sim.spec_decode.speculative_summary)
    kv_tiers: Optional[dict] = None  # per-tier prefix hits (simllm.sim.kv_tiers.tiers_summary)
    api_overhead_s: float = 0.0  # added to ttft_s and e2e_s (the client's view), see SimConfig
    # async scheduling (SimConfig.async_scheduling): per request, the length of the engine iteration that emitted its
    # first token (NaN: none), also added to ttft_s and e2e_s; None when off
    async_lag_s: Optional[np.ndarray] = None
    aborted_s: Optional[np.ndarray] = None  # when the server aborted the request at its client's timeout (NaN: not)
    step_totals: Optional[StepTotals] = None  # per-replica sums over all step rows (streamed ones included)
