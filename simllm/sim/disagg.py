"""Prefill/decode disaggregation (DistServe, Splitwise, Mooncake, DeepSeek's deployment).

Two pools of replicas of the same model, each with its own replica count, parallelism,
batching and cost model::

    deployment:
      disaggregation:
        prefill: {replicas: 2, tp: 2, batching: {policy: vllm, max_num_batched_tokens: 8192}}
        decode:  {replicas: 1, tp: 4, batching: {policy: vllm, max_num_seqs: 256}}
        kv_link: auto            # the cluster's links; or {bandwidth: 50 GB/s, latency: 10 us}

A request goes to a prefill replica (the prefill pool's ``router``), which computes its prompt
and produces the first token there (TTFT ends there). Its KV cache then moves to a decode
replica (the decode pool's ``router``, default ``least_outstanding``) and the remaining tokens
are generated there (TPOT is measured on the decode pool; it includes the transfer and any wait
for decode memory).

KV transfer: ``bytes = kv_bytes_per_token_per_device x devices`` of the prefill replica's cost
model ``x prompt tokens``, split evenly over ``max(Gp, Gd)`` flows from the prefill replica's
devices to the decode replica's (device pairs ``(j mod Gp, j mod Gd)``). With ``kv_link: auto``
the flows run over the topology of the scenario's node or cluster in a
:class:`~simllm.network.FluidNetwork` (same node: scale-up links; different nodes: NICs and
fabric), so overlapping transfers share bandwidth max-min fairly. With an explicit link every
prefill replica has one outgoing and every decode replica one incoming link of that bandwidth.
Replicas take device ranks in order: prefill replicas first, then decode replicas.

Decode memory admission (the choice documented here): **a request waits for decode KV blocks
before its transfer starts.** The prefill replica keeps the request's blocks until the transfer
has completed. The decode replica starts transfers from its inbox (FCFS) at its step boundaries
(at once when idle) while (a) a sequence slot is free counting in-flight transfers, (b) the
prompt's blocks fit above the watermark, and (c) the largest final footprint (prompt + output
blocks) of any request on the replica plus all reserved blocks plus the watermark fits its
capacity, so that any one sequence can always run to completion (vLLM's guarantee) even while
transfers hold blocks. The blocks are reserved when the transfer starts and become the
sequence's own when it joins the running batch at the first step boundary after its transfer
completes. A request preempted on the decode pool is recomputed (``preemption: recompute``) or
swapped there, as on a colocated replica.

Both pools reuse :class:`simllm.sim.engine.Replica`: a prefill replica replaces its loop with a
prefill-only one; a decode replica keeps the whole decode machinery (jumps over decode
segments, preemption) and only adds the transfer admission at each decision point
(``Replica._on_boundary``). Transfer arrivals cut a jump at the next step boundary exactly like
request arrivals, so jumping and stepping give identical timestamps here too.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
from pydantic import Field, field_validator

from ..config import Frozen, quantity
from ..errors import InputError
from .engine import NAN, Replica, SimConfig, SimResult, Simulation

POOLS = ("prefill", "decode")


# --------------------------------------------------------------------------- configuration


def _policy_block(kind: str, v: Any, default: str) -> dict:
    from ..policies.batching import batching
    from ..policies.routing import routing

    return (batching if kind == "batching" else routing).check_block(v, default)


class PoolSpec(Frozen):
    replicas: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    batching: dict[str, Any] = Field(default_factory=lambda: {"policy": "vllm"})
    router: Optional[dict[str, Any]] = None  # prefill: routes arrivals; decode: picks the decode replica

    @field_validator("batching", mode="before")
    @classmethod
    def _batching(cls, v):
        return _policy_block("batching", v, "vllm")

    @field_validator("router", mode="before")
    @classmethod
    def _router(cls, v):
        return None if v is None else _policy_block("router", v, "round_robin")

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp


class KVLinkSpec(Frozen):
    bandwidth: quantity("bandwidth")  # per direction, per prefill replica (out) and decode replica (in)
    latency: quantity("time", positive=False) = 0.0


class DisaggSpec(Frozen):
    prefill: PoolSpec
    decode: PoolSpec
    kv_link: Union[Literal["auto"], KVLinkSpec] = "auto"

    @field_validator("kv_link", mode="before")
    @classmethod
    def _kv_link(cls, v):
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"expected 'auto' (the cluster's links) or {{bandwidth: 50 GB/s, latency: 10 us}}, "
                             f"got {v!r}")
        return v

    @property
    def devices(self) -> int:
        return (self.prefill.replicas * self.prefill.devices_per_replica
                + self.decode.replicas * self.decode.devices_per_replica)


# --------------------------------------------------------------------------- replicas


class PrefillReplica(Replica):
    """Prefill only: computes prompts, produces the first token, holds the KV until it has moved."""

    pool = "prefill"

    def __init__(self, sim, index, cost, policy, num_blocks):
        super().__init__(sim, index, cost, policy, num_blocks)
        self.holding = 0  # requests whose KV waits here for (or is in) its transfer
        self.kv_bytes_per_token = float(cost.kv_bytes_per_token_per_device)

    def _reject_reason(self, rid: int) -> str:
        sim = self.sim
        p = int(sim.prompt[rid])
        o = int(sim.out[rid])
        if self.max_prompt is not None and p > self.max_prompt:
            return f"prompt of {p} tokens exceeds the prefill pool's batching token budget of {self.max_prompt}"
        if self.cfg.max_model_len is not None and p + o > self.cfg.max_model_len:
            return f"prompt + output of {p + o} tokens exceeds max_model_len {self.cfg.max_model_len}"
        need = self.kv.blocks_for(p)
        if need > self.kv.num_blocks - self.kv.watermark_blocks:
            return f"needs {need} KV blocks, the prefill replica holds {self.kv.num_blocks}"
        return sim.decode_reject_reason(rid) if o > 1 else ""

    def _run(self):
        env = self.env
        while True:
            if self.waiting:
                batch = self.policy.next_batch(self.waiting, self, self.kv)
                if batch.prefill_ids:
                    yield from self._prefill_only(batch, self.clock)
                    continue
                if not self.holding:
                    raise RuntimeError(f"prefill replica {self.index}: policy {self.policy!r} scheduled nothing "
                                       f"with {len(self.waiting)} waiting and no KV held")
            # idle, or every admissible request waits for KV held by transfers: wait for an arrival or a release
            self.idle_ev = env.event()
            yield self.idle_ev

    def _prefill_only(self, batch, now: float):
        sim = self.sim
        kv = self.kv
        ids = batch.prefill_ids
        lens = batch.prefill_lens
        m = len(ids)
        P = 0
        W = 0.0
        for rid, L in zip(ids, lens):
            if L != self.waiting.prefill_len(rid):
                raise InputError(f"the prefill pool runs whole prompts (no chunked prefill yet); batching policy "
                                 f"{self.policy!r} scheduled a chunk of {L} of a {self.waiting.prefill_len(rid)}-token "
                                 f"prompt", field="deployment.disaggregation.prefill.batching")
            P += L
            W += L * (L / 2.0)
        key = (P, W, m)
        d = self._pmemo.get(key)
        if d is None:
            d = self._pmemo[key] = float(self.cost.step_time(P, W, m, 0, 0.0))
        end = now + d
        for _ in range(m):
            self.waiting.popleft()
        for rid, L in zip(ids, lens):
            kv.used_blocks += kv.blocks_for(L)
            if sim.scheduled[rid] != sim.scheduled[rid]:
                sim.scheduled[rid] = now
        used = kv.used_blocks
        if used > self.kv_peak:
            self.kv_peak = used
        yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        sim.record_step(self.index, now, d, 1, m, P, m, 0, used, (P, W, m, 0, 0.0))
        for rid, L in zip(ids, lens):
            sim.gen[rid] = 1
            sim.first_token[rid] = end
            if sim.out[rid] <= 1:  # done at the prefill: nothing to move
                sim.completion[rid] = end
                sim.pool_done[rid] = 0
                kv.used_blocks -= kv.blocks_for(L)
                self.done += 1
                sim.finished += 1
            else:
                self.holding += 1
                sim.handoff(rid, L, self, end)

    def release(self, blocks: int, t: float) -> None:
        """A transfer from here completed: free its blocks, wake the replica if it waits for them."""
        self.kv.used_blocks -= blocks
        self.holding -= 1
        self.done += 1
        if self.idle_ev is not None and self.waiting:
            ev, self.idle_ev = self.idle_ev, None
            self.clock = t if t > self.clock else self.clock
            ev.succeed()


class DecodeReplica(Replica):
    """Decode only: receives prefilled requests' KV, then decodes them (the colocated decode loop)."""

    pool = "decode"

    def __init__(self, sim, index, cost, policy, num_blocks):
        super().__init__(sim, index, cost, policy, num_blocks)
        self.total_blocks = num_blocks  # kv.num_blocks is this minus the blocks reserved for transfers
        self.reserved = 0
        self.inbox: deque = deque()  # (rid, prompt tokens, prefill replica) waiting for their transfer to start
        self.inflight = 0
        self.landed: deque = deque()  # (rid, tokens, reserved blocks): transferred, join at the next boundary
        self.members: dict[int, int] = {}  # rid -> final footprint beyond its reservation, transferring or landed
        self.peak_total = 0  # max of used + reserved blocks

    def _reject_reason(self, rid: int) -> str:  # of the decode pool, for a request prefilled elsewhere
        p = int(self.sim.prompt[rid])
        o = int(self.sim.out[rid])
        mp = self.max_prompt
        if mp is not None and p + o - 1 > mp and self.cfg.preemption == "recompute":
            return (f"prompt + output of {p + o} tokens exceeds the decode pool's batching token budget of {mp} "
                    f"(a request preempted on the decode pool is recomputed there in one prefill)")
        need = self.kv.blocks_for(p + o)
        if need > self.total_blocks - self.kv.watermark_blocks:
            return f"needs {need} KV blocks, the decode replica holds {self.total_blocks}"
        return ""

    def receive(self, rid: int, L: int, src: PrefillReplica, t: float) -> None:
        self.assigned += 1
        first = not self.inbox
        self.inbox.append((rid, L, src))
        if first and self._fits(rid, L):
            self._poke(t)

    def _final_max(self) -> int:
        sim = self.sim
        B = self.B
        m = 0
        if self.n:
            ids = self.r_idx[:self.n]
            m = int((-(-(sim.prompt[ids] + sim.out[ids]) // B)).max())
        if self.members:
            m = max(m, max(self.members.values()))
        for rid in self.waiting:
            m = max(m, -(-int(sim.prompt[rid] + sim.out[rid]) // B))
        for rid, _t, _rem in self.swapped:
            m = max(m, -(-int(sim.prompt[rid] + sim.out[rid]) // B))
        return m

    def _fits(self, rid: int, L: int) -> bool:
        kv = self.kv
        if self.n + self.inflight + len(self.landed) + 1 > self.max_seqs:
            return False
        need = kv.blocks_for(L)
        if kv.free_blocks - need < kv.watermark_blocks:
            return False
        final = kv.blocks_for(int(self.sim.prompt[rid] + self.sim.out[rid]))
        # (c): whichever request ends up alone can grow to its final size next to all reservations
        return max(self._final_max(), final - need) + self.reserved + need + kv.watermark_blocks <= self.total_blocks

    def _poke(self, t: float) -> None:
        """Something changes at time t: wake the idle replica, or cut its jump at the next step boundary."""
        if self.idle_ev is not None:
            ev, self.idle_ev = self.idle_ev, None
            self.clock = t if t > self.clock else self.clock
            ev.succeed()
        elif self.interruptible:
            self.interruptible = False
            self.proc.interrupt(t)

    def landed_at(self, rid: int, L: int, need: int, t: float) -> None:
        self.inflight -= 1
        self.landed.append((rid, L, need))
        self._poke(t)

    def _on_boundary(self) -> None:
        sim = self.sim
        kv = self.kv
        while self.landed and self.n < self.max_seqs:
            rid, L, need = self.landed.popleft()
            del self.members[rid]
            kv.num_blocks += need
            self.reserved -= need
            kv.used_blocks += need
            i = self.n
            self.r_idx[i] = rid
            self.r_t[i] = L
            self.r_rem[i] = int(sim.out[rid]) - int(sim.gen[rid])
            self.n = i + 1
            if kv.used_blocks > self.kv_peak:
                self.kv_peak = kv.used_blocks
        while self.inbox:
            rid, L, src = self.inbox[0]
            if not self._fits(rid, L):
                break
            self.inbox.popleft()
            need = kv.blocks_for(L)
            kv.num_blocks -= need
            self.reserved += need
            self.inflight += 1
            self.members[rid] = kv.blocks_for(int(sim.prompt[rid] + sim.out[rid])) - need  # beyond its reservation
            sim.start_transfer(rid, L, src, self, need, self.clock)
        tot = kv.used_blocks + self.reserved
        if tot > self.peak_total:
            self.peak_total = tot


# --------------------------------------------------------------------------- simulation


class _PoolView:
    """A replica as a router sees it, with ``index`` its position in its pool."""

    def __init__(self, rep: Replica, index: int):
        self.__dict__["_rep"] = rep
        self.__dict__["index"] = index

    def __getattr__(self, name):
        return getattr(self._rep, name)


@dataclass
class DisaggResult(SimResult):
    pools: list = field(default_factory=list)  # pool name of each replica index
    replica_devices: list = field(default_factory=list)
    replica_kv_blocks: list = field(default_factory=list)
    request_columns: dict = field(default_factory=dict)  # extra requests.csv columns
    kv_peak_total_blocks: list = field(default_factory=list)  # decode: used + reserved for transfers


class DisaggSimulation(Simulation):
    """Serve ``requests`` on a prefill pool and a decode pool joined by KV-cache transfers.

    ``prefill``/``decode``: dicts with ``replicas``, ``cost``, ``num_blocks``, ``batching`` (a factory
    of fresh policies), ``router`` and ``devices`` (per replica). ``network``: a function
    ``env -> (FluidNetwork, send)`` where ``send(src_ranks, dst_ranks, nbytes) -> event``; see
    :func:`link_network` and :func:`topology_network`.
    """

    def __init__(self, requests: Any, *, prefill: dict, decode: dict, network: Callable, config: SimConfig = SimConfig(),
                 seed: int = 0):
        if hasattr(requests, "sessions") and hasattr(requests, "think_time"):
            raise InputError("closed-loop sessions are not supported with disaggregation yet", field="workload")
        # the base class builds one ordinary replica (it idles forever, unused); the pools replace it
        super().__init__(requests, cost=prefill["cost"], num_blocks=prefill["num_blocks"], batching=prefill["batching"],
                         router=prefill["router"], replicas=1, config=config, seed=seed)
        self.replicas = []
        self.ranks = []
        rank = 0
        for pool, spec, cls in (("prefill", prefill, PrefillReplica), ("decode", decode, DecodeReplica)):
            for _ in range(spec["replicas"]):
                r = cls(self, len(self.replicas), spec["cost"], spec["batching"](), spec["num_blocks"])
                self.replicas.append(r)
                self.ranks.append(list(range(rank, rank + spec["devices"])))
                rank += spec["devices"]
        self.prefill = [r for r in self.replicas if r.pool == "prefill"]
        self.decode = [r for r in self.replicas if r.pool == "decode"]
        self.decode_router = decode["router"]
        self.decode_views = [_PoolView(r, i) for i, r in enumerate(self.decode)]  # routers see pool positions
        self.pool_devices = (prefill["devices"], decode["devices"])
        self.net, self.send = network(self.env, self.ranks)
        self.kv_transfer = np.full(self.N, NAN)
        self.decode_of = np.full(self.N, -1, dtype=np.int64)
        self.pool_done = np.full(self.N, -1, dtype=np.int64)  # 0 prefill, 1 decode

    # -- request flow ------------------------------------------------------------------------
    def _arrivals(self):
        env = self.env
        reps = self.prefill
        route = self.router.route
        for rid, a in enumerate(self.arrival.tolist()):
            if a > env.now:
                yield env.timeout(a - env.now)
            reps[route(rid, reps)].submit(rid, a)

    def decode_reject_reason(self, rid: int) -> str:
        return self.decode[0]._reject_reason(rid)

    def handoff(self, rid: int, L: int, src: PrefillReplica, t: float) -> None:
        dst = self.decode[self.decode_router.route(rid, self.decode_views)]
        self.decode_of[rid] = dst.index
        dst.receive(rid, L, src, t)

    def start_transfer(self, rid: int, L: int, src: PrefillReplica, dst: DecodeReplica, need: int, t: float) -> None:
        nbytes = src.kv_bytes_per_token * len(self.ranks[src.index]) * L
        ev = self.send(self.ranks[src.index], self.ranks[dst.index], nbytes)
        start = self.env.now

        def done(_e):
            now = self.env.now
            self.kv_transfer[rid] = now - start
            src.release(src.kv.blocks_for(L), now)
            dst.landed_at(rid, L, need, now)

        ev.callbacks.append(done)

    def run(self, progress=None, chunk_s=None) -> DisaggResult:
        res = super().run(progress=progress, chunk_s=chunk_s)
        d_done = np.isfinite(res.completion_s) & (self.pool_done != 0)
        pool_done = np.where(self.pool_done == 0, "prefill", np.where(d_done, "decode", ""))
        pools = [r.pool for r in self.replicas]
        return DisaggResult(**vars(res), pools=pools,
                            replica_devices=[len(x) for x in self.ranks],
                            replica_kv_blocks=[r.kv.num_blocks if r.pool == "prefill" else r.total_blocks
                                               for r in self.replicas],
                            request_columns={"decode_replica": self.decode_of, "pool": pool_done,
                                             "kv_transfer_s": self.kv_transfer},
                            kv_peak_total_blocks=[r.peak_total for r in self.decode])


# --------------------------------------------------------------------------- networks


def _pairs(src: list, dst: list) -> list:
    n = max(len(src), len(dst))
    return [(src[j % len(src)], dst[j % len(dst)]) for j in range(n)]


def link_network(bandwidth: float, latency: float = 0.0):
    """Dedicated KV links: one outgoing link per prefill replica and one incoming per decode replica."""
    from ..network import FluidNetwork

    def build(env, ranks):
        first = {r[0]: i for i, r in enumerate(ranks)}
        net = FluidNetwork(env, {("kv", i): bandwidth for i in range(len(ranks))})

        def send(src, dst, nbytes):
            return net.transfer([("kv", first[src[0]]), ("kv", first[dst[0]])], nbytes, latency=latency)

        return net, send

    return build


def topology_network(topo):
    """KV flows over a :class:`simllm.topology.Topology` (device ranks as laid out by the simulation)."""
    from ..network import FluidNetwork

    def build(env, ranks):
        need = sum(len(r) for r in ranks)
        if need > topo.num_devices:
            raise InputError(f"the pools need {need} devices, {topo.cluster.name} has {topo.num_devices}; "
                             f"use a cluster with more nodes", field="deployment.disaggregation")
        net = FluidNetwork.from_topology(env, topo)

        def send(src, dst, nbytes):
            pairs = _pairs(src, dst)
            evs = [net.send(a, b, nbytes / len(pairs)) for a, b in pairs]
            return evs[0] if len(evs) == 1 else env.all_of(evs)

        return net, send

    return build


# --------------------------------------------------------------------------- scenarios


@dataclass
class PoolPrep:
    spec: PoolSpec
    cost: Any
    num_blocks: int


def prepare_disaggregated(scn, model, acc, node, n_devices, *, file=None, seed=None):
    """``simllm.scenario.prepare`` for a scenario with ``deployment.disaggregation``."""
    from ..scenario import Prepared, _located
    from ..workload.spec import build_workload
    from .kv import kv_capacity_blocks

    dep = scn.deployment
    dis: DisaggSpec = dep.disaggregation
    where = "deployment.disaggregation"
    clash = sorted({"replicas", "tp", "pp", "batching", "router"} & set(dep.model_fields_set))
    if clash:
        raise InputError(f"with disaggregation give {', '.join(clash)} per pool (under {where}.prefill / .decode), "
                         f"not at the deployment level", file=file, field=f"deployment.{clash[0]}")
    if n_devices is not None and dis.devices > n_devices:
        raise InputError(f"the pools need {dis.devices} devices, the cluster has {n_devices}", file=file, field=where)
    for name in POOLS:
        ps = getattr(dis, name)
        if node is not None and ps.devices_per_replica > node.devices:
            raise InputError(f"a replica needs tp x pp = {ps.devices_per_replica} devices, the {node.name} node has "
                             f"{node.devices}", file=file, field=f"{where}.{name}.tp")
    if node is not None and n_devices is None and dis.kv_link == "auto" and dis.devices > node.devices:
        raise InputError(f"the pools need {dis.devices} devices, the {node.name} node has {node.devices}; use a "
                         f"cluster (hardware.cluster) or an explicit kv_link", file=file, field=where)
    pools = {}
    from ..cost import make_step_cost

    for name in POOLS:
        ps: PoolSpec = getattr(dis, name)
        w = f"{where}.{name}"
        cost = _located(lambda: make_step_cost(model, acc, tp=ps.tp, pp=ps.pp, node=node,
                                               weight_dtype=dep.weight_dtype, kv_dtype=dep.kv_dtype,
                                               act_dtype=dep.act_dtype, framework=dep.framework), file, w)
        kvs = dep.kv
        mem = acc.hbm_bytes
        nb = _located(lambda: kv_capacity_blocks(
            device_memory_bytes=mem, n_devices=ps.devices_per_replica,
            gpu_memory_utilization=kvs.gpu_memory_utilization,
            weight_bytes_per_device=float(cost.weight_bytes_per_device), activation_reserve_bytes=kvs.reserve_bytes(mem),
            kv_bytes_per_token_per_device=float(cost.kv_bytes_per_token_per_device), block_size=kvs.block_size,
            where=w), file, None)
        pools[name] = PoolPrep(ps, cost, nb)
    base = Path(file).resolve().parent if file else None
    s = scn.seed if seed is None else seed
    wl = _located(lambda: build_workload(scn.workload, seed=s, base_dir=base), file, "workload")
    prep = Prepared(scn, model, acc, node, pools["prefill"].cost, pools["prefill"].num_blocks, wl)
    prep.pools = pools
    return prep


def _network_for(scn, prep, file=None):
    dis = scn.deployment.disaggregation
    if isinstance(dis.kv_link, KVLinkSpec):
        return link_network(dis.kv_link.bandwidth, dis.kv_link.latency)
    from ..topology import build_topology

    hw = scn.hardware
    if hw.cluster:
        topo = _topo(lambda: build_topology(hw.cluster), file)
    elif prep.node is not None:
        topo = _topo(lambda: build_topology(prep.node), file)
    else:
        raise InputError("kv_link: auto needs hardware.node or hardware.cluster (their links carry the KV cache); "
                         "or give kv_link: {bandwidth: ...}", file=file, field="deployment.disaggregation.kv_link")
    return topology_network(topo)


def _topo(fn, file):
    try:
        return fn()
    except InputError as e:
        raise e.at(file=file, field_prefix="hardware")


def kv_transfer_stats(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": None, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(x, [50, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p99": float(p99), "max": float(x.max())}


def simulate_disaggregated(prep, *, seed=None, progress=None):
    """``simllm.scenario.simulate`` for a disaggregated scenario: (requests, steps, summary)."""
    from ..metrics import requests_table, steps_table, summarize
    from ..policies import make_batching, make_router

    scn = prep.scenario
    dep = scn.deployment
    dis = dep.disaggregation
    max_len = dep.max_model_len
    if max_len is None:
        max_len = getattr(prep.model, "max_position_embeddings", None)
    cfg = SimConfig(jump=scn.sim.jump, preemption=dep.kv.preemption, block_size=dep.kv.block_size,
                    watermark=dep.kv.watermark, max_model_len=max_len, swap_bandwidth=dep.kv.swap_bandwidth,
                    record_breakdown=scn.sim.record_breakdown)
    pp_, dp_ = prep.pools["prefill"], prep.pools["decode"]

    def pool(pp: PoolPrep, default_router: str) -> dict:
        b = pp.spec.batching
        return dict(replicas=pp.spec.replicas, cost=pp.cost, num_blocks=pp.num_blocks,
                    batching=lambda: make_batching(b), router=make_router(pp.spec.router or default_router),
                    devices=pp.spec.devices_per_replica)

    sim = DisaggSimulation(prep.workload, prefill=pool(pp_, "round_robin"), decode=pool(dp_, "least_outstanding"),
                           network=_network_for(scn, prep), config=cfg, seed=scn.seed if seed is None else seed)
    res = sim.run(progress=progress)
    acc = prep.accelerator
    req = requests_table(res)
    from ..scenario import power_and_price

    price, tdp, idle = power_and_price(scn, acc)
    summary = summarize(res, devices_per_replica=1, peak_flops=acc.peak(dep.act_dtype), hbm_bandwidth=acc.hbm_bw,
                        price_per_device_hour=price, tdp_w=tdp, idle_w=idle,
                        slo_ttft_s=scn.slo.ttft_s, slo_tpot_s=scn.slo.tpot_s, requests=req)
    summary["disaggregation"] = {
        "prefill": {"replicas": dis.prefill.replicas, "tp": dis.prefill.tp, "pp": dis.prefill.pp,
                    "kv_blocks_per_replica": pp_.num_blocks},
        "decode": {"replicas": dis.decode.replicas, "tp": dis.decode.tp, "pp": dis.decode.pp,
                   "kv_blocks_per_replica": dp_.num_blocks},
        "kv_link": dis.kv_link if isinstance(dis.kv_link, str) else dis.kv_link.model_dump(),
        "kv_transfer_s": kv_transfer_stats(req["kv_transfer_s"].to_numpy()),
    }
    summary = {"scenario": scn.name, "model": prep.model.name, "accelerator": acc.name,
               "tp": f"{dis.prefill.tp}/{dis.decode.tp}", "pp": f"{dis.prefill.pp}/{dis.decode.pp}",
               "seed": scn.seed if seed is None else seed, **summary}
    return req, steps_table(res), summary
