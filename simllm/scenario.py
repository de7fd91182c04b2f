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
from typing import Any, Callable, Literal, Optional

import yaml
from pydantic import Field, field_validator, model_validator

from .config import Frozen, load_yaml, quantity, set_dotted, validate
from .errors import InputError
from .scenario_checks import check_scenario
from .policies.batching import batching as _batching_registry
from .policies.routing import routing as _routing_registry
from .sim.disagg import DisaggSpec
from .units import parse_quantity
from .workload.spec import WorkloadSpec

DTYPE = Literal["fp32", "bf16", "fp16", "fp8", "int8", "fp4", "int4"]


def _check_policy(registry, block: Any, default: str) -> dict:
    return registry.check_block(block, default)


class KVSpec(Frozen):
    block_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    activation_reserve: float = 0.02  # fraction of device memory (< 1) or bytes (>= 1), per device
    preemption: Literal["recompute", "swap"] = "recompute"
    watermark: float = Field(default=0.01, ge=0, lt=1)
    swap_bandwidth: quantity("bandwidth") = 25e9  # per device, device <-> host (swap preemption)
    prefix_caching: bool = False  # share cached prompt prefixes (Mooncake hash_ids / session turns), LRU eviction

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


class DeploymentSpec(Frozen):
    replicas: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    weight_dtype: DTYPE = "bf16"
    kv_dtype: DTYPE = "bf16"
    act_dtype: DTYPE = "bf16"
    framework: Literal["vllm", "trtllm", "sglang"] = "vllm"  # whose kernel calibration prices GEMMs/attention
    max_model_len: Optional[int] = Field(default=None, gt=0)
    batching: dict[str, Any] = Field(default_factory=lambda: {"policy": "vllm"})
    kv: KVSpec = KVSpec()
    router: dict[str, Any] = Field(default_factory=lambda: {"policy": "round_robin"})
    disaggregation: Optional[DisaggSpec] = None  # separate prefill and decode pools (simllm.sim.disagg)
    # expert parallelism (simllm.cost.moe_ep): ep devices per replica, attention DP over ep / tp
    ep: int = Field(default=1, gt=0)
    placement: Optional[dict[str, Any]] = None  # {policy: ilp|greedy_replicated|contiguous, redundant: 32, ...}
    expert_loads: Optional[dict[str, Any]] = None  # {alpha: 1.0, seed: 0} or {csv: PATH}
    moe: Optional[dict[str, Any]] = None  # EP cost options: overlap, samples, sample_layers, layers, grid_max

    @field_validator("batching", mode="before")
    @classmethod
    def _batching(cls, v):
        return _check_policy(_batching_registry, v, "vllm")

    @field_validator("router", mode="before")
    @classmethod
    def _router(cls, v):
        return _check_policy(_routing_registry, v, "round_robin")

    @model_validator(mode="after")
    def _ep(self):
        if self.ep > 1 and (self.pp != 1 or self.ep % self.tp):
            raise ValueError(f"ep {self.ep} needs pp = 1 and ep a multiple of tp ({self.tp})")
        if self.ep == 1 and (self.placement or self.expert_loads or self.moe):
            raise ValueError("placement, expert_loads and moe apply to expert parallelism (ep > 1)")
        return self

    @property
    def devices_per_replica(self) -> int:
        return self.ep if self.ep > 1 else self.tp * self.pp


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
    price_per_device_hour: Optional[float] = Field(default=None, ge=0)  # USD; default: the accelerator's
    idle_power_w: Optional[float] = Field(default=None, ge=0)  # default: the accelerator's
    seed: int = 0


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
class Prepared:
    scenario: Scenario
    model: Any
    accelerator: Any
    node: Any
    cost: Any
    num_blocks: int
    workload: Any
    pools: Any = None  # disaggregation: {"prefill": PoolPrep, "decode": PoolPrep}


def _located(fn, file, field):
    try:
        return fn()
    except InputError as e:
        raise InputError(e.message, file=e.file or file, field=e.field if e.file else
                         (f"{field}.{e.field}" if e.field else field)) from None


def prepare(scn: Scenario, *, file: str | Path | None = None, cost: Any = None, seed: Optional[int] = None
            ) -> Prepared:
    """Resolve descriptors, build the cost model, size the KV cache, build the workload."""
    from .hardware import load_accelerator, load_cluster, load_node
    from .model import load_model
    from .sim.kv import kv_capacity_blocks
    from .workload.spec import build_workload

    check_scenario(scn, file)
    hw = scn.hardware
    dep = scn.deployment
    node = None
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
    if node is not None and n_devices is None and dep.devices_per_replica > node.devices:
        raise InputError(f"a replica needs tp x pp = {dep.devices_per_replica} devices, the {node.name} node has "
                         f"{node.devices}; use a cluster", file=file, field="deployment.tp")
    if n_devices is not None and dep.replicas * dep.devices_per_replica > n_devices:
        raise InputError(f"{dep.replicas} replicas x {dep.devices_per_replica} devices exceed the cluster's "
                         f"{n_devices}", file=file, field="deployment.replicas")
    model = _located(lambda: load_model(scn.model), file, "model")
    from .parallel import tp_errors

    for err in tp_errors(model, dep.tp):
        raise InputError(err, file=file, field="deployment.tp")
    if dep.disaggregation is not None:
        from .sim.disagg import prepare_disaggregated

        return prepare_disaggregated(scn, model, acc, node, n_devices, file=file, seed=seed)
    if cost is None and dep.ep > 1 and dep.framework != "vllm":
        raise InputError("the expert-parallel step cost prices kernels with the vllm calibration only",
                         file=file, field="deployment.framework")
    if cost is None and dep.ep > 1:
        from .cost.moe_ep import make_ep_step_cost

        base_dir = Path(file).resolve().parent if file else None
        cost = _located(lambda: make_ep_step_cost(
            model, acc, ep=dep.ep, tp=dep.tp, node=node, cluster=cl if hw.cluster else None, placement=dep.placement,
            expert_loads=dep.expert_loads, moe=dep.moe, weight_dtype=dep.weight_dtype, kv_dtype=dep.kv_dtype,
            act_dtype=dep.act_dtype, base_dir=base_dir), file, "deployment")
    if cost is None:
        try:
            from .cost import make_step_cost
        except ImportError:
            raise InputError("the cost model (simllm.cost.make_step_cost) is not available in this build") from None
        cost = _located(lambda: make_step_cost(model, acc, tp=dep.tp, pp=dep.pp, node=node,
                                               weight_dtype=dep.weight_dtype, kv_dtype=dep.kv_dtype,
                                               act_dtype=dep.act_dtype, framework=dep.framework), file, "deployment")
    kvs = dep.kv
    mem = acc.hbm_bytes
    num_blocks = _located(lambda: kv_capacity_blocks(
        device_memory_bytes=mem, n_devices=dep.devices_per_replica, gpu_memory_utilization=kvs.gpu_memory_utilization,
        weight_bytes_per_device=float(cost.weight_bytes_per_device),
        activation_reserve_bytes=kvs.reserve_bytes(mem),
        kv_bytes_per_token_per_device=float(cost.kv_bytes_per_token_per_device), block_size=kvs.block_size,
        where="deployment.kv"), file, None)
    base = Path(file).resolve().parent if file else None
    s = scn.seed if seed is None else seed
    wl = _located(lambda: build_workload(scn.workload, seed=s, base_dir=base), file, "workload")
    return Prepared(scn, model, acc, node, cost, num_blocks, wl)


def power_and_price(scn: Scenario, acc) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """Price per device-hour, TDP and idle power (W): the scenario's overrides, else the descriptor's, else None."""
    price = scn.price_per_device_hour
    if price is None and acc.price_per_hour is not None:
        price = acc.price_per_hour.value
    idle = scn.idle_power_w
    if idle is None and acc.idle_power is not None:
        idle = acc.idle_power.value
    return price, (acc.tdp.value if acc.tdp is not None else None), idle


def simulate(prep: Prepared, *, seed: Optional[int] = None, progress: Optional[Callable[[float, int], None]] = None):
    """Run the simulation of a prepared scenario: (requests DataFrame, steps DataFrame, summary dict)."""
    from .metrics import requests_table, steps_table, summarize
    from .policies import make_batching, make_router
    from .sim import SimConfig, Simulation

    if prep.pools is not None:
        from .sim.disagg import simulate_disaggregated

        return simulate_disaggregated(prep, seed=seed, progress=progress)
    scn = prep.scenario
    dep = scn.deployment
    max_len = dep.max_model_len
    if max_len is None:
        max_len = getattr(prep.model, "max_position_embeddings", None)
    cfg = SimConfig(jump=scn.sim.jump, preemption=dep.kv.preemption, block_size=dep.kv.block_size,
                    watermark=dep.kv.watermark, max_model_len=max_len, swap_bandwidth=dep.kv.swap_bandwidth,
                    record_breakdown=scn.sim.record_breakdown, prefix_caching=dep.kv.prefix_caching)
    changes = None
    if dep.ep > 1 and prep.cost is not None and hasattr(prep.cost, "policy_spec"):
        from .cost.moe_ep import replacement_spec
        from .sim.replacement import PeriodicReplacement

        rs = _located(lambda: replacement_spec(dep.placement, dep.expert_loads), None, "deployment")
        if rs is not None:
            changes = PeriodicReplacement(prep.cost, policy=prep.cost.policy_spec, **rs)
    sim = Simulation(prep.workload, cost=prep.cost, num_blocks=prep.num_blocks,
                     batching=lambda: make_batching(dep.batching), router=make_router(dep.router),
                     replicas=dep.replicas, config=cfg, seed=scn.seed if seed is None else seed, changes=changes)
    res = sim.run(progress=progress)
    acc = prep.accelerator
    req = requests_table(res)
    price, tdp, idle = power_and_price(scn, acc)
    summary = summarize(res, devices_per_replica=dep.devices_per_replica, peak_flops=acc.peak(dep.act_dtype),
                        hbm_bandwidth=acc.hbm_bw, price_per_device_hour=price, tdp_w=tdp, idle_w=idle,
                        slo_ttft_s=scn.slo.ttft_s, slo_tpot_s=scn.slo.tpot_s, requests=req)
    summary = {"scenario": scn.name, "model": prep.model.name, "accelerator": acc.name, "tp": dep.tp, "pp": dep.pp,
               "seed": scn.seed if seed is None else seed, **summary}
    if changes is not None:
        summary["replacement"] = changes.summary()
    return req, steps_table(res), summary
