"""A scenario: model, hardware, deployment, workload and SLOs, loaded from YAML.

::

    name: llama3-8b-h100-azure-conv
    model: llama-3-8b                 # name under workloads/models/ or a path
    hardware: {accelerator: h100-sxm} # or {node: dgx-h100} or {cluster: NAME}
    deployment:
      replicas: 1
      tp: 1
      pp: 1
      batching: {policy: vllm, max_num_seqs: 256, max_num_batched_tokens: 8192}
      kv: {block_size: 16, gpu_memory_utilization: 0.9, activation_reserve: 0.02, preemption: recompute}
      router: {policy: round_robin}
    workload: {trace: traces/azure2023_conv_sample.csv}   # a simllm.workload WorkloadSpec block
    slo: {ttft_s: 2.0, tpot_s: 0.1}
    seed: 0

``activation_reserve`` is a fraction of device memory (a number below 1) or bytes (``2 GiB``),
per device. Price and power come from the accelerator descriptor; ``price_per_device_hour``
and ``idle_power_w`` override them. ``--set deployment.tp=8`` style overrides apply to the raw
YAML before validation (the value is parsed as YAML). Errors name the file and dotted field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from .config import Frozen, load_yaml, quantity, set_dotted, validate
from .cost import make_step_cost
from .cost.cuda_graphs import GraphPadded, capture_sizes
from .cost.host_overhead import HostOverhead
from .cost.moe_ep import make_ep_step_cost
from .cost.moe_ep import replacement_spec
from .cost.spec_step import speculative_cost
from .cost import table_mode
from .cost.calibration import CostModeSpec, calibration_for
from .errors import InputError
from .scenario_checks import check_scenario
from .hardware import load_accelerator, load_cluster, load_node
from .metrics import requests_table, steps_table, summarize
from .model import load_model
from .parallel import tp_errors
from .policies import make_batching, make_router
from .policies.batching import batching as _batching_registry
from .policies.routing import routing as _routing_registry
from .sim import Pool, SimConfig, Simulation, kv_capacity_blocks, link_network, topology_network
from .sim.kv_tiers import TierLevel
from .sim.replacement import PeriodicReplacement
from .speculative import SpeculativeSpec
from .topology import build_topology
from .units import parse_quantity
from .workload.spec import WorkloadSpec, build_workload

DTYPE = Literal["fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4"]


def _check_policy(registry, block: Any, default: str) -> dict:
    return registry.check_block(block, default)


class KVTierSpec(Frozen):
    """One KV-cache tier below HBM (``deployment.kv.tiers``, first = next below HBM; ``simllm.sim.kv_tiers``).

    ``capacity`` is per replica (its devices' shards together); ``bandwidth`` per device into HBM,
    by default from the node descriptor: ``host_dram`` its device<->host link, ``ssd`` its local
    storage read bandwidth shared by its devices, ``remote`` (a distributed store: Mooncake Store,
    3FS) its scale-out NIC."""

    name: Optional[str] = None  # default: the medium
    medium: Literal["host_dram", "ssd", "remote"]
    capacity: quantity("bytes")
    bandwidth: Optional[quantity("bandwidth")] = None
    latency: quantity("time", positive=False) = 0.0


class KVSpec(Frozen):
    block_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    activation_reserve: float = 0.02  # fraction of device memory (< 1) or bytes (>= 1), per device
    preemption: Literal["recompute", "swap"] = "recompute"
    watermark: float = Field(default=0.01, ge=0, lt=1)
    swap_bandwidth: quantity("bandwidth") = 25e9  # per device, device <-> host (swap preemption)
    prefix_caching: bool = False  # share cached prompt prefixes (Mooncake hash_ids / session turns), LRU eviction
    prefix_unit_tokens: int = Field(default=512, gt=0)  # tokens per prefix key of the workload (Mooncake hash_ids: 512;
    # vLLM hashes every KV block, so replays of vLLM runs key prompts per block_size tokens)
    tiers: Optional[list[KVTierSpec]] = None  # KV-cache tiers below HBM for cached prefixes (host DRAM, SSD, store)

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v):
        if v is not None:
            names = [t.name or t.medium for t in v]
            if len(set(names)) != len(names):
                raise ValueError(f"tier names must differ, got {', '.join(names)} (give each a name)")
        return v

    @field_validator("activation_reserve", mode="before")
    @classmethod
    def _reserve(cls, v):
        if isinstance(v, str):
            try:
                return parse_quantity(v, "bytes", allow_zero=True)
            except InputError as e:
                raise ValueError(f"{e.message} (a fraction of device memory or bytes like '2 GiB')") from None
        if isinstance(v, (int, float)) and v < 0:
            raise ValueError("must be >= 0")
        return v

    def reserve_bytes(self, device_memory: float) -> float:
        a = float(self.activation_reserve)
        return a * device_memory if a < 1 else a


class _Parallel(Frozen):
    """What a colocated deployment and a pool have alike: replicas, parallelism, policies, EP options."""

    replicas: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    # expert parallelism (simllm.cost.moe_ep): ep devices per replica, attention DP over ep / tp
    ep: int = Field(default=1, gt=0)
    placement: Optional[dict[str, Any]] = None  # {policy: ilp|greedy_replicated|contiguous, redundant: 32, ...}
    expert_loads: Optional[dict[str, Any]] = None  # {alpha: 1.0, seed: 0} or {csv: PATH}
    moe: Optional[dict[str, Any]] = None  # EP cost options: overlap, samples, sample_layers, layers, grid_max
    # routes each replica's requests to its ep / tp data-parallel attention ranks (simllm.sim.dp_ranks)
    dp_router: Optional[dict[str, Any]] = None
    batching: dict[str, Any] = Field(default_factory=lambda: {"policy": "vllm"})

    @field_validator("dp_router", mode="before")
    @classmethod
    def _dp_router(cls, v):
        return None if v is None else _check_policy(_routing_registry, v, "least_outstanding")

    @field_validator("batching", mode="before")
    @classmethod
    def _batching(cls, v):
        return _check_policy(_batching_registry, v, "vllm")

    @model_validator(mode="after")
    def _ep(self):
        if self.ep > 1 and (self.pp != 1 or self.ep % self.tp):
            raise ValueError(f"ep {self.ep} needs pp = 1 and ep a multiple of tp ({self.tp})")
        if self.ep == 1 and (self.placement or self.expert_loads or self.moe):
            raise ValueError("placement, expert_loads and moe apply to expert parallelism (ep > 1)")
        if self.dp_router is not None and self.ep <= self.tp:
            raise ValueError(f"dp_router routes to data-parallel attention ranks: it needs ep > tp "
                             f"(ep {self.ep}, tp {self.tp})")
        return self

    @property
    def devices_per_replica(self) -> int:
        return self.ep if self.ep > 1 else self.tp * self.pp


class PoolSpec(_Parallel):
    """One pool of a deployment (``deployment.pools`` or ``deployment.disaggregation.prefill/decode``);
    ``kv`` overrides fields of ``deployment.kv`` for this pool."""

    name: Optional[str] = None
    role: Optional[Literal["both", "prefill", "decode"]] = None
    router: Optional[dict[str, Any]] = None  # arrivals' pool: routes arrivals; decode: picks the decode replica
    kv: Optional[KVSpec] = None

    @field_validator("router", mode="before")
    @classmethod
    def _router(cls, v):
        return None if v is None else _check_policy(_routing_registry, v, "round_robin")


class KVLinkSpec(Frozen):
    bandwidth: quantity("bandwidth")  # per direction, per prefill replica (out) and decode replica (in)
    latency: quantity("time", positive=False) = 0.0


def _kv_link(v):
    if isinstance(v, str) and v != "auto":
        raise ValueError(f"expected 'auto' (the cluster's links) or {{bandwidth: 50 GB/s, latency: 10 us}}, "
                         f"got {v!r}")
    return v


class DisaggSpec(Frozen):
    """The short form of two pools: ``{prefill: POOL, decode: POOL, kv_link: auto}``."""

    prefill: PoolSpec
    decode: PoolSpec
    kv_link: Union[Literal["auto"], KVLinkSpec] = "auto"

    _check_link = field_validator("kv_link", mode="before")(classmethod(lambda cls, v: _kv_link(v)))

    @model_validator(mode="after")
    def _roles(self):
        for side in ("prefill", "decode"):
            role = getattr(self, side).role
            if role is not None and role != side:
                raise ValueError(f"{side}.role: the {side} pool has role {side}, got {role!r} (or leave role out)")
        return self


_POOL_LEVEL = ("replicas", "tp", "pp", "ep", "placement", "expert_loads", "moe", "dp_router", "batching", "router")


class DeploymentSpec(_Parallel):
    weight_dtype: DTYPE = "bf16"
    kv_dtype: DTYPE = "bf16"
    act_dtype: DTYPE = "bf16"
    framework: Literal["vllm", "trtllm", "sglang"] = "vllm"  # whose kernel calibration prices GEMMs/attention
    max_model_len: Optional[int] = Field(default=None, gt=0)
    kv: KVSpec = KVSpec()
    router: dict[str, Any] = Field(default_factory=lambda: {"policy": "round_robin"})
    # pools: a list of PoolSpec (one of role both, or one prefill + decode pools); disaggregation: two pools
    pools: Optional[list[PoolSpec]] = None
    disaggregation: Optional[DisaggSpec] = None
    kv_link: Union[Literal["auto"], KVLinkSpec] = "auto"  # links that carry KV between pools (pools form)
    speculative: Optional[SpeculativeSpec] = None  # speculative decoding (simllm.speculative): MTP or a draft model
    # KV moves layer by layer from the prefill to the decode pool (all layers but the last while the last prefill
    # step runs; simllm.sim.simulation.start_transfer); needs prefill and decode pools
    kv_layer_wise: bool = False
    # CUDA graphs (simllm.cost.cuda_graphs): steps priced at the captured size they replay; auto: vLLM V1's
    # default sizes for the batching's max_num_seqs, or a list of sizes; none: every step at its own size
    cuda_graphs: Union[Literal["none", "auto"], list[int]] = "none"
    # the server front end's time per request outside the engine's steps (HTTP, tokenization, streaming), s:
    # added to every request's TTFT and E2E (simllm validate fits one: simllm.validate.replay.API_OVERHEAD_S)
    api_overhead_s: float = Field(default=0.0, ge=0)
    # vLLM V1's async scheduling (simllm.sim.records.SimConfig.async_scheduling): the scheduler plans iteration k+1
    # while k runs, so every token reaches the client one engine iteration later (the one that emitted the request's
    # first token), in TTFT and E2E. None: on for batching policy vllm (assumption: vLLM V1's online server runs it
    # by default since late 2025, v0.11-0.15, per vLLM's change history; the v0.15.1 servers of ../shared/data/e2e
    # match with it), off for every other policy (vllm-v0: V0 schedules synchronously); one colocated pool only,
    # without data-parallel attention ranks (true elsewhere is an error)
    async_scheduling: Optional[bool] = None
    # host time per engine step not hidden by the GPU's (simllm.cost.host_overhead): per step and per sequence, s
    host_step_s: float = Field(default=0.0, ge=0)
    host_per_seq_s: float = Field(default=0.0, ge=0)

    @field_validator("router", mode="before")
    @classmethod
    def _router(cls, v):
        return _check_policy(_routing_registry, v, "round_robin")

    _check_link = field_validator("kv_link", mode="before")(classmethod(lambda cls, v: _kv_link(v)))

    @model_validator(mode="after")
    def _pools(self):
        if self.pools is not None and self.disaggregation is not None:
            raise ValueError("give deployment.pools or deployment.disaggregation, not both")
        if self.pools is not None:
            if not self.pools:
                raise ValueError("pools: give at least one pool")
            for i, p in enumerate(self.pools):
                if p.role is None:
                    raise ValueError(f"pools.{i}: give the pool's role (both, prefill or decode)")
            roles = [p.role for p in self.pools]
            entry = [r for r in roles if r != "decode"]
            if len(entry) != 1 or (entry[0] == "prefill") != ("decode" in roles):
                raise ValueError(f"pools: expected one pool of role both, or one prefill pool and decode pools; "
                                 f"got roles {', '.join(roles)}")
            names = [p.name or f"{p.role}{i}" for i, p in enumerate(self.pools)]
            if len(set(names)) != len(names):
                raise ValueError(f"pools: names must differ, got {', '.join(names)}")
        return self

    def pool_specs(self) -> list[tuple[str, str, PoolSpec]]:
        """(name, where in the YAML, spec with its role) of every pool; colocated: one pool of role both."""
        if self.pools is not None:
            return [(p.name or f"{p.role}{i}", f"deployment.pools.{i}", p) for i, p in enumerate(self.pools)]
        if self.disaggregation is not None:
            d = self.disaggregation
            return [("prefill", "deployment.disaggregation.prefill",
                     d.prefill.model_copy(update={"role": "prefill", "router": d.prefill.router})),
                    ("decode", "deployment.disaggregation.decode",
                     d.decode.model_copy(update={"role": "decode",
                                                 "router": d.decode.router or {"policy": "least_outstanding"}}))]
        return [("colocated", "deployment", self)]

    @property
    def link(self):
        return self.disaggregation.kv_link if self.disaggregation is not None else self.kv_link

    @property
    def where(self) -> str:
        return "deployment.disaggregation" if self.disaggregation is not None else "deployment.pools"


class HardwareSpec(Frozen):
    accelerator: Optional[str] = None
    node: Optional[str] = None
    cluster: Optional[str] = None

    @model_validator(mode="after")
    def _one(self):
        if not (self.accelerator or self.node or self.cluster):
            raise ValueError("give an accelerator, a node or a cluster")
        if self.node and self.cluster:
            raise ValueError("give a node or a cluster, not both")
        return self


class SLOSpec(Frozen):
    ttft_s: Optional[float] = Field(default=None, gt=0)
    tpot_s: Optional[float] = Field(default=None, gt=0)


class SimSpec(Frozen):
    jump: bool = True  # price decode segments in one vectorised call (False: one event per iteration)
    record_breakdown: bool = True  # compute/memory/comm per step row (one extra cost call per row)


class Scenario(Frozen):
    name: str = ""
    description: str = ""
    model: str
    hardware: HardwareSpec
    deployment: DeploymentSpec = DeploymentSpec()
    workload: WorkloadSpec
    slo: SLOSpec = SLOSpec()
    sim: SimSpec = SimSpec()
    cost: Optional[CostModeSpec] = None  # {mode: table, tables: PATH}: measured-table mode (simllm.cost.table_mode)
    price_per_device_hour: Optional[float] = Field(default=None, ge=0)  # USD; default: the accelerator's
    idle_power_w: Optional[float] = Field(default=None, ge=0)  # default: the accelerator's
    seed: int = Field(default=0, ge=0)  # numpy seeds are non-negative


# --------------------------------------------------------------------------- loading


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], *, file: str | Path | None = None) -> dict:
    """``["deployment.tp=4", "slo.ttft_s=1.5"]`` -> a copy of ``data`` with those values (parsed as YAML)."""
    data = copy.deepcopy(data)
    for ov in overrides or ():
        if "=" not in ov:
            raise InputError(f"--set expects FIELD.PATH=VALUE, got {ov!r}", file=file)
        path, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        try:
            set_dotted(data, path.strip(), value, file=file)
        except InputError as e:
            raise InputError(f"--set: {e.message}", file=file, field=e.field) from None
    return data


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Scenario, Path]:
    """Read, override and validate a scenario; returns it with its file path."""
    p = Path(path)
    data = apply_overrides(load_yaml(p), overrides, file=p)
    return validate(Scenario, data, file=p), p


def scenario_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = (), *, file: str | Path | None = None
                       ) -> Scenario:
    return validate(Scenario, apply_overrides(data, overrides, file=file), file=file)


# --------------------------------------------------------------------------- running


@dataclass
class PoolPrep:
    """One pool of a prepared scenario: its spec, cost model, KV blocks per replica, KV options."""

    name: str
    role: str
    spec: Any  # PoolSpec, or the DeploymentSpec of a colocated scenario
    where: str  # its place in the YAML
    cost: Any
    num_blocks: int
    kv: KVSpec
    changes: Any = None  # periodic re-placement (EP pools with replan_every_s / drift)
    tiers: tuple = ()  # simllm.sim.kv_tiers.TierLevel below HBM


@dataclass
class Prepared:
    scenario: Scenario
    model: Any
    accelerator: Any
    node: Any
    cost: Any  # the first pool's (colocated: the deployment's)
    num_blocks: int
    workload: Any
    pools: list = None  # PoolPrep of every pool
    cluster: Any = None


def _located(fn, file, field):
    try:
        return fn()
    except InputError as e:
        inner = e.field if e.file or not field else (f"{field}.{e.field}" if e.field else field)
        raise InputError(e.message, file=e.file or file, field=inner or None) from None


def _pool_kv(dep: DeploymentSpec, spec, where: str, file) -> KVSpec:
    own = getattr(spec, "kv", None) if spec is not dep else None
    if own is None:
        return dep.kv
    return validate(KVSpec, {**dep.kv.model_dump(), **own.model_dump(exclude_unset=True)}, file=file,
                    prefix=f"{where}.kv")


def pool_cost(model, acc, dep: DeploymentSpec, spec, *, node, cluster, base_dir, cost_mode=None):
    """The step cost model of one replica of a pool (or of a colocated deployment): expert-parallel
    with a placement when ``spec.ep > 1``, else tensor/pipeline-parallel (``cost_mode``: a resolved
    table-mode spec, :func:`simllm.cost.calibration.cost_spec`)."""
    if cost_mode and spec.ep > 1:
        raise InputError("table mode prices the tensor/pipeline-parallel step only, not the expert-parallel one",
                         file=cost_mode.get("file"), field="cost.mode")
    if spec.ep > 1 and dep.framework != "vllm":
        raise InputError("the expert-parallel step cost prices kernels with the vllm calibration only",
                         field="framework")
    redundant = (spec.placement or {}).get("redundant", 0)
    if spec.ep > 1 and model.moe is not None and isinstance(redundant, int) and \
            redundant > model.moe.num_experts * (spec.ep - 1):
        raise InputError(f"{redundant} redundant slots exceed {model.moe.num_experts} experts x ({spec.ep} - 1) "
                         f"devices: no device holds an expert twice", field="placement.redundant")
    if spec.ep > 1:
        return make_ep_step_cost(model, acc, ep=spec.ep, tp=spec.tp, node=node, cluster=cluster,
                                 placement=spec.placement, expert_loads=spec.expert_loads, moe=spec.moe,
                                 weight_dtype=dep.weight_dtype, kv_dtype=dep.kv_dtype, act_dtype=dep.act_dtype,
                                 base_dir=base_dir)
    tab = {"calibration": table_mode.with_table_mode(calibration_for(acc), cost_mode)} if cost_mode else {}
    return make_step_cost(model, acc, tp=spec.tp, pp=spec.pp, node=node, weight_dtype=dep.weight_dtype,
                          kv_dtype=dep.kv_dtype, act_dtype=dep.act_dtype, framework=dep.framework, **tab)


def prepare(scn: Scenario, *, file: str | Path | None = None, cost: Any = None, seed: Optional[int] = None
            ) -> Prepared:
    """Resolve descriptors, build each pool's cost model, size its KV cache, build the workload.

    ``cost`` replaces the cost model of a colocated deployment (tests, benchmarks)."""
    check_scenario(scn, file)
    hw = scn.hardware
    dep = scn.deployment
    node = None
    cl = None
    n_devices = None
    if hw.cluster:
        cl = _located(lambda: load_cluster(hw.cluster), file, "hardware.cluster")
        node, acc, n_devices = cl.node, cl.accelerator, cl.num_devices
    elif hw.node:
        node = _located(lambda: load_node(hw.node), file, "hardware.node")
        acc = node.accelerator
    else:
        acc = _located(lambda: load_accelerator(hw.accelerator), file, "hardware.accelerator")
    if hw.accelerator and node is not None and acc.name != hw.accelerator and hw.accelerator not in acc.aliases:
        raise InputError(f"accelerator {hw.accelerator!r} differs from the {node.name} node's {acc.name}",
                         file=file, field="hardware.accelerator")
    specs = dep.pool_specs()
    multi = len(specs) > 1 or dep.pools is not None
    if multi:
        clash = sorted(f for f in _POOL_LEVEL if f in dep.model_fields_set)
        if clash:
            raise InputError(f"with pools give {', '.join(clash)} per pool (under {dep.where}), not at the "
                             f"deployment level", file=file, field=f"deployment.{clash[0]}")
    total = sum(sp.replicas * sp.devices_per_replica for _n, _w, sp in specs)
    for _name, where, sp in specs:
        d = sp.devices_per_replica
        if node is not None and n_devices is None and d > node.devices:
            raise InputError(f"a replica needs tp x pp = {d} devices, the {node.name} node has {node.devices}"
                             + ("; use a cluster" if not multi else ""), file=file, field=f"{where}.tp")
    if n_devices is not None and total > n_devices:
        if multi:
            raise InputError(f"the pools need {total} devices, the cluster has {n_devices}", file=file,
                             field=dep.where)
        raise InputError(f"{dep.replicas} replicas x {dep.devices_per_replica} devices exceed the cluster's "
                         f"{n_devices}", file=file, field="deployment.replicas")
    if multi and node is not None and n_devices is None and dep.link == "auto" and total > node.devices:
        raise InputError(f"the pools need {total} devices, the {node.name} node has {node.devices}; use a "
                         f"cluster (hardware.cluster) or an explicit kv_link", file=file, field=dep.where)
    model = _located(lambda: load_model(scn.model), file, "model")
    for _name, where, sp in specs:
        for err in tp_errors(model, sp.tp):
            raise InputError(err, file=file, field=f"{where}.tp")
    base_dir = Path(file).resolve().parent if file else None
    cost_mode = table_mode.cost_spec(scn.cost, base_dir, file=file)
    pools = []
    for name, where, sp in specs:
        role = getattr(sp, "role", None) or "both"
        kvs = _pool_kv(dep, sp, where, file)
        check_dp_ranks_options(scn, sp, role, where, kvs, file)
        c = cost if (cost is not None and not multi) else _located(
            lambda: pool_cost(model, acc, dep, sp, node=node, cluster=cl, base_dir=base_dir, cost_mode=cost_mode),
            file, where)
        if dep.cuda_graphs != "none" and cost is None:
            sizes = _located(lambda: capture_sizes(dep.cuda_graphs, make_batching(sp.batching).max_num_seqs),
                             file, None)
            c = GraphPadded(c, sizes)
        if (dep.host_step_s or dep.host_per_seq_s) and cost is None:
            c = HostOverhead(c, dep.host_step_s, dep.host_per_seq_s)
        mem = acc.hbm_bytes
        changes = None
        if sp.ep > 1 and hasattr(c, "policy_spec"):
            rs = _located(lambda: replacement_spec(sp.placement, sp.expert_loads), file, where)
            if rs is not None:
                changes = PeriodicReplacement(c, policy=c.policy_spec, **rs)
        if dep.speculative is not None:
            c = _speculative_pool(c, model, acc, dep, sp, role, where, changes, node=node, file=file)
        nb = _located(lambda: kv_capacity_blocks(
            device_memory_bytes=mem, n_devices=sp.devices_per_replica,
            gpu_memory_utilization=kvs.gpu_memory_utilization,
            weight_bytes_per_device=float(c.weight_bytes_per_device),
            activation_reserve_bytes=kvs.reserve_bytes(mem),
            kv_bytes_per_token_per_device=float(c.kv_bytes_per_token_per_device), block_size=kvs.block_size,
            where=f"{where}.kv"), file, None)
        tiers = kv_tier_levels(kvs, node, sp.devices_per_replica, f"{where}.kv", file)
        pools.append(PoolPrep(name, role, sp, where, c, nb, kvs, changes, tiers))
    s = scn.seed if seed is None else seed
    wl = _located(lambda: build_workload(scn.workload, seed=s, base_dir=base_dir), file, "workload")
    prep = Prepared(scn, model, acc, node, pools[0].cost, pools[0].num_blocks, wl, pools, cl)
    async_scheduling(prep.scenario, prep, file)  # refused where it cannot be honoured, with the file
    return prep


def check_dp_ranks_options(scn: Scenario, sp, role: str, where: str, kvs: KVSpec, file=None) -> None:
    """A pool whose attention runs on data-parallel ranks (ep > 1 with tp below the replica's devices:
    :mod:`simllm.sim.dp_ranks`) prices its steps per rank; the options that wrap the step cost in a way that prices
    no ranks (a draft model's speculation, CUDA graphs, host overheads) or that the ranks do not simulate yet are
    refused here, with their field. Speculation with the model's own MTP module runs on the ranks."""
    if not (sp.ep > 1 and sp.tp < sp.devices_per_replica):
        return
    dep = scn.deployment
    why = f"is not simulated with data-parallel attention ranks yet ({where}: ep {sp.ep} over tp {sp.tp})"
    refused = [("deployment.speculative.method", dep.speculative is not None and dep.speculative.method != "mtp"),
               ("deployment.cuda_graphs", dep.cuda_graphs != "none"),
               ("deployment.host_step_s", bool(dep.host_step_s or dep.host_per_seq_s)),
               ("workload.request_timeout_s", scn.workload.request_timeout_s is not None),
               ("deployment.kv_layer_wise", bool(dep.kv_layer_wise) and role == "prefill")]
    for field, on in refused:
        if on:
            raise InputError(why, file=file, field=field)


def kv_tier_levels(kvs: KVSpec, node, devices: int, where: str, file=None) -> tuple:
    """The KV-cache tiers of a pool's replicas (``simllm.sim.kv_tiers.TierLevel``), checked against the
    node's host memory and storage: a replica's tiers may use its devices' share of its nodes' host."""
    if not kvs.tiers:
        return ()
    if not kvs.prefix_caching:
        raise InputError("KV-cache tiers hold cached prompt prefixes: set prefix_caching: true", file=file,
                         field=f"{where}.tiers")
    host = node.host if node is not None else None
    share = devices / node.devices if node is not None else 1.0
    used = {"host_dram": 0.0, "ssd": 0.0}
    out = []
    for i, t in enumerate(kvs.tiers):
        at = f"{where}.tiers.{i}"
        name = t.name or t.medium
        if t.medium in used:
            limit = None if host is None else (host.memory if t.medium == "host_dram" else host.storage)
            what = "host memory" if t.medium == "host_dram" else "local storage"
            if limit is None:
                raise InputError(f"a {t.medium} tier needs the node's {what} (the node descriptor's host block"
                                 f"{'' if node is None else ' of ' + node.name}); use hardware.node or "
                                 f"hardware.cluster with a node that describes it", file=file, field=f"{at}.medium")
            used[t.medium] += t.capacity
            allowed = limit.value * share
            if used[t.medium] > allowed * (1 + 1e-9):
                raise InputError(f"{t.capacity / 1e9:.4g} GB of {t.medium} per replica exceeds the host: a replica of "
                                 f"{devices} of the {node.name}'s {node.devices} devices has {allowed / 1e9:.4g} GB "
                                 f"of its {limit.text} {what}", file=file, field=f"{at}.capacity")
        bw = t.bandwidth
        if bw is None:
            if t.medium == "host_dram":
                link = node.host_link
                bw = link.bw * (float(link.efficiency.value) if link.efficiency is not None else 1.0)
            elif t.medium == "ssd" and host is not None and host.storage_bandwidth is not None:
                bw = host.storage_bandwidth.value / node.devices
            elif t.medium == "remote" and node is not None and node.scale_out_bw > 0:
                bw = node.scale_out_bw
            else:
                raise InputError(f"no {t.medium} bandwidth in the node descriptor: give bandwidth (per device)",
                                 file=file, field=f"{at}.bandwidth")
        out.append(TierLevel(name, t.capacity, bw, t.latency))
    return tuple(out)


def _speculative_pool(c, model, acc, dep: DeploymentSpec, sp, role: str, where: str, changes, *, node, file):
    """A pool's cost model with speculative decoding (``simllm.cost.spec_step``), after the checks that
    its batching and options can honour it."""
    spec = dep.speculative
    if role != "prefill":
        pol = make_batching(sp.batching)
        if getattr(pol, "general", False):
            raise InputError(f"speculative decoding needs decode-only iterations (batching policy vllm-v0); "
                             f"{sp.batching.get('policy')} mixes decode tokens into prefill steps, where "
                             f"verification is not modelled", file=file, field=f"{where}.batching.policy")
    if changes is not None:
        raise InputError("speculative decoding with periodic expert re-placement (replan_every_s) is not "
                         "modelled", file=file, field="deployment.speculative")
    if spec.method == "mtp" and not getattr(model, "mtp_layers", 0):
        raise InputError(f"{model.name} has no multi-token-prediction module (mtp_layers: 0 in its descriptor); "
                         f"use method: draft with a draft model", file=file, field="deployment.speculative.method")
    draft = None
    if spec.method == "draft":
        dm = _located(lambda: load_model(spec.draft), file, "deployment.speculative.draft")
        dtp = spec.draft_tp or sp.tp
        for err in tp_errors(dm, dtp):
            raise InputError(err, file=file, field="deployment.speculative.draft_tp")
        draft = _located(lambda: make_step_cost(dm, acc, tp=dtp, node=node, weight_dtype=dep.weight_dtype,
                                                kv_dtype=dep.kv_dtype, act_dtype=dep.act_dtype,
                                                framework=dep.framework), file, "deployment.speculative")
    return speculative_cost(c, spec, draft=draft, num_layers=model.num_layers)


def power_and_price(scn: Scenario, acc) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """Price per device-hour, TDP and idle power (W): the scenario's overrides, else the descriptor's, else None."""
    price = scn.price_per_device_hour
    if price is None and acc.price_per_hour is not None:
        price = acc.price_per_hour.value
    idle = scn.idle_power_w
    if idle is None and acc.idle_power is not None:
        idle = acc.idle_power.value
    return price, (acc.tdp.value if acc.tdp is not None else None), idle


def async_scheduling(scn: Scenario, prep: Prepared, file=None) -> bool:
    """Whether the engine runs async scheduling (``deployment.async_scheduling``, its default resolved): only one
    colocated pool without data-parallel attention ranks can honour it."""
    v = scn.deployment.async_scheduling
    pools = prep.pools
    sp = pools[0].spec
    dp = sp.ep > 1 and sp.tp < sp.devices_per_replica
    honoured = len(pools) == 1 and pools[0].role == "both" and scn.deployment.pools is None and not dp
    if v is None:
        return honoured and sp.batching.get("policy") == "vllm"
    if v and not honoured:
        raise InputError("async scheduling is simulated for one colocated pool without data-parallel attention "
                         "ranks only", file=file, field="deployment.async_scheduling")
    return bool(v)


def _sim_config(scn: Scenario, kvs: KVSpec, max_len, tiers: tuple = (), asy: bool = False) -> SimConfig:
    return SimConfig(jump=scn.sim.jump, preemption=kvs.preemption, block_size=kvs.block_size,
                     watermark=kvs.watermark, max_model_len=max_len, swap_bandwidth=kvs.swap_bandwidth,
                     record_breakdown=scn.sim.record_breakdown, prefix_caching=kvs.prefix_caching,
                     prefix_unit_tokens=kvs.prefix_unit_tokens, speculative=scn.deployment.speculative,
                     kv_tiers=tiers, request_timeout_s=scn.workload.request_timeout_s,
                     kv_layer_wise=scn.deployment.kv_layer_wise,
                     api_overhead_s=scn.deployment.api_overhead_s, async_scheduling=asy)


def _network(scn: Scenario, prep: Prepared, file=None):
    link = scn.deployment.link
    if isinstance(link, KVLinkSpec):
        return link_network(link.bandwidth, link.latency)
    hw = scn.hardware
    where = f"{scn.deployment.where}.kv_link" if scn.deployment.disaggregation is not None else "deployment.kv_link"
    if not (hw.cluster or prep.node is not None):
        raise InputError("kv_link: auto needs hardware.node or hardware.cluster (their links carry the KV cache); "
                         "or give kv_link: {bandwidth: ...}", file=file, field=where)
    src = hw.cluster if hw.cluster else prep.node
    return topology_network(_located(lambda: build_topology(src), file, "hardware"))


def kv_transfer_stats(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": None, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(x, [50, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p99": float(p99), "max": float(x.max())}


def simulate(prep: Prepared, *, seed: Optional[int] = None, progress: Optional[Callable[[float, int], None]] = None):
    """Run the simulation of a prepared scenario: (requests DataFrame, steps DataFrame, summary dict)."""
    res, summary = simulate_result(prep, seed=seed, progress=progress)
    return requests_table(res), steps_table(res), summary


def simulate_result(prep: Prepared, *, seed: Optional[int] = None,
                    progress: Optional[Callable[[float, int], None]] = None,
                    steps_sink: Optional[Callable[[dict, list], None]] = None):
    """Run the simulation of a prepared scenario: (``SimResult``, summary dict). ``steps_sink`` receives the
    step rows in chunks as the run goes (``simllm.sim.records.StepLog``; the result then keeps none)."""
    scn = prep.scenario
    dep = scn.deployment
    max_len = dep.max_model_len
    if max_len is None:
        max_len = getattr(prep.model, "max_position_embeddings", None)
    asy = async_scheduling(scn, prep)
    cfg = _sim_config(scn, dep.kv, max_len, asy=asy)
    multi = len(prep.pools) > 1 or dep.pools is not None
    if scn.workload.request_timeout_s is not None and any(pp.role != "both" for pp in prep.pools):
        raise InputError("client timeouts (server aborts) are simulated for colocated pools only",
                         field="workload.request_timeout_s")
    pools = []
    for pp in prep.pools:
        sp = pp.spec
        b = sp.batching
        router = sp.router if pp.role != "decode" else (sp.router or {"policy": "least_outstanding"})
        pools.append(Pool(pp.name, pp.role, sp.replicas, pp.cost, pp.num_blocks, lambda b=b: make_batching(b),
                          make_router(router or {"policy": "round_robin"}), devices=sp.devices_per_replica,
                          config=_sim_config(scn, pp.kv, max_len, pp.tiers, asy), changes=pp.changes,
                          attn_group=sp.tp if sp.ep > 1 else None,
                          dp_router=make_router(sp.dp_router) if sp.dp_router is not None else None))
    s = scn.seed if seed is None else seed
    network = _network(scn, prep) if multi and len(pools) > 1 else None
    sim = Simulation(prep.workload, pools=pools, network=network, config=cfg, seed=s, steps_sink=steps_sink)
    res = sim.run(progress=progress)
    acc = prep.accelerator
    price, tdp, idle = power_and_price(scn, acc)
    summary = summarize(res, devices_per_replica=prep.pools[0].spec.devices_per_replica,
                        peak_flops=acc.peak(dep.act_dtype), hbm_bandwidth=acc.hbm_bw, price_per_device_hour=price,
                        tdp_w=tdp, idle_w=idle, slo_ttft_s=scn.slo.ttft_s, slo_tpot_s=scn.slo.tpot_s)
    if res.speculative is not None:
        summary["speculative"] = res.speculative
    if res.kv_tiers is not None:
        summary["kv_tiers"] = res.kv_tiers
    tab = table_mode.run_report([pp.cost for pp in prep.pools])
    if tab:
        summary["cost_table"] = tab
    if not multi:
        summary = {"scenario": scn.name, "model": prep.model.name, "accelerator": acc.name, "tp": dep.tp,
                   "pp": dep.pp, "seed": s, **summary}
        if prep.pools[0].changes is not None:
            summary["replacement"] = prep.pools[0].changes.summary()
        return res, summary
    per_pool = {}
    for pp in prep.pools:
        sp = pp.spec
        d = {"role": pp.role, "replicas": sp.replicas, "tp": sp.tp, "pp": sp.pp, "ep": sp.ep,
             "devices": sp.replicas * sp.devices_per_replica, "kv_blocks_per_replica": pp.num_blocks,
             "prefix_caching": pp.kv.prefix_caching}
        if pp.changes is not None:
            d["replacement"] = pp.changes.summary()
        per_pool[pp.name] = d
    link = dep.link
    extra = {"kv_link": link if isinstance(link, str) else link.model_dump(),
             "kv_transfer_s": kv_transfer_stats(res.request_columns["kv_transfer_s"])} if len(pools) > 1 else {}
    summary["pools"] = {**per_pool, **extra}
    if dep.disaggregation is not None:
        summary["disaggregation"] = summary["pools"]
    head = {"scenario": scn.name, "model": prep.model.name, "accelerator": acc.name,
            "tp": "/".join(str(pp.spec.tp) for pp in prep.pools), "pp": "/".join(str(pp.spec.pp) for pp in prep.pools),
            "seed": s}
    return res, {**head, **summary}
