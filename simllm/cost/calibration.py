"""Calibration: the few dimensionless efficiency parameters of the cost model.

A calibration file (``hardware/calibration/<device>.yaml``) holds numbers that are all
*relative* to the device's own datasheet figures, so that a file fitted on one device
transfers to another by principle:

``gemm``
    ``tiles``               output-tile shapes (rows x cols) the GEMM library chooses from
    ``tile_efficiency``     per tile shape, the fraction of one compute unit's peak a CU reaches
                            while it computes a tile of that shape (bigger tiles reuse more)
    ``tile_k_overhead``     fixed work of a tile (prologue/epilogue), in K-elements added to K
    ``partial_wave_cost``   a last, partly filled wave costs ``a + (1 - a) * fill`` of a full one
    ``tile_softmin_q``      sharpness of the soft minimum over tile shapes (large q: the best tile)
    ``overlap_exponent``    p of the soft roofline ``(t_c^p + t_m^p)^(1/p)`` (p -> inf: max)
    ``memory_efficiency``   fraction of HBM bandwidth a streaming GEMM reaches
    ``kernel_overhead_s``   fixed time per GEMM kernel (launch, ramp-up, tail), seconds
    ``floor_k0``/``floor_k`` the ramp-up part of that floor grows with K up to ``floor_k`` elements:
                            a GEMM with K -> 0 pays ``floor_k0`` of it (see kernels.gemm_floor)
``elementwise``  ``memory_efficiency``, ``kernel_overhead_s`` of norms, activations, adds
``attention``    ``compute_efficiency`` (fraction of peak FlashAttention reaches),
                 ``memory_efficiency`` (fraction of HBM bandwidth of decode attention),
                 ``kernel_overhead_s``
``comm``         ``scale_up_efficiency``/``scale_out_efficiency`` (point-to-point: fractions of a
                 link's nominal per-direction bandwidth), ``scale_out_node_efficiency`` (fraction of
                 the node's total NIC bandwidth its devices reach together), ``collective_efficiency``
                 (ring/tree collectives' bandwidth relative to point-to-point: reduction and protocol
                 cost), ``scale_up_alpha_scale``/``scale_out_alpha_scale`` (multipliers of the link
                 descriptors' latencies), ``launch_overhead_s``/``p2p_overhead_s`` (fixed seconds per
                 collective / per send-recv call)

Transfer rule. A device whose descriptor names no calibration file (or names one that does
not exist) uses the A100 file (:data:`REFERENCE`). Every parameter is applied to the target
device's own peak FLOP/s (for the dtype), HBM bandwidth, compute-unit count (for tile waves)
and link bandwidths/latencies, so e.g. H100 GEMMs are priced at the A100's *fraction* of
peak, with waves counted over H100's 132 SMs. A link descriptor that carries its own measured
``efficiency`` keeps it (a measurement of that link beats a transferred fraction); the
seconds-valued overheads transfer as they are (launch costs are similar across recent GPUs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import data_roots
from ..errors import InputError

CALIB_DIR = "hardware/calibration"
REFERENCE = "a100-sxm-80gb.yaml"


@dataclass(frozen=True)
class GemmParams:
    tiles: tuple = ((64, 64), (64, 128), (128, 64), (128, 128), (128, 256), (256, 128))
    tile_efficiency: tuple = (0.53, 0.61, 0.61, 0.72, 0.62, 0.22)
    tile_k_overhead: float = 75.0
    partial_wave_cost: float = 0.27
    tile_softmin_q: float = 9.9
    overlap_exponent: float = 2.8
    memory_efficiency: float = 0.83
    kernel_overhead_s: float = 3.8e-6
    # the floor's pipeline-fill part: a GEMM of K < floor_k pays floor_k0 + (1 - floor_k0) K / floor_k of
    # kernel_overhead_s (simllm.cost.kernels.gemm_floor); floor_k 0 = the whole floor at every K
    floor_k0: float = 1.0
    floor_k: float = 0.0
    # a library's tile choice by shape (simllm.cost.kernels.GEMM_DISPATCH) instead of the best of ``tiles``:
    # "" = the soft minimum over ``tiles``
    dispatch: str = ""

    def vector(self) -> list[float]:
        return [self.memory_efficiency, self.kernel_overhead_s * 1e6, self.tile_k_overhead / 100.0,
                self.overlap_exponent, self.partial_wave_cost, *self.tile_efficiency, self.tile_softmin_q]

    @classmethod
    def from_vector(cls, x, tiles=None) -> "GemmParams":
        tiles = tuple(tuple(t) for t in (tiles or cls.tiles))
        n = len(tiles)
        return cls(tiles=tiles, memory_efficiency=float(x[0]), kernel_overhead_s=float(x[1]) * 1e-6,
                   tile_k_overhead=float(x[2]) * 100.0, overlap_exponent=float(x[3]),
                   partial_wave_cost=float(x[4]), tile_efficiency=tuple(float(v) for v in x[5:5 + n]),
                   tile_softmin_q=float(x[5 + n]))


@dataclass(frozen=True)
class ElementwiseParams:
    memory_efficiency: float = 0.75
    kernel_overhead_s: float = 4.0e-6


@dataclass(frozen=True)
class AttentionParams:
    # FlashAttention-2 forward reaches 50-73% of A100 peak (Dao 2023, fig. 4); decode attention
    # streams the KV cache like a GEMV. Not fitted (no attention kernels in the measured tables).
    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    kernel_overhead_s: float = 5.0e-6
    q_block: int = 128  # FlashAttention query tile: K/V are re-read once per q block


@dataclass(frozen=True)
class CommParams:
    scale_up_efficiency: float = 0.8  # point-to-point, fraction of the scale-up link's bandwidth
    scale_out_efficiency: float = 0.31  # point-to-point, fraction of one device's NIC bandwidth
    scale_out_node_efficiency: float = 0.14  # all devices of a node at once: fraction of the node's NICs' total
    collective_efficiency: float = 0.72  # ring/tree collectives' bandwidth relative to point-to-point
    scale_up_alpha_scale: float = 0.5
    scale_out_alpha_scale: float = 2.7
    launch_overhead_s: float = 4.4e-5  # per collective call
    p2p_overhead_s: float = 1.2e-5  # per send/recv

    @property
    def nic_scaling_exponent(self) -> float:
        """Deprecated (an earlier draft's parameter): NIC aggregation is now linear up to the
        node cap ``scale_out_node_efficiency``; see ``simllm.cost.collectives.CommLinks``."""
        return 1.0


@dataclass(frozen=True)
class Calibration:
    device: str = "uncalibrated"
    source: str = "defaults in simllm/cost/calibration.py"
    gemm: GemmParams = field(default_factory=GemmParams)
    elementwise: ElementwiseParams = field(default_factory=ElementwiseParams)
    attention: AttentionParams = field(default_factory=AttentionParams)
    comm: CommParams = field(default_factory=CommParams)
    fit: dict = field(default_factory=dict)  # what it was fitted on and the errors reached
    # per-kernel-class parameter dicts of simllm.cost.pricing's registry (section name -> {param: value})
    kernels: dict = field(default_factory=dict)
    # per framework: {"vllm": {"kernels": {...}, "fit": {...}}}; overrides ``kernels`` (see for_framework)
    frameworks: dict = field(default_factory=dict)
    framework: str = ""  # the framework whose overrides are applied ("" = the file's defaults)
    # measured-table mode (simllm.cost.table_mode): {"mode": "table", "tables": absolute PATH, "file": where
    # it was given}; {} = analytic
    cost: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        g = asdict(self.gemm)
        g["tiles"] = [list(t) for t in self.gemm.tiles]
        g["tile_efficiency"] = [round(v, 5) for v in self.gemm.tile_efficiency]
        if not g.get("dispatch"):
            g.pop("dispatch", None)
        out = {"device": self.device, "source": self.source, "gemm": g,
               "elementwise": asdict(self.elementwise), "attention": asdict(self.attention),
               "comm": asdict(self.comm)}
        if self.fit:
            out["fit"] = self.fit
        if self.kernels:
            out["kernels"] = self.kernels
        if self.frameworks:
            out["frameworks"] = self.frameworks
        if self.cost:
            out["cost"] = {"mode": self.cost["mode"], "tables": self.cost["tables"]}
        return _round(out)

    def for_framework(self, framework: Optional[str]) -> "Calibration":
        """This calibration with ``frameworks[framework]``'s kernel sections laid over ``kernels``
        (a framework the file has no entry for keeps the defaults)."""
        if not framework:
            return self
        over = (self.frameworks or {}).get(framework) or {}
        k = {**self.kernels, **(over.get("kernels") or {})}
        return replace(self, kernels=k, framework=framework)

    def dump(self, path: str | Path) -> None:
        text = ("# simllm cost-model calibration: dimensionless efficiencies (fractions of the device's own\n"
                "# peak FLOP/s, HBM and link bandwidth) and per-kernel overheads in seconds.\n"
                "# See simllm/cost/calibration.py for the meaning of each field and the transfer rule.\n")
        text += yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        except OSError as e:
            raise InputError(f"cannot write calibration: {e.strerror}", file=path) from None


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def _section(cls, data: Any, path: Path, name: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of {', '.join(f.name for f in fields(cls))}", file=path, field=name)
    known = {f.name for f in fields(cls)}
    bad = sorted(set(data) - known)
    if bad:
        raise InputError(f"unknown field {bad[0]!r} (expected one of {', '.join(sorted(known))})",
                         file=path, field=f"{name}.{bad[0]}")
    kw = {}
    for k, v in data.items():
        if k == "tiles":
            try:
                kw[k] = tuple((int(a), int(b)) for a, b in v)
            except (TypeError, ValueError):
                raise InputError("expected a list of [rows, cols] pairs", file=path, field=f"{name}.tiles") from None
        elif k == "tile_efficiency":
            try:
                kw[k] = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise InputError("expected a list of numbers", file=path, field=f"{name}.{k}") from None
        else:
            try:
                kw[k] = type(getattr(cls(), k))(v)
            except (TypeError, ValueError):
                raise InputError(f"expected a number, got {v!r}", file=path, field=f"{name}.{k}") from None
    obj = cls(**kw)
    if cls is GemmParams and len(obj.tiles) != len(obj.tile_efficiency):
        raise InputError("tiles and tile_efficiency differ in length", file=path, field=f"{name}.tile_efficiency")
    return obj


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration YAML file (a path, or a name under ``hardware/calibration/``)."""
    p = Path(path)
    if not p.is_file():
        qs = [d / CALIB_DIR / (p.name if p.suffix else p.name + ".yaml") for d in data_roots()]
        q = next((q for q in qs if q.is_file()), None)
        if q is None:
            raise InputError("calibration file not found", file=path)
        p = q
    return _load_cached(str(p.resolve()))


@lru_cache(maxsize=None)
def _load_cached(path: str) -> Calibration:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {str(e).splitlines()[0]}", file=p) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping", file=p)
    bad = sorted(set(data) - {"device", "source", "gemm", "elementwise", "attention", "comm", "fit", "kernels",
                              "frameworks", "cost"})
    if bad:
        raise InputError(f"unknown field {bad[0]!r}", file=p, field=bad[0])
    return Calibration(device=str(data.get("device", p.stem)), source=str(data.get("source", "")),
                       gemm=_section(GemmParams, data.get("gemm"), p, "gemm"),
                       elementwise=_section(ElementwiseParams, data.get("elementwise"), p, "elementwise"),
                       attention=_section(AttentionParams, data.get("attention"), p, "attention"),
                       comm=_section(CommParams, data.get("comm"), p, "comm"), fit=dict(data.get("fit") or {}),
                       kernels=_mapping(data.get("kernels"), p, "kernels"),
                       frameworks=_mapping(data.get("frameworks"), p, "frameworks"),
                       cost=cost_spec(data.get("cost"), p.parent, file=p) or {})


class CostModeSpec(BaseModel):
    """``cost:`` of a scenario or a calibration file: ``mode: analytic`` (default) or ``mode: table``
    with ``tables: PATH`` (measured tables of the device, see :mod:`simllm.cost.table_mode`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["analytic", "table"] = "analytic"
    tables: Optional[str] = None


def cost_spec(spec, base_dir, *, file=None, field: str = "cost") -> Optional[dict]:
    """``{"mode": "table", "tables": absolute path, "file": file}`` of a table-mode ``spec`` (a
    :class:`CostModeSpec` or a mapping), None for the analytic mode. ``tables`` is relative to
    ``base_dir``; a PATH that does not exist is an InputError (``FILE: cost.tables: ...``)."""
    if spec is None:
        return None
    if not isinstance(spec, CostModeSpec):
        if not isinstance(spec, dict):
            raise InputError("expected a mapping with mode (analytic | table) and tables", file=file, field=field)
        try:
            spec = CostModeSpec(**spec)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ()))
            raise InputError(err.get("msg", "invalid"), file=file, field=f"{field}.{loc}" if loc else field) from None
    if spec.mode != "table":
        if spec.tables:
            raise InputError("tables is only read with mode: table", file=file, field=f"{field}.tables")
        return None
    if not spec.tables:
        raise InputError("mode: table needs tables: PATH (an AIConfigurator GPU folder or table of the device)",
                         file=file, field=f"{field}.tables")
    p = Path(spec.tables).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.exists():
        raise InputError(f"no such table file or folder: {spec.tables}", file=file, field=f"{field}.tables")
    return {"mode": "table", "tables": str(p.resolve()), "file": str(file) if file is not None else None}


def _mapping(v: Any, p: Path, name: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InputError("expected a mapping", file=p, field=name)
    return dict(v)


def calibration_for(accelerator, calibration: "Calibration | str | Path | None" = None) -> Calibration:
    """The calibration to use for ``accelerator``: the one given, else the device's own file,
    else the reference (A100) file transferred by principle, else the built-in defaults."""
    if isinstance(calibration, Calibration):
        return calibration
    if calibration is not None:
        return load_calibration(calibration)
    own: Optional[str] = getattr(accelerator, "calibration", None)
    for name in ([own] if own else []) + [REFERENCE]:
        for root in (d / CALIB_DIR for d in data_roots()):
            if (root / name).is_file():
                return load_calibration(root / name)
    return Calibration()


__all__ = ["CostModeSpec", "cost_spec", "Calibration", "GemmParams", "ElementwiseParams", "AttentionParams", "CommParams",
           "load_calibration", "calibration_for", "replace"]
