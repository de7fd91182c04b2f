"""Hardware descriptors: accelerators, links, nodes and clusters.

YAML files under ``hardware/`` are validated here into frozen objects; every number in
them is a ``{value, source}`` pair (see :func:`simllm.config.sourced`). Names resolve to
files (``h100-sxm`` -> ``hardware/accelerators/h100-sxm.yaml``); a path works too.

A :class:`Node` resolves its accelerator and links; a :class:`Cluster` is ``num_nodes``
nodes joined by a scale-out fabric. The topology graph built from them lives in
``simllm.topology`` (network issue); here are only the descriptors.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .config import Frozen, Sourced, list_names, load_yaml, resolve, sourced, validate
from .errors import InputError

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "int4")
DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5, "int4": 0.5}
# When a device lacks a native rate for a dtype, it computes in the next wider one.
_FALLBACK = {"fp4": "fp8", "int4": "int8", "fp8": "bf16", "int8": "bf16", "fp16": "bf16", "bf16": "fp16",
             "tf32": "fp32"}

ACCEL_DIR = "hardware/accelerators"
LINK_DIR = "hardware/links"
NODE_DIR = "hardware/nodes"
CLUSTER_DIR = "hardware/clusters"


class Accelerator(Frozen):
    #: the descriptor file it was read from (errors about its fields name it), set by load_accelerator
    _path: Optional[Path] = PrivateAttr(default=None)
    name: str
    vendor: str
    kind: Literal["gpu", "npu", "tpu"]
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    peak_flops: dict[str, sourced("flops")]
    memory_capacity: sourced("bytes")
    memory_bandwidth: sourced("bandwidth")
    sram: sourced("bytes")
    compute_units: sourced("count")
    tdp: Optional[sourced("power")] = None  # some vendors (Google TPU, Huawei Ascend) publish none
    idle_power: Optional[sourced("power")] = None
    price_per_hour: Optional[sourced("price_per_hour")] = None
    calibration: Optional[str] = None  # file under hardware/calibration/

    @field_validator("peak_flops")
    @classmethod
    def _dtypes(cls, v: dict) -> dict:
        bad = [k for k in v if k not in DTYPES]
        if bad:
            raise ValueError(f"unknown dtype {bad[0]!r}; expected one of {', '.join(DTYPES)}")
        if not any(k in v for k in ("bf16", "fp16")):
            raise ValueError("needs at least a bf16 or fp16 peak")
        return v

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``, falling back to a wider type the device has."""
        d = dtype
        seen = set()
        while d not in self.peak_flops:
            seen.add(d)
            d = _FALLBACK.get(d, "bf16")
            if d in seen:
                raise InputError(f"device {self.name} has no peak for {dtype}")
        return self.peak_flops[d].value

    @property
    def hbm_bytes(self) -> float:
        return self.memory_capacity.value

    @property
    def hbm_bw(self) -> float:
        return self.memory_bandwidth.value

    @property
    def tdp_watts(self) -> float:
        """Thermal design power; NaN when no source gives one (callers must handle it)."""
        return self.tdp.value if self.tdp else float("nan")

    @property
    def idle_watts(self) -> float:
        """Idle power; when no source gives it, 30% of TDP is *not* assumed: callers must handle None."""
        return self.idle_power.value if self.idle_power else float("nan")


class Link(Frozen):
    name: str
    kind: Literal["nvlink", "pcie", "hccs", "unified-bus", "infiniband", "roce", "ici", "infinity-fabric", "ethernet"]
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    bandwidth_per_direction: sourced("bandwidth")
    latency: sourced("time")
    efficiency: Optional[sourced("count")] = None  # measured achievable fraction of the peak, when known

    @property
    def bw(self) -> float:
        return self.bandwidth_per_direction.value

    @property
    def alpha(self) -> float:
        return self.latency.value


class ScaleUp(Frozen):
    link: str
    topology: Literal["switch", "full_mesh", "torus", "ring"]
    links_per_device: int = 1  # parallel links a device has into the scale-up domain (bandwidth multiplies)
    torus_dims: Optional[list[int]] = None
    source: str = ""


class ScaleOut(Frozen):
    link: str
    nics_per_device: float = 1.0
    source: str = ""


class HostSpec(Frozen):
    """The host side of a node: CPU memory, the device<->host link, local storage (KV-cache tiers)."""

    memory: sourced("bytes")  # the node's host DRAM, all sockets
    link: str  # each device's link to host memory (a links/ descriptor, e.g. pcie5)
    storage: Optional[sourced("bytes")] = None  # local NVMe capacity for data (not the OS drives)
    storage_bandwidth: Optional[sourced("bandwidth")] = None  # the node's aggregate local-storage read bandwidth


class NodeSpec(Frozen):
    name: str
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    accelerator: str
    devices: int = Field(gt=0)
    scale_up: ScaleUp
    scale_out: Optional[ScaleOut] = None
    host: Optional[HostSpec] = None  # host memory and storage (KV-cache tiers); None: not described
    source: str

    @model_validator(mode="after")
    def _torus(self):
        if self.scale_up.topology == "torus":
            dims = self.scale_up.torus_dims
            if not dims:
                raise ValueError("scale_up.torus_dims is required for a torus")
            n = 1
            for d in dims:
                n *= d
            if n != self.devices:
                raise ValueError(f"torus_dims {dims} give {n} devices, node has {self.devices}")
        return self


class Node:
    """A node with its accelerator and links resolved."""

    def __init__(self, spec: NodeSpec, accelerator: Accelerator, scale_up_link: Link, scale_out_link: Link | None,
                 path: Path | None = None):
        self.spec = spec
        self.name = spec.name
        self.accelerator = accelerator
        self.devices = spec.devices
        self.scale_up_link = scale_up_link
        self.scale_out_link = scale_out_link
        self.path = path

    @property
    def scale_up_bw(self) -> float:
        """Per-direction bandwidth one device has into its scale-up domain (B/s)."""
        return self.scale_up_link.bw * self.spec.scale_up.links_per_device

    @property
    def scale_out_bw(self) -> float:
        """Per-direction scale-out bandwidth per device (B/s); 0 when the node has none."""
        if self.scale_out_link is None or self.spec.scale_out is None:
            return 0.0
        return self.scale_out_link.bw * self.spec.scale_out.nics_per_device

    @property
    def host(self) -> Optional[HostSpec]:
        return self.spec.host

    @property
    def host_link(self) -> Optional[Link]:
        """Each device's link to host memory (None when the descriptor has no ``host``)."""
        return load_link(self.spec.host.link) if self.spec.host is not None else None

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.devices}x {self.accelerator.name})"


class Fabric(Frozen):
    topology: Literal["rail_optimized", "fat_tree", "none"] = "rail_optimized"
    oversubscription: float = Field(default=1.0, ge=1.0)
    source: str = ""


class ClusterSpec(Frozen):
    name: str
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    node: str
    num_nodes: int = Field(gt=0)
    fabric: Fabric = Fabric()
    source: str = ""


class Cluster:
    """``num_nodes`` identical nodes on a scale-out fabric."""

    def __init__(self, spec: ClusterSpec, node: Node):
        self.spec = spec
        self.name = spec.name
        self.node = node
        self.num_nodes = spec.num_nodes

    @property
    def num_devices(self) -> int:
        return self.node.devices * self.num_nodes

    @property
    def accelerator(self) -> Accelerator:
        return self.node.accelerator

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {self.num_nodes}x {self.node.name})"


def _load(model, kind_dir: str, name_or_path: str | Path, what: str):
    path = resolve(kind_dir, name_or_path, what=what)
    return validate(model, load_yaml(path), file=path), path


@lru_cache(maxsize=None)
def load_accelerator(name_or_path: str) -> Accelerator:
    acc, path = _load(Accelerator, ACCEL_DIR, name_or_path, "accelerator")
    acc._path = Path(path)
    return acc


@lru_cache(maxsize=None)
def load_link(name_or_path: str) -> Link:
    return _load(Link, LINK_DIR, name_or_path, "link")[0]


def _resolve_in(path: Path, field: str, fn, name: str):
    try:
        return fn(name)
    except InputError as e:
        raise InputError(e.message if e.file else str(e), file=path, field=field) from None


@lru_cache(maxsize=None)
def load_node(name_or_path: str) -> Node:
    spec, path = _load(NodeSpec, NODE_DIR, name_or_path, "node")
    acc = _resolve_in(path, "accelerator", load_accelerator, spec.accelerator)
    up = _resolve_in(path, "scale_up.link", load_link, spec.scale_up.link)
    out = _resolve_in(path, "scale_out.link", load_link, spec.scale_out.link) if spec.scale_out else None
    if spec.host is not None:
        _resolve_in(path, "host.link", load_link, spec.host.link)
    return Node(spec, acc, up, out, path)


@lru_cache(maxsize=None)
def load_cluster(name_or_path: str) -> Cluster:
    """A cluster descriptor, or a node name (a one-node cluster)."""
    try:
        spec, path = _load(ClusterSpec, CLUSTER_DIR, name_or_path, "cluster")
    except InputError as e:
        if "unknown cluster" not in e.message:
            raise
        node = load_node(name_or_path)
        return Cluster(ClusterSpec(name=node.name, node=node.name, num_nodes=1), node)
    node = _resolve_in(path, "node", load_node, spec.node)
    return Cluster(spec, node)


def list_hardware() -> dict[str, list[str]]:
    return {"accelerators": list_names(ACCEL_DIR), "links": list_names(LINK_DIR),
            "nodes": list_names(NODE_DIR), "clusters": list_names(CLUSTER_DIR)}
